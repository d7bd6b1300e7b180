/**
 * The page's connection to the daemon: the TypeScript client's calls and subscriptions
 * (`../src/core.ts`) over a WebSocket to `/rpc` on the page's own origin, one JSON-RPC message
 * per frame. The browser sends the login cookie and its Origin with the handshake; the daemon
 * refuses the handshake without them, so the page never sees a token.
 */
import {
  AbstractMessageReader,
  AbstractMessageWriter,
  createMessageConnection,
  DataCallback,
  Disposable,
  Message,
  MessageConnection,
} from "vscode-jsonrpc/browser";
import RAL from "vscode-jsonrpc/lib/common/ral";
import { BaseRuntimeClient, RuntimeError } from "../src/core";

// vscode-jsonrpc handles one incoming message per `setImmediate`, which its browser build makes
// a `setTimeout(0)`. Browsers clamp nested zero timeouts to 4 ms, so the page took at most 250
// messages a second and fell seconds behind a busy daemon (measured: p50 0.9 s from commit to
// DOM with 400 events a second). A MessageChannel task is not clamped.
const channel = new MessageChannel();
const immediate: Array<() => void> = [];
channel.port1.onmessage = () => immediate.shift()?.();
const installed = RAL();
// The runtime layer is frozen; `install` is how a platform provides its own.
RAL.install({
  ...installed,
  timer: {
    ...installed.timer,
    setImmediate(callback: (...args: any[]) => void, ...args: any[]) {
      let cancelled = false;
      immediate.push(() => cancelled || callback(...args));
      channel.port2.postMessage(null);
      return { dispose: () => (cancelled = true) };
    },
  },
});

class SocketReader extends AbstractMessageReader {
  private callback?: DataCallback;
  private held: Message[] = [];

  constructor(ws: WebSocket) {
    super();
    ws.addEventListener("message", (e) => {
      let msg: Message;
      try {
        msg = JSON.parse(String(e.data));
      } catch (err) {
        this.fireError(err);
        return;
      }
      if (this.callback) this.callback(msg);
      else this.held.push(msg);
    });
    ws.addEventListener("close", () => this.fireClose());
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    for (const m of this.held.splice(0)) callback(m);
    return { dispose: () => (this.callback = undefined) };
  }
}

class SocketWriter extends AbstractMessageWriter {
  constructor(private readonly ws: WebSocket) {
    super();
    ws.addEventListener("close", () => this.fireClose());
  }

  async write(msg: Message): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN) throw new Error("the connection to the daemon is closed");
    this.ws.send(JSON.stringify(msg));
  }

  end(): void {}
}

/** Not signed in, or this page is not the daemon's own (the handshake was refused). */
export class NotConnected extends RuntimeError {
  constructor(message: string) {
    super(1101, message);
  }
}

export class WebRuntimeClient extends BaseRuntimeClient {
  private ws?: WebSocket;

  private constructor(readonly url: string) {
    super();
  }

  /** Connect to the daemon that served this page (`ws://<this origin>/rpc`). */
  static async connectTo(url: string = defaultUrl()): Promise<WebRuntimeClient> {
    return new WebRuntimeClient(url).connect();
  }

  protected async open(): Promise<MessageConnection> {
    const ws = new WebSocket(this.url);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      // A refused handshake (no login cookie, another origin) reaches a page as a bare error.
      ws.onerror = () =>
        reject(
          new NotConnected("The daemon refused this browser's connection: it has no valid login (or the daemon is not running)."),
        );
    });
    ws.onerror = null;
    this.ws = ws;
    return createMessageConnection(new SocketReader(ws), new SocketWriter(ws));
  }

  protected initializeParams(): Record<string, unknown> {
    return { processId: null, rootUri: null, capabilities: {}, clientInfo: { name: "abstractruntime-web" } };
  }

  protected closeTransport(): void {
    this.ws?.close();
  }
}

function defaultUrl(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/rpc`;
}
