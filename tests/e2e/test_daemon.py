"""The daemon in a subprocess, on each transport, driven by the real Python client."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time

import pytest
from daemon_fixture import daemon

from abstractruntime.client import ProtocolError
from abstractruntime.client.connection import Connection
from abstractruntime.core.errors import (
    RunFinishedError,
    RunNotFoundError,
    WaitKeyMismatchError,
    WorkflowNotFoundError,
)

TRANSPORTS = ["unix", "tcp", "stdio"]


@pytest.fixture(params=TRANSPORTS)
def d(request, tmp_path):
    with daemon(tmp_path, request.param) as proc:
        yield proc


def test_seed_flow_through_the_daemon(d):
    with d.client() as c:
        exp = c.server_info["capabilities"]["experimental"]["abstractruntime"]
        assert exp["protocolVersion"] == "1.0" and "runtime/start" in exp["methods"]
        started = c.start("ask", {"x": 7})
        st = started.state
        assert st.status == "waiting" and st.waiting.prompt == "Continue?" and st.waiting.choices == ["yes", "no"]
        waiting = c.runs(status="waiting").runs
        assert [r.run_id for r in waiting] == [started.run_id] and waiting[0].prompt == "Continue?"
        st = c.resume(started.run_id, {"text": "yes"})
        assert st.status == "completed" and st.output == {"answer": {"text": "yes"}, "x": 7}
        assert c.state(started.run_id).status == "completed"
        led = c.ledger(started.run_id)
        # The origin record (its initial state, for forks), the prompt, the answer, the end.
        assert [r.seq for r in led.records] == [1, 2, 3, 4] and led.next is None
        assert led.records[0].result == {"started": {"node": "ask", "steps": 0, "vars": {"x": 7}}}
        assert [r.seq for r in c.ledger(started.run_id, after=1, limit=1).records] == [2]
        assert c.ledger(started.run_id, limit=2).next == 2
        assert {w.workflow_id for w in c.workflows()} == {"ask", "slow", "events", "steps", "tool"}
        s = c.status()
        assert s.runs == {"completed": 1} and s.clients >= 1 and s.pid > 0


def test_events_cancel_and_paging(d):
    with d.client() as c:
        waiters = [c.start("events").run_id for _ in range(3)]
        assert sorted(c.emit_event("go", {"n": 1})) == sorted(waiters)
        assert c.state(waiters[0]).output == {"n": 1}
        rid = c.start("ask").run_id
        st = c.cancel(rid, "not needed")
        assert st.status == "cancelled" and st.error == "cancelled: not needed"
        page1 = c.runs(limit=2)
        page2 = c.runs(limit=2, cursor=page1.next)
        assert len(page1.runs) == 2 and page1.next and len({r.run_id for r in page1.runs + page2.runs}) == 4


def test_errors_have_stable_codes(d):
    with d.client() as c:
        with pytest.raises(RunNotFoundError):
            c.state("no-such-run")
        with pytest.raises(WorkflowNotFoundError, match="serving:"):
            c.start("nope")
        rid = c.start("ask").run_id
        with pytest.raises(WaitKeyMismatchError):
            c.resume(rid, {"text": "x"}, wait_key="wrong")
        c.resume(rid, {"text": "x"})
        with pytest.raises(RunFinishedError):
            c.resume(rid, {"text": "again"})
        with pytest.raises(ProtocolError) as e:
            c.call("runtime/start", {"workflow_id": "ask", "vars": "not an object"})
        assert e.value.code == -32602 and "vars" in str(e.value)
        assert e.value.raw_data["errors"][0]["loc"] == ["vars"]
        with pytest.raises(ProtocolError) as e:
            c.call("runtime/state", {"run_id": "../../etc/passwd"})
        assert e.value.code == -32602
        with pytest.raises(ProtocolError) as e:
            c.call("runtime/nope", {})
        assert e.value.code == -32601
        with pytest.raises(ProtocolError) as e:
            c.call("runtime/state", {"run_id": rid, "extra": 1})
        assert e.value.code == -32602 and "extra" in str(e.value)


def _raw(d, coro_fn):
    async def main():
        conn = await d.target().open()
        try:
            return await coro_fn(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def _frame(obj) -> bytes:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_lifecycle_and_malformed_frames(d):
    async def scenario(conn: Connection):
        got = {}
        with pytest.raises(ProtocolError) as e:
            await conn.request("daemon/status", {})
        got["before_init"] = e.value.code
        opts = {"token": d.token} if d.token else None
        await conn.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}, "initializationOptions": opts})
        conn.notify("initialized", {})
        replies = []
        conn.on_notification("never", lambda p: None)
        orig = conn._dispatch

        def spy(msg):
            if "error" in msg and msg.get("id") not in conn._pending:
                replies.append((msg.get("id"), msg["error"]["code"]))
            orig(msg)

        conn._dispatch = spy  # type: ignore[method-assign]
        await conn.send_raw(_frame(b"{not json"))
        await conn.send_raw(_frame([1, 2]))
        await conn.send_raw(_frame({"jsonrpc": "1.0", "id": 5, "method": "x"}))
        await conn.send_raw(_frame(b"\xff\xfe"))
        got["status"] = (await conn.request("daemon/status", {}))["pid"]
        got["replies"] = replies
        return got

    got = _raw(d, scenario)
    assert got["before_init"] == -32002
    assert got["replies"] == [(None, -32700), (None, -32600), (5, -32600), (None, -32700)]
    assert got["status"] > 0


def test_huge_frame_is_refused_and_the_daemon_goes_on(tmp_path):
    with daemon(tmp_path, "unix", extra=["--max-frame", "100000"]) as d:
        async def scenario(conn: Connection):
            await conn.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
            errors = []
            orig = conn._dispatch
            conn._dispatch = lambda m: (errors.append(m["error"]["message"]) if m.get("id") is None and "error" in m else orig(m))  # type: ignore[method-assign]
            big = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "runtime/start", "params": {"workflow_id": "ask", "vars": {"a": "x" * 200_000}}})
            await conn.send_raw(_frame(big.encode()))
            st = await conn.request("daemon/status", {})
            return errors, st

        errors, st = _raw(d, scenario)
        assert "exceeds the limit of 100000 bytes" in errors[0] and st["pid"] > 0


def test_several_clients_and_one_leaving(tmp_path):
    for transport in ("unix", "tcp"):
        (tmp_path / transport).mkdir()
        with daemon(tmp_path / transport, transport) as d:
            a, b = d.client(), d.client()
            rid = a.start("ask").run_id
            assert b.state(rid).status == "waiting"
            a.close()  # shutdown + exit: only a's connection ends
            assert b.resume(rid, {"text": "yes"}).status == "completed"
            assert b.status().clients == 1
            b.close()
            assert d.proc.poll() is None


def test_a_slow_node_never_delays_other_clients(tmp_path):
    with daemon(tmp_path, "unix") as d:
        slow, fast = d.client(), d.client()
        t = threading.Thread(target=lambda: slow.start("slow", {"seconds": 2.0}))
        t.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        assert fast.status().pid > 0
        rid = fast.start("ask").run_id
        took = time.perf_counter() - t0
        t.join()
        assert took < 1.0, took
        assert fast.state(rid).status == "waiting"
        slow.close()
        fast.close()


def test_two_clients_resume_the_same_run_one_wins(tmp_path):
    with daemon(tmp_path, "unix") as d:
        a, b = d.client(), d.client()
        rid = a.start("ask").run_id
        results = []
        barrier = threading.Barrier(2)

        def answer(c, text):
            barrier.wait()
            try:
                results.append(c.resume(rid, {"text": text}).status)
            except RunFinishedError as e:
                results.append(type(e).__name__)

        ts = [threading.Thread(target=answer, args=(c, t)) for c, t in ((a, "a"), (b, "b"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sorted(results) == ["RunFinishedError", "completed"]
        a.close()
        b.close()


def test_subscription_reconnects_with_its_cursor_and_misses_nothing(tmp_path):
    with daemon(tmp_path, "unix") as d:
        driver = d.client()
        # Events happen while nobody watches.
        rids = [driver.start("ask").run_id for _ in range(3)]
        for r in rids:
            driver.resume(r, {"text": "ok"})
        # A fresh client replays from cursor 0: every event, in order, once.
        w2 = d.client()
        got = []
        for ev in w2.subscribe(after=0):
            got.append(ev)
            if sum(1 for e in got if e.kind == "state" and e.state and e.state.status == "completed") == 3:
                break
        cursors = [e.cursor for e in got]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        recs = [e for e in got if e.kind == "record"]
        assert sorted({e.run_id for e in recs}) == sorted(rids)
        per_run = {rid: [r.record.seq for r in recs if r.run_id == rid] for rid in rids}
        assert all(v == [1, 2, 3, 4] for v in per_run.values()), per_run
        # Reconnect from the middle: exactly the later events.
        mid = cursors[len(cursors) // 2]
        w3 = d.client()
        later = []
        for ev in w3.subscribe(after=mid):
            later.append(ev.cursor)
            if ev.cursor == cursors[-1]:
                break
        assert later == [c for c in cursors if c > mid]
        for c in (driver, w2, w3):
            c.close()


def test_live_subscriber_survives_a_daemon_restart(tmp_path):
    """The client's iterator reconnects by itself and resumes after its last cursor."""
    with daemon(tmp_path, "unix") as d:
        driver = d.client()
        rid = driver.start("ask").run_id
        seen = []
        stop = threading.Event()

        def watch():
            with d.client() as w:
                for ev in w.subscribe(rid, after=0):
                    seen.append((ev.cursor, ev.kind, ev.record.seq if ev.record else ev.state.status))
                    if ev.kind == "state" and ev.state.status == "completed":
                        break
            stop.set()

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        time.sleep(0.5)
        driver.close()
        d.stop()  # graceful restart: the cursor file carries over
        d.start()
        driver = d.client()
        driver.resume(rid, {"text": "late"})
        assert stop.wait(30), seen
        cursors = [s[0] for s in seen]
        assert cursors == sorted(set(cursors))
        assert [s[2] for s in seen if s[1] == "record"] == [1, 2, 3, 4]
        driver.close()


