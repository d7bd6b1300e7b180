/**
 * A TypeScript client for the AbstractRuntime daemon.
 *
 * It speaks the daemon's JSON-RPC protocol (LSP framing) through vscode-jsonrpc, either by
 * spawning `abstractruntime lsp` (which joins the project's daemon, starting it if needed) or
 * over the daemon's unix socket. Every params and result type comes from the generated
 * `./generated/protocol` (from protocol/openrpc.json).
 *
 *     const rt = await RuntimeClient.spawn();
 *     const { run_id, state } = await rt.start("approval", { amount: 120 });
 *     await rt.resume(run_id, { text: "approve" });
 */
import { ChildProcess, spawn as spawnProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import {
  createMessageConnection,
  MessageConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-jsonrpc/node";
// smol-toml ships CommonJS (its "require" export), but its type declarations are ESM-only, which
// TypeScript refuses to import from a CommonJS module: load it with a typed require instead.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { parse: parseToml } = require("smol-toml") as { parse(text: string): unknown };
import { ERRORS, ErrorName, Methods, PROTOCOL_VERSION } from "./generated/protocol";
import type * as P from "./generated/protocol";

export * from "./generated/protocol";

const CODE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(ERRORS).map(([n, c]) => [c, n]));

/** An error answer from the daemon: `code` is stable, `name` is its error name (see ERRORS). */
export class RuntimeError extends Error {
  readonly code: number;
  readonly errorName: ErrorName | string;
  readonly data: unknown;

  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.code = code;
    const named = (data as { name?: string } | undefined)?.name;
    this.errorName = named ?? CODE_NAMES[code] ?? "unknown_error";
    this.data = data;
    this.name = "RuntimeError";
  }
}

/** How to reach the daemon; a client reconnects the same way. */
export type Target =
  | { kind: "spawn"; command: string; args: string[]; cwd?: string; env?: NodeJS.ProcessEnv }
  | { kind: "socket"; path: string; project?: Project };

