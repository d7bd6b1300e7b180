// Node's test runner drives the TypeScript client against a real daemon (a Python subprocess
// on a unix socket, the workflows of tests/e2e/workflows and examples/workflows). Run by `make test` through
// tests/e2e/test_typescript.py, which sets AR_PYTHON; `npm test` alone uses python3.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import {
  DaemonNotRunning,
  discoverProject,
  discoverSocket,
  RuntimeClient,
  RuntimeError,
  ERRORS,
  EventNotification,
  Methods,
  WebLinkResult,
} from "../src/index";

const ROOT = path.resolve(__dirname, "..", "..", "..", "..");
const PYTHON = process.env.AR_PYTHON ?? "python3";
const ENV = { ...process.env, PYTHONPATH: path.join(ROOT, "src") };
let tmp: string;
let socketPath: string;
let daemon: ChildProcess;

async function waitForSocket(p: string, ms = 20000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createConnection(p);
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no daemon at ${p}`);
}

before(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), "ar-ts-"));
  socketPath = path.join(tmp, "d.sock");
  daemon = spawn(
    PYTHON,
    ["-m", "abstractruntime", "serve", "--data", path.join(tmp, "data"), "--socket", socketPath,
     "--workflows", path.join(ROOT, "tests", "e2e", "workflows"), "--workflows", path.join(ROOT, "examples", "workflows"),
     "--external", "tool_calls", "--http", "127.0.0.1:0"],
    { env: ENV, stdio: ["ignore", "ignore", "inherit"] },
  );
  await waitForSocket(socketPath);
});

after(async () => {
  daemon.kill("SIGTERM");
  await new Promise((r) => daemon.once("exit", r));
  rmSync(tmp, { recursive: true, force: true });
});

test("start -> wait -> resume, and the ledger", async () => {
  const rt = await RuntimeClient.connect(socketPath);
  try {
    const { run_id, state } = await rt.start("ask", { x: 7 });
    assert.equal(state.status, "waiting");
    assert.equal(state.waiting?.prompt, "Continue?");
    assert.deepEqual(state.waiting?.choices, ["yes", "no"]);
    const waiting = await rt.runs({ status: "waiting" });
    assert.ok(waiting.runs.some((r) => r.run_id === run_id && r.prompt === "Continue?"));
    const done = await rt.resume(run_id, { text: "yes" });
    assert.equal(done.status, "completed");
    assert.deepEqual(done.output, { answer: { text: "yes" }, x: 7 });
    const ledger = await rt.ledger(run_id);
    // The run's origin (its initial state), the prompt, the answer, the end.
    assert.deepEqual(ledger.records.map((r) => r.seq), [1, 2, 3, 4]);
    assert.equal(ledger.next, null);
    assert.ok((await rt.workflows()).some((w) => w.workflow_id === "tool"));
  } finally {
    await rt.close();
  }
});

test("connects by spawning `abstractruntime lsp`", async () => {
  const rt = await RuntimeClient.spawn({
    command: PYTHON,
    args: ["-m", "abstractruntime", "lsp", "--socket", socketPath, "--data", path.join(tmp, "data")],
    env: ENV,
  });
  try {
    const status = await rt.status();
    assert.equal(status.store, "files");
    assert.ok(status.clients >= 1);
  } finally {
    await rt.close();
  }
});

test("a subscription reconnects with its cursor and misses nothing", async () => {
  const rt = await RuntimeClient.connect(socketPath);
  const driver = await RuntimeClient.connect(socketPath);
  try {
    const seen: EventNotification[] = [];
    let subscribed!: () => void;
    const ready = new Promise<void>((r) => (subscribed = r));
    const it = rt.subscribe({ onSubscribed: () => subscribed() });
    let next = it.next(); // starts the subscription
    await ready;
    const runs = new Set<string>([(await driver.start("events")).run_id]); // waits for the event "go"
    let dropped = false;
    for (;;) {
      const r = await next;
      assert.ok(!r.done);
      seen.push(r.value);
      if (!dropped && seen.length === 2) {
        dropped = true;
        rt.dropConnection(); // the network fails mid-stream...
        // ...and runs move on while the client is away.
        runs.add((await driver.start("events")).run_id);
        await driver.emitEvent("go", { n: 1 });
      }
      const completed = seen.filter((e) => e.kind === "state" && e.state?.status === "completed").map((e) => e.run_id);
      if (runs.size === 2 && [...runs].every((id) => completed.includes(id))) break;
      next = it.next();
    }
    await it.return(undefined);
    assert.ok(seen.length > 6, `saw ${seen.length} events`);
    const cursors = seen.map((e) => e.cursor);
    assert.deepEqual(cursors, [...new Set(cursors)].sort((a, b) => a - b), "in order, none twice");
    for (let i = 1; i < cursors.length; i++) assert.equal(cursors[i], cursors[i - 1] + 1, `no gap after ${cursors[i - 1]}`);
  } finally {
    await rt.close();
    await driver.close();
  }
});

test("a tool effect executed in Node", async () => {
  const host = await RuntimeClient.connect(socketPath);
  const rt = await RuntimeClient.connect(socketPath);
  const calls: unknown[] = [];
  const worker = host.serveExternal({
    tool_calls: async (effect) => {
      const results = (effect.payload.tool_calls as Array<{ name: string; arguments: { a: number; b: number }; call_id: string }>).map(
        (c) => {
          calls.push(c);
          return { call_id: c.call_id, name: c.name, output: c.arguments.a + c.arguments.b, success: true };
        },
      );
      return { results };
    },
  });
  try {
    const { run_id, state } = await rt.start("tool", { a: 20, b: 22 });
    assert.equal(state.waiting?.reason, "job");
    let st = await rt.state(run_id);
    for (let i = 0; i < 200 && st.status !== "completed"; i++) {
      await new Promise((r) => setTimeout(r, 25));
      st = await rt.state(run_id);
    }
    assert.equal(st.status, "completed");
    assert.deepEqual(st.output, { tools: { results: [{ call_id: "c1", name: "add", output: 42, success: true }] } });
    assert.equal(calls.length, 1);
  } finally {
    await worker.stop();
    await host.close();
    await rt.close();
  }
});

test("errors: a bad run id and bad params", async () => {
  const rt = await RuntimeClient.connect(socketPath);
  try {
    await assert.rejects(rt.state("nope"), (e: unknown) => {
      assert.ok(e instanceof RuntimeError);
      assert.equal(e.code, ERRORS.run_not_found);
      assert.equal(e.errorName, "run_not_found");
      assert.match(e.message, /no run 'nope'/);
      return true;
    });
    await assert.rejects(rt.state("../../etc/passwd"), (e: unknown) => e instanceof RuntimeError && e.code === ERRORS.invalid_params);
    // A payload that is not an object: the protocol says which field is wrong.
    const bad = rt.call("runtime/resume", { run_id: "x", payload: "yes" } as unknown as Methods["runtime/resume"]["params"]);
    await assert.rejects(bad, (e: unknown) => {
      assert.ok(e instanceof RuntimeError);
      assert.equal(e.code, ERRORS.invalid_params);
      assert.match(e.message, /payload/);
      return true;
    });
    await assert.rejects(rt.start("no-such-workflow"), (e: unknown) => e instanceof RuntimeError && e.errorName === "workflow_not_found");
  } finally {
    await rt.close();
  }
});

test("choices are enforced; start without waiting; fork; a run-scoped event", async () => {
  const rt = await RuntimeClient.connect(socketPath);
  try {
    const { run_id } = await rt.start("approval", { amount: 7 });
    await assert.rejects(rt.resume(run_id, { text: "maybe" }), (e: unknown) => {
      assert.ok(e instanceof RuntimeError);
      assert.equal(e.code, ERRORS.invalid_params);
      assert.match(e.message, /'approve', 'reject'/);
      return true;
    });
    assert.equal((await rt.state(run_id)).status, "waiting");

    const quick = await rt.start("ask", { x: 1 }, { wait: false });
    assert.equal(quick.state.status, "running");
    assert.equal(quick.state.current_node, "ask");

    const fork = await rt.fork(run_id, { vars: { amount: 9 } });
    assert.notEqual(fork.run_id, run_id);
    assert.equal(fork.state.status, "waiting");
    assert.equal(fork.state.waiting?.prompt, "Approve an expense of 9 EUR?");
    const first = (await rt.ledger(fork.run_id)).records[0];
    assert.equal((first.result as { forked: { run_id: string } }).forked.run_id, run_id);

    const paid = await rt.start("expense", { amount: 5 });
    await rt.resume(paid.run_id, { text: "approve" });
    await assert.rejects(rt.emitEvent("expense_paid", {}, { scope: "run" }), (e: unknown) => e instanceof RuntimeError && e.code === ERRORS.invalid_params);
    assert.deepEqual(await rt.emitEvent("expense_paid", { amount: 5 }, { run_id: paid.run_id }), [paid.run_id]);
    assert.equal((await rt.state(paid.run_id)).status, "completed");
  } finally {
    await rt.close();
  }
});

test("the golden protocol messages, as the Python tests replay them", async () => {
  const golden = JSON.parse(readFileSync(path.join(ROOT, "protocol", "golden.json"), "utf8")).messages;
  const openrpc = JSON.parse(readFileSync(path.join(ROOT, "protocol", "openrpc.json"), "utf8"));
  const rt = await RuntimeClient.connect(socketPath);
  try {
    const exampleRun: string = golden["runtime/resume"].request.params.run_id;
    const started = await rt.call("runtime/start", golden["runtime/start"].request.params);
    for (const m of openrpc.methods) {
      const msg = golden[m.name];
      if (m["x-notification"]) {
        assert.equal(msg.method, m.name);
        continue;
      }
      if (["daemon/shutdown", "runtime/unsubscribe", "runtime/start"].includes(m.name)) continue;
      let params = JSON.parse(JSON.stringify(msg.request.params).replaceAll(exampleRun, started.run_id));
      if (m.name === "runtime/subscribe") params = {};
      if (m.name === "runtime/retry") {
        // The example run waits; it has not failed: the typed refusal.
        await assert.rejects(rt.call("runtime/retry", params), (e: unknown) => e instanceof RuntimeError && e.errorName === "run_not_failed");
        continue;
      }
      const result = await rt.call(m.name as keyof Methods, params);
      if (m.name === "daemon/webLink") assert.match((result as WebLinkResult).url, /^http:\/\/127\.0\.0\.1:\d+\/login\?code=/);
      // The daemon answers with the fields the golden response shows.
      const expected = msg.response.result;
      if (expected && typeof expected === "object") {
        for (const key of Object.keys(expected)) assert.ok(key in (result as object), `${m.name}: result lacks ${key}`);
      }
    }
  } finally {
    await rt.close();
  }
});

test("connect() finds the project's daemon from a nested folder, and says what it tried when none runs", async () => {
  const project = mkdtempSync(path.join(os.tmpdir(), "ar-ts-project-"));
  const nested = path.join(project, "src", "deep");
  mkdirSync(nested, { recursive: true });
  writeFileSync(
    path.join(project, "abstractruntime.toml"),
    `data = "var/ar"\nworkflows = [${JSON.stringify(path.join(ROOT, "tests", "e2e", "workflows"))}]\n`,
  );
  const cwd = process.cwd();
  const proc = spawn(PYTHON, ["-m", "abstractruntime", "serve"], { cwd: project, env: ENV, stdio: ["ignore", "ignore", "inherit"] });
  try {
    process.chdir(nested);
    const found = discoverProject();
    assert.equal(found.root, project);
    assert.equal(found.dataDir, path.join(project, "var", "ar"));
    await waitForSocket(discoverSocket());
    const rt = await RuntimeClient.connect();
    try {
      const status = await rt.status();
      assert.equal(status.project_root, project);
      assert.equal(status.data_dir, path.join(project, "var", "ar"));
      assert.equal((await rt.start("ask", {})).state.status, "waiting");
    } finally {
      await rt.close();
    }
    proc.kill("SIGTERM");
    await new Promise((r) => proc.once("exit", r));
    await assert.rejects(RuntimeClient.connect(), (e: unknown) => {
      assert.ok(e instanceof DaemonNotRunning);
      assert.match(e.message, new RegExp(`no daemon is running for the project at ${project}`));
      assert.ok(e.message.includes(discoverSocket()) && e.message.includes("abstractruntime serve"));
      return true;
    });
  } finally {
    process.chdir(cwd);
    proc.kill("SIGKILL");
    rmSync(project, { recursive: true, force: true });
  }
});
