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
import { createMessageConnection, MessageConnection, StreamMessageReader, StreamMessageWriter } from "vscode-jsonrpc/node";
// smol-toml ships CommonJS (its "require" export), but its type declarations are ESM-only, which
// TypeScript refuses to import from a CommonJS module: load it with a typed require instead.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { parse: parseToml } = require("smol-toml") as { parse(text: string): unknown };
import { BaseRuntimeClient } from "./core";

export * from "./generated/protocol";
export { BaseRuntimeClient, RuntimeError, toRuntimeError } from "./core";
export type { ExternalHandler, SubscribeOptions } from "./core";

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

export class RuntimeClient extends BaseRuntimeClient {
  private proc?: ChildProcess;
  private socket?: net.Socket;

  private constructor(readonly target: Target) {
    super();
  }

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

  protected async open(): Promise<MessageConnection> {
    if (this.target.kind === "spawn") {
      const proc = spawnProcess(this.target.command, this.target.args, {
        cwd: this.target.cwd,
        env: this.target.env ?? process.env,
        stdio: ["pipe", "pipe", "inherit"],
      });
      this.proc = proc;
      return createMessageConnection(new StreamMessageReader(proc.stdout!), new StreamMessageWriter(proc.stdin!));
    }
    const { path, project } = this.target;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(path);
      s.once("connect", () => resolve(s));
      s.once("error", (e: NodeJS.ErrnoException) =>
        reject(e.code === "ENOENT" || e.code === "ECONNREFUSED" ? notRunning(path, project, e) : e),
      );
    });
    this.socket = socket;
    return createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
  }

  protected initializeParams(): Record<string, unknown> {
    return { processId: process.pid, rootUri: null, capabilities: {}, clientInfo: { name: "abstractruntime-typescript" } };
  }

  protected closeTransport(): void {
    this.socket?.destroy();
    if (this.proc && this.proc.exitCode === null) this.proc.stdin?.end();
  }

  /** Say goodbye (`shutdown`, `exit`) and close; a spawned `abstractruntime lsp` is waited for. */
  async close(): Promise<void> {
    await super.close();
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
}