export interface SpawnOptions {
  /** The command (default `abstractruntime`) and its arguments (default `["lsp"]`). */
  command?: string;
  args?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

/** A handler for an effect executed outside the daemon: return what the run resumes with. */
export type ExternalHandler = (
  effect: { type: string; payload: Record<string, unknown>; result_key?: string | null },
  context: { run_id: string; node_id: string | null; state: P.RunStateModel },
) => Promise<Record<string, unknown>> | Record<string, unknown>;

export interface SubscribeOptions {
  /** Only this run's events (default: every run). */
  runId?: string;
  /** Replay every event after this cursor first. */
  after?: number;
  /** Reconnect and resume from the last cursor when the connection drops (default true). */
  reconnect?: boolean;
  /** How long to keep trying to reconnect, in ms (default 30 s). */
  reconnectTimeoutMs?: number;
  /** Ends the iteration, even while it waits for the next event. */
  signal?: AbortSignal;
  /** Called each time the daemon has answered `runtime/subscribe` (also after a reconnect). */
  onSubscribed?: (cursor: number) => void | Promise<void>;
}

/** The project a working folder belongs to, found as the Python client and CLI find it. */
export interface Project {
  /** The project root: the nearest folder (walking up) with `abstractruntime.toml`, a
   * `pyproject.toml` with `[tool.abstractruntime]`, or a `.abstractruntime/` data folder. */
  root: string;
  /** The config file in effect, if any. */
  configFile?: string;
  /** The data folder (config `data`, or `$ABSTRACTRUNTIME_DATA`, else `<root>/.abstractruntime`). */
  dataDir: string;
  /** False when no folder up to `/` is a project (the root is then the start folder). */
  found: boolean;
}

function readTable(file: string): Record<string, unknown> | undefined {
  const doc = parseToml(readFileSync(file, "utf8")) as Record<string, unknown>;
  if (path.basename(file) !== "pyproject.toml") return doc;
  const tool = doc.tool as Record<string, unknown> | undefined;
  return tool?.abstractruntime as Record<string, unknown> | undefined;
}

/** Find the project around `start` (default: the working folder). */
export function discoverProject(start: string = process.cwd()): Project {
  const here = path.resolve(start);
  let root = here;
  let configFile: string | undefined = process.env.ABSTRACTRUNTIME_CONFIG
    ? path.resolve(here, process.env.ABSTRACTRUNTIME_CONFIG)
    : undefined;
  let found = configFile !== undefined;
  if (configFile) root = path.dirname(configFile);
  for (let d = here; !found; ) {
    const cfg = path.join(d, "abstractruntime.toml");
    const py = path.join(d, "pyproject.toml");
    if (existsSync(cfg)) [root, configFile, found] = [d, cfg, true];
    else if (existsSync(py) && readTable(py) !== undefined) [root, configFile, found] = [d, py, true];
    else if (existsSync(path.join(d, ".abstractruntime"))) [root, found] = [d, true];
    const parent = path.dirname(d);
    if (found || parent === d) break;
    d = parent;
  }
  let dataDir = path.join(root, ".abstractruntime");
  const table = configFile ? readTable(configFile) : undefined;
  if (typeof table?.data === "string") dataDir = path.resolve(root, table.data);
  if (process.env.ABSTRACTRUNTIME_DATA) dataDir = path.resolve(process.env.ABSTRACTRUNTIME_DATA);
  return { root, configFile, dataDir, found };
}

/** The data folder's daemon socket: its discovery file, else the default per-project path. */
export function discoverSocket(dataDir: string = discoverProject().dataDir): string {
  const data = path.resolve(dataDir);
  try {
    const info = JSON.parse(readFileSync(path.join(data, "daemon.json"), "utf8"));
    if (info.socket) return info.socket;
  } catch {
    // no discovery file: the default path
  }
  const runtimeDir = process.env.XDG_RUNTIME_DIR;
  const base = runtimeDir ? path.join(runtimeDir, "abstractruntime") : path.join("/tmp", `abstractruntime-${os.userInfo().uid}`);
  const digest = createHash("sha256").update(data).digest("hex").slice(0, 16);
  return path.join(base, `${digest}.sock`);
}

/** Nothing answers where the project's daemon should listen (`code` is ENOENT or ECONNREFUSED). */
export class DaemonNotRunning extends Error {
  constructor(
    message: string,
    readonly socketPath: string,
    readonly project?: Project,
  ) {
    super(message);
    this.name = "DaemonNotRunning";
  }
}

function notRunning(socketPath: string, project: Project | undefined, cause: NodeJS.ErrnoException): DaemonNotRunning {
  const where = `unix socket ${socketPath} (${cause.code ?? cause.message})`;
  let msg: string;
  if (!project) msg = `no daemon answers at ${where}`;
  else if (!project.found)
    msg =
      `no abstractruntime project in ${project.root} or any folder above it (no abstractruntime.toml, ` +
      `[tool.abstractruntime] in pyproject.toml, or .abstractruntime/ folder), and no daemon answers at ${where}; ` +
      "create one with `abstractruntime init`, or serve this folder with `abstractruntime serve`";
  else
    msg =
      `no daemon is running for the project at ${project.root}: nothing answers at ${where}; ` +
      `start it with \`abstractruntime serve\` in ${project.root}`;
  return new DaemonNotRunning(msg, socketPath, project);
}

type Listener = (event: P.EventNotification) => void;

export class RuntimeClient {
  private conn!: MessageConnection;
  private proc?: ChildProcess;
  private socket?: net.Socket;
  private closedByUs = false;
  private closedWaiters: Array<() => void> = [];
  private closed = true;
  /** Events by subscription id; events that arrive before their subscribe answer wait here. */
  private listeners = new Map<string, Listener>();
  private early = new Map<string, P.EventNotification[]>();
  private changeListeners: Array<(change: P.WorkflowsChanged) => void> = [];
  serverInfo: unknown;

  private constructor(readonly target: Target) {}

  /** Spawn `abstractruntime lsp` (it starts the project's daemon if none runs) and connect. */
  static async spawn(options: SpawnOptions = {}): Promise<RuntimeClient> {
    const target: Target = {
      kind: "spawn",
      command: options.command ?? "abstractruntime",
      args: options.args ?? ["lsp"],
      cwd: options.cwd,
      env: options.env,
    };
    return new RuntimeClient(target).connect();
  }