def test_socket_permissions(tmp_path):
    with daemon(tmp_path, "unix") as d:
        mode = stat.S_IMODE(os.stat(d.socket).st_mode)
        assert mode == 0o600, oct(mode)
        assert stat.S_IMODE(os.stat(os.path.dirname(d.socket)).st_mode) == 0o700


def test_tcp_needs_the_token(tmp_path):
    with daemon(tmp_path, "tcp") as d:
        assert stat.S_IMODE(os.stat(d.data / "daemon.token").st_mode) == 0o600
        from abstractruntime.client import Client
        from abstractruntime.client.aio import AsyncClient, Target

        for token in (None, "wrong"):
            c = Client(AsyncClient(Target("tcp", host="127.0.0.1", port=d.port, token=token)))
            with pytest.raises(Exception, match="token"):
                c.connect()
        with d.client() as ok:
            assert ok.status().pid > 0


def test_tcp_refuses_a_remote_address_without_allow_remote(tmp_path):
    import subprocess
    import sys

    from abstractruntime.client.connection import env_with_package

    p = subprocess.run(
        [sys.executable, "-m", "abstractruntime", "serve", "--data", str(tmp_path), "--workflows", str(tmp_path), "--tcp", "0.0.0.0:0"],
        env=env_with_package(), capture_output=True, text=True, timeout=30,
    )
    assert p.returncode != 0 and "--allow-remote" in p.stderr


