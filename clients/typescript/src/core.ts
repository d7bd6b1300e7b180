/**
 * The transport-free part of the TypeScript client: every call of the protocol, subscriptions
 * that reconnect and resume from their cursor, and hosts for external effects. It runs in Node
 * and in a browser; a subclass says how to open a connection (`index.ts`: a unix socket or a
 * spawned `abstractruntime lsp`; the daemon's web page: a WebSocket).
 */
import type { MessageConnection } from "vscode-jsonrpc";
import { ERRORS, ErrorName, Methods, PROTOCOL_VERSION } from "./generated/protocol";
import type * as P from "./generated/protocol";

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

type Listener = (event: P.EventNotification) => void;

export abstract class BaseRuntimeClient {
  protected conn!: MessageConnection;
  protected closedByUs = false;
  private closedWaiters: Array<() => void> = [];
  protected closed = true;
  /** Events by subscription id; events that arrive before their subscribe answer wait here. */
  private listeners = new Map<string, Listener>();
  private early = new Map<string, P.EventNotification[]>();
  private changeListeners: Array<(change: P.WorkflowsChanged) => void> = [];
  serverInfo: unknown;

  /** A new connection to the daemon, not yet listening. */
  protected abstract open(): Promise<MessageConnection>;

  /** What `initialize` tells the daemon about this client. */
  protected abstract initializeParams(): Record<string, unknown>;

  /** Let go of the transport (a socket, a child's stdin, a WebSocket). */
  protected abstract closeTransport(): void;

  protected async connect(): Promise<this> {
    const conn = await this.open();
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
      const init = await conn.sendRequest("initialize", this.initializeParams());
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

  /** Whether the connection is down (a subscription is reconnecting, or `close` was called). */
  get isClosed(): boolean {
    return this.closed;
  }

  protected dispose(): void {
    this.conn?.dispose();
    this.closeTransport();
    this.onClosed();
  }

  /** Drop the connection (as a network failure would); subscriptions reconnect. For tests. */
  dropConnection(): void {
    this.dispose();
  }

  protected async reconnect(timeoutMs: number): Promise<void> {
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

  /** Check the run's whole ledger against its hash chain (in the daemon). */
  verify(runId: string) {
    return this.call("runtime/verify", { run_id: runId });
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

  /** A one-time URL that signs a browser in to the daemon's web page (`serve --http`). */
  webLink() {
    return this.call("daemon/webLink", {});
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

export function toRuntimeError(e: unknown): Error {
  if (e instanceof RuntimeError) return e;
  // vscode-jsonrpc's ResponseError (matched by shape: the Node and browser builds each have one)
  const r = e as { code?: unknown; message?: unknown; data?: unknown };
  if (e instanceof Error && typeof r.code === "number") return new RuntimeError(r.code, e.message, r.data);
  if (e instanceof Error) return new RuntimeError(1100, `connection to the daemon failed: ${e.message}`);
  return new RuntimeError(1100, String(e));
}