  /**
   * Connect to a daemon's unix socket. Without a path, to the daemon of the project around the
   * working folder (`discoverProject`, like git finds a repository); if nothing answers there,
   * a `DaemonNotRunning` names the project root, the socket and the command that starts it.
   */
  static async connect(socketPath?: string): Promise<RuntimeClient> {
    if (socketPath !== undefined) return new RuntimeClient({ kind: "socket", path: socketPath }).connect();
    const project = discoverProject();
    return new RuntimeClient({ kind: "socket", path: discoverSocket(project.dataDir), project }).connect();
  }

  private async connect(): Promise<RuntimeClient> {
    let reader: StreamMessageReader;
    let writer: StreamMessageWriter;
    if (this.target.kind === "spawn") {
      const proc = spawnProcess(this.target.command, this.target.args, {
        cwd: this.target.cwd,
        env: this.target.env ?? process.env,
        stdio: ["pipe", "pipe", "inherit"],
      });
      this.proc = proc;
      reader = new StreamMessageReader(proc.stdout!);
      writer = new StreamMessageWriter(proc.stdin!);
    } else {
      const { path, project } = this.target;
      const socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.createConnection(path);
        s.once("connect", () => resolve(s));
        s.once("error", (e: NodeJS.ErrnoException) =>
          reject(e.code === "ENOENT" || e.code === "ECONNREFUSED" ? notRunning(path, project, e) : e),
        );
      });
      this.socket = socket;
      reader = new StreamMessageReader(socket);
      writer = new StreamMessageWriter(socket);
    }
    const conn = createMessageConnection(reader, writer);
    this.conn = conn;
    this.closed = false;
    conn.onNotification("runtime/event", (params: P.EventNotification) => this.dispatch(params));
    conn.onNotification("workflows/changed", (params: P.WorkflowsChanged) => {
      for (const fn of this.changeListeners) fn(params);
    });
    conn.onClose(() => this.onClosed());
    conn.onError(() => undefined); // a broken stream also closes: handled there
    conn.listen();
    try {
      const init = await conn.sendRequest("initialize", {
        processId: process.pid,
        rootUri: null,
        capabilities: {},
        clientInfo: { name: "abstractruntime-typescript" },
      });
      this.serverInfo = init;
      const version = (init as any)?.capabilities?.experimental?.abstractruntime?.protocolVersion;
      if (version !== PROTOCOL_VERSION) {
        throw new RuntimeError(1100, `the daemon speaks protocol ${version}, this client ${PROTOCOL_VERSION}`);
      }
    } catch (e) {
      this.dispose();
      throw toRuntimeError(e);
    }
    await conn.sendNotification("initialized", {});
    return this;
  }

  private onClosed(): void {
    this.closed = true;
    for (const w of this.closedWaiters.splice(0)) w();
  }

  private dispose(): void {
    this.conn?.dispose();
    this.socket?.destroy();
    if (this.proc && this.proc.exitCode === null) this.proc.stdin?.end();
    this.onClosed();
  }

  /** Drop the connection (as a network failure would); subscriptions reconnect. For tests. */
  dropConnection(): void {
    this.dispose();
  }

  private async reconnect(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 50;
    for (;;) {
      try {
        await this.connect();
        return;
      } catch (e) {
        if (Date.now() > deadline) throw toRuntimeError(e);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /** Say goodbye (`shutdown`, `exit`) and close. */
  async close(): Promise<void> {
    this.closedByUs = true;
    if (!this.closed) {
      try {
        await this.conn.sendRequest("shutdown", null);
        await this.conn.sendNotification("exit", null);
      } catch {
        // already gone
      }
    }
    this.dispose();
    if (this.proc && this.proc.exitCode === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.proc?.kill();
          resolve();
        }, 5000);
        this.proc!.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  // -- calls ------------------------------------------------------------------------------------

  /** Any request of the protocol, typed by the generated method table. */
  async call<M extends keyof Methods>(method: M, params: Methods[M]["params"]): Promise<Methods[M]["result"]> {
    if (this.closed) throw new RuntimeError(1100, "the connection to the daemon is closed");
    try {
      return (await this.conn.sendRequest(method, params)) as Methods[M]["result"];
    } catch (e) {
      throw toRuntimeError(e);
    }
  }

  /** Start a run; `{ wait: false }` answers as soon as it is stored (status running). */
  start(
    workflowId: string,
    vars: Record<string, unknown> = {},
    options: { session_id?: string; actor_id?: string; wait?: boolean } = {},
  ) {
    return this.call("runtime/start", { workflow_id: workflowId, vars, ...options });
  }

  /** Run a failed run again from the node that failed, under the code loaded now. */
  async retry(runId: string, options: { wait?: boolean } = {}): Promise<P.RunStateModel> {
    return (await this.call("runtime/retry", { run_id: runId, ...options })).state;
  }

  /** A new run from a run's state after ledger record `seq` (default: its last), `vars` merged in. */
  fork(runId: string, options: { seq?: number; vars?: Record<string, unknown>; wait?: boolean } = {}) {
    return this.call("runtime/fork", { run_id: runId, ...options });
  }

  async resume(runId: string, payload: Record<string, unknown>, waitKey?: string): Promise<P.RunStateModel> {
    const params: P.ResumeParams = { run_id: runId, payload };
    if (waitKey !== undefined) params.wait_key = waitKey;
    return (await this.call("runtime/resume", params)).state;
  }

  async state(runId: string): Promise<P.RunStateModel> {
    return (await this.call("runtime/state", { run_id: runId })).state;
  }

  ledger(runId: string, options: { after?: number; limit?: number } = {}) {
    return this.call("runtime/ledger", { run_id: runId, ...options });
  }

  runs(options: Partial<P.RunsParams> = {}) {
    return this.call("runtime/runs", options);
  }

  async cancel(runId: string, reason?: string): Promise<P.RunStateModel> {
    return (await this.call("runtime/cancel", reason === undefined ? { run_id: runId } : { run_id: runId, reason })).state;
  }

  /** Resume the runs waiting on event `name`; `{ run_id }` for a run-scoped event. */
  async emitEvent(
    name: string,
    payload?: unknown,
    options: { scope?: "global" | "session" | "run"; session_id?: string; run_id?: string } = {},
  ) {
    // Any JSON value; the schema of an untyped field reads as an object to the generator.
    const params = { name, payload, ...options } as P.EmitEventParams;
    return (await this.call("runtime/emitEvent", params)).resumed;
  }

  async migrate(runId: string, toNode?: string): Promise<P.RunStateModel> {
    return (await this.call("runtime/migrate", toNode === undefined ? { run_id: runId } : { run_id: runId, to_node: toNode })).state;
  }

  async workflows(): Promise<P.WorkflowInfo[]> {
    return (await this.call("workflows/list", {})).workflows;
  }

  status() {
    return this.call("daemon/status", {});
  }

  /** Called with every `workflows/changed` (a hot reload). */
  onWorkflowsChanged(fn: (change: P.WorkflowsChanged) => void): void {
    this.changeListeners.push(fn);
  }

  // -- subscriptions -----------------------------------------------------------------------------

  private dispatch(ev: P.EventNotification): void {
    const fn = this.listeners.get(ev.subscription_id);
    if (fn) fn(ev);
    else {
      const q = this.early.get(ev.subscription_id) ?? [];
      q.push(ev);
      this.early.set(ev.subscription_id, q);
    }
  }

  /**
   * Every ledger append and status change, as an async iterator. If the connection drops it
   * reconnects and subscribes again from the last cursor it delivered: nothing is missed and
   * nothing comes twice. Stop with `break` (or `return()` on the iterator).
   */
  async *subscribe(options: SubscribeOptions = {}): AsyncGenerator<P.EventNotification, void, undefined> {
    const reconnect = options.reconnect ?? true;
    let cursor = options.after;
    const pending: P.EventNotification[] = [];
    let wake: (() => void) | null = null;
    const ping = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    let subId: string | null = null;
    const signal = options.signal;
    signal?.addEventListener("abort", ping);
    try {
      while (!signal?.aborted) {
        const params: P.SubscribeParams = {};
        if (options.runId !== undefined) params.run_id = options.runId;
        if (cursor !== undefined) params.after = cursor;
        let res: P.SubscribeResult;
        try {
          res = await this.call("runtime/subscribe", params);
        } catch (e) {
          // The connection dropped before the daemon answered: reconnect and ask again.
          if (!reconnect || this.closedByUs || !this.closed) throw e;
          await this.reconnect(options.reconnectTimeoutMs ?? 30_000);
          continue;
        }
        subId = res.subscription_id;
        if (cursor === undefined) cursor = res.cursor;
        await options.onSubscribed?.(res.cursor);
        const listener: Listener = (ev) => {
          pending.push(ev);
          ping();
        };
        this.listeners.set(subId, listener);
        for (const ev of this.early.get(subId) ?? []) listener(ev);
        this.early.delete(subId);
        this.closedWaiters.push(ping);
        while ((!this.closed || pending.length > 0) && !signal?.aborted) {
          const ev = pending.shift();
          if (ev === undefined) {
            await new Promise<void>((r) => (wake = r));
            continue;
          }
          if (ev.cursor <= (cursor ?? -1)) continue; // already delivered before a reconnect
          cursor = ev.cursor;
          yield ev;
        }
        if (signal?.aborted) return;
        this.listeners.delete(subId);
        subId = null;
        if (!reconnect || this.closedByUs) return;
        await this.reconnect(options.reconnectTimeoutMs ?? 30_000);
      }
    } finally {
      signal?.removeEventListener("abort", ping);
      if (subId !== null) {
        this.listeners.delete(subId);
        this.early.delete(subId);
        if (!this.closed) {
          await this.call("runtime/unsubscribe", { subscription_id: subId }).catch(() => undefined);
        }
      }
    }
  }

  // -- external effects ------------------------------------------------------------------------------

  /**
   * Execute effects the daemon hands to hosts (effect types it serves with `--external`): for
   * each run waiting on such an effect (wait reason `job`), call the handler for its effect
   * type and resume the run with what it returns. Runs already waiting are taken first. Stops
   * when `stop()` is called on the returned handle.
   */
  serveExternal(handlers: Record<string, ExternalHandler>): { stop(): Promise<void>; done: Promise<void> } {
    const inFlight = new Set<string>();
    const jobs: Promise<void>[] = [];
    const stopper = new AbortController();
    // Runs already waiting are listed once the subscription is in place: no wait falls between.
    const events = this.subscribe({
      signal: stopper.signal,
      onSubscribed: async () => {
        const waiting = await this.runs({ status: "waiting", limit: 1000 });
        for (const r of waiting.runs) if (r.wait_reason === "job") jobs.push(take(r.run_id));
      },
    });
    const take = async (runId: string): Promise<void> => {
      if (inFlight.has(runId)) return;
      inFlight.add(runId);
      try {
        const state = await this.state(runId);
        const w = state.waiting;
        const details = (w?.details ?? {}) as { effect?: any; node_id?: string | null };
        if (state.status !== "waiting" || w?.reason !== "job" || !details.effect) return;
        const handler = handlers[details.effect.type];
        if (!handler) return; // another host's effect type
        const result = await handler(details.effect, { run_id: runId, node_id: details.node_id ?? null, state });
        await this.resume(runId, result, w.wait_key ?? undefined).catch((e) => {
          // Another host answered first: the run moved on, nothing to do.
          if (!(e instanceof RuntimeError) || !["run_not_waiting", "wait_key_mismatch", "run_already_finished"].includes(String(e.errorName))) throw e;
        });
      } finally {
        inFlight.delete(runId);
      }
    };
    const done = (async () => {
      let next = await events.next();
      while (!next.done) {
        const ev = next.value;
        if (ev.kind === "state" && ev.state?.status === "waiting" && ev.state.wait_reason === "job") {
          jobs.push(take(ev.run_id));
        }
        next = await events.next();
      }
      await Promise.all(jobs);
    })();
    return {
      done,
      stop: async () => {
        stopper.abort();
        await done.catch(() => undefined);
      },
    };
  }
}

function toRuntimeError(e: unknown): Error {
  if (e instanceof RuntimeError) return e;
  if (e instanceof ResponseError) return new RuntimeError(e.code, e.message, e.data);
  if (e instanceof Error) return new RuntimeError(1100, `connection to the daemon failed: ${e.message}`);
  return new RuntimeError(1100, String(e));
}