def test_golden_requests_against_a_daemon(tmp_path):
    """Replay protocol/golden.json (the same file the TypeScript tests read) on a real daemon."""
    from abstractruntime.core.errors import RunNotFailedError
    from abstractruntime.protocol import BY_NAME
    from abstractruntime.protocol.errors import WebNotServedError
    from conftest import ROOT

    golden = json.loads((ROOT / "protocol" / "golden.json").read_text())["messages"]
    example_run = golden["runtime/resume"]["request"]["params"]["run_id"]
    with daemon(tmp_path, "unix", workflows=ROOT / "examples" / "workflows") as d, d.client() as c:
        rid = c.call("runtime/start", golden["runtime/start"]["request"]["params"])["run_id"]
        for name, msgs in golden.items():
            if BY_NAME[name].notification or name in ("daemon/shutdown", "runtime/unsubscribe"):
                continue
            params = json.loads(json.dumps(msgs["request"]["params"]).replace(example_run, rid))
            if name == "runtime/subscribe":
                params = {}
            if name == "runtime/retry":  # the example run is waiting, not failed: the typed refusal
                with pytest.raises(RunNotFailedError, match="not failed"):
                    c.call(name, params)
                continue
            if name == "daemon/webLink":  # this daemon serves no page (the TypeScript suite's does)
                with pytest.raises(WebNotServedError, match="serve --http PORT"):
                    c.call(name, params)
                continue
            try:
                result = c.call(name, params)
            except Exception as e:  # noqa: BLE001 - reported with the method name
                pytest.fail(f"{name} {params}: {e}")
            if BY_NAME[name].result is not None:
                BY_NAME[name].result.model_validate(result)


def test_a_broken_workflow_file_is_reported_and_the_rest_served(tmp_path):
    import shutil

    from conftest import ROOT

    wf_dir = tmp_path / "wfs"
    shutil.copytree(ROOT / "examples" / "workflows", wf_dir)
    (wf_dir / "broken.py").write_text("from abstractruntime import WorkflowSpec\n\nx = 1\nraise RuntimeError('oops at import')\n")
    (wf_dir / "bad_spec.py").write_text("from abstractruntime import WorkflowSpec\n\nw = WorkflowSpec(workflow_id='w', entry_node='nope', nodes={'a': print})\n")
    (tmp_path / "d").mkdir()
    with daemon(tmp_path / "d", "unix", workflows=wf_dir) as d, d.client() as c:
        res = c.call("workflows/list")
        assert {w["workflow_id"] for w in res["workflows"]} == {"agent", "approval", "expense", "greeting"}
        errors = {os.path.basename(e["file"]): e for e in res["load_errors"]}
        assert errors["broken.py"]["line"] == 4 and "RuntimeError: oops at import" in errors["broken.py"]["message"]
        assert errors["bad_spec.py"]["line"] == 3 and "entry_node 'nope'" in errors["bad_spec.py"]["message"]
        assert c.start("greeting").state.status == "waiting"


def test_a_second_daemon_on_the_same_data_folder_refuses_to_start(tmp_path):
    import subprocess
    import sys

    from abstractruntime.client.connection import env_with_package

    with daemon(tmp_path, "unix") as d:
        p = subprocess.run(
            [sys.executable, "-m", "abstractruntime", "serve", "--data", str(d.data), "--workflows", str(d.workflows),
             "--socket", str(tmp_path / "other.sock")],
            env=env_with_package(), capture_output=True, text=True, timeout=30,
        )
        assert p.returncode == 1
        assert f"pid {d.proc.pid}" in p.stderr and d.socket in p.stderr
        with d.client() as c:
            assert c.status().pid == d.proc.pid


def test_a_node_that_calls_sys_exit_fails_its_run_not_the_daemon(tmp_path):
    wf = tmp_path / "wfs"
    wf.mkdir()
    (wf / "quit.py").write_text(
        "import sys\n"
        "from abstractruntime import StepPlan, WorkflowSpec\n\n"
        "def bye(run, ctx):\n"
        "    sys.exit(7)\n\n"
        "quitter = WorkflowSpec(workflow_id='quitter', entry_node='bye', nodes={'bye': bye})\n"
    )
    (tmp_path / "d").mkdir()
    with daemon(tmp_path / "d", "unix", workflows=wf) as d, d.client() as c:
        pid = c.status().pid
        st = c.start("quitter").state
        assert st.status == "failed" and "SystemExit: 7" in st.error
        assert c.status().pid == pid  # still serving
