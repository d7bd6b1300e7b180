"""Several daemons on one PostgreSQL database: the same runs, served by any of them.

The tests start a throwaway PostgreSQL of their own (tests/pg_server.py); each test gets a
database of its own on it."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from daemon_fixture import DaemonProcess, cli, wait_for

from abstractruntime.core.ledger_hash import verify_ledger_chain

TIMER = """
from datetime import datetime, timedelta, timezone

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def wait(run, ctx):
    until = (datetime.now(timezone.utc) + timedelta(seconds=float(run.vars.get("seconds", 1)))).isoformat()
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="done")


timer = WorkflowSpec(
    workflow_id="timer",
    entry_node="wait",
    nodes={"wait": wait, "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"fired": True})},
)
"""


@pytest.fixture
def dsn(pg_server):
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.dsn.replace("dbname=postgres", f"dbname={name}")


def daemon_on(
    tmp: Path, name: str, dsn: str, workflows: Path, transport: str = "unix", lease_s=None, start: bool = True
) -> DaemonProcess:
    """A daemon on the test's database; `lease_s`: how soon the others take its runs when it dies."""
    folder = tmp / name
    folder.mkdir()
    extra = ["--store", "postgres", "--dsn", dsn] + (["--lease-s", str(lease_s)] if lease_s else [])
    d = DaemonProcess(folder, transport, workflows=workflows, extra=extra)
    return d.start() if start else d



def test_a_run_started_on_one_daemon_is_answered_on_another(tmp_path, dsn, monkeypatch):
    from daemon_fixture import WORKFLOWS

    # Over TCP, with one token for both (a client of several daemons needs one).
    monkeypatch.setenv("ABSTRACTRUNTIME_TOKEN", "one-token-for-every-daemon")
    a = daemon_on(tmp_path, "a", dsn, WORKFLOWS, "tcp")
    b = daemon_on(tmp_path, "b", dsn, WORKFLOWS, "tcp")
    assert a.token == b.token == "one-token-for-every-daemon"
    try:
        with a.client() as ca, b.client() as cb:
            run = ca.start("ask", {"x": 1}).run_id
            assert [r.run_id for r in cb.runs(status="waiting").runs] == [run]  # B sees A's run
            assert cb.resume(run, {"text": "yes"}).status == "completed"
            assert ca.state(run).output == {"answer": {"text": "yes"}, "x": 1}
            records = [r.model_dump(mode="json") for r in ca.ledger(run).records]
            assert verify_ledger_chain(records)["ok"] and [r["seq"] for r in records] == [1, 2, 3, 4]
            assert cb.status().store == "postgres"
            waits = ca.start("events").run_id  # waits for the event "go", on A
            assert cb.emit_event("go", {"n": 1}) == [waits]  # emitted on B
            assert ca.state(waits).output == {"n": 1}
    finally:
        a.stop()
        b.stop()


def test_a_timer_set_through_one_daemon_fires_through_another_after_a_sigkill(tmp_path, dsn):
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "timer.py").write_text(TIMER)
    a = daemon_on(tmp_path, "a", dsn, wf, lease_s=2)
    c = daemon_on(tmp_path, "c", dsn, wf, lease_s=2)
    try:
        with a.client() as ca:
            run = ca.start("timer", {"seconds": 1.5}).run_id
            st = ca.state(run)
            assert st.status == "waiting"
        a.kill(signal.SIGKILL)
        with c.client() as cc:
            # Within the lease (2 s) and one poll (1 s) of the timer, with room for a slow machine.
            done = wait_for(lambda: (s := cc.state(run)).status == "completed" and s, timeout=3 + 1.5 + 10,
                            what="the timer through c")
            assert done.output == {"fired": True}
    finally:
        a.stop()
        c.stop()


def test_export_from_files_import_into_postgres_and_answer_a_waiting_run_there(tmp_path, dsn):
    import json

    from daemon_fixture import WORKFLOWS

    def ar(*args, stdin=None):
        return cli(tmp_path, *args, stdin=stdin, timeout=120)

    files = DaemonProcess(tmp_path, "unix", workflows=WORKFLOWS).start()  # the files store, in tmp/data
    try:
        with files.client() as c:
            waiting = c.start("ask", {"x": 5}).run_id
            done = c.start("ask", {"x": 6}).run_id
            c.resume(done, {"text": "no"})
            before = {r: [x.model_dump(mode="json") for x in c.ledger(r).records] for r in (waiting, done)}
        busy = ar("export", "--data", str(files.data), "--out", str(tmp_path / "runs.jsonl"))
        assert busy.returncode == 2 and "stop" in busy.stderr  # its daemon holds the folder
    finally:
        files.stop()
    out = ar("export", "--data", str(files.data), "--out", str(tmp_path / "runs.jsonl"))
    assert out.returncode == 0 and "exported 2 run(s) from the files store" in out.stderr, out.stderr
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"abstractruntime_export": 1, "runs": 2} and len(lines) == 3

    into = ar("import", str(tmp_path / "runs.jsonl"), "--store", "postgres", "--dsn", dsn)
    assert into.returncode == 0 and "imported 2 run(s) into the postgres store" in into.stderr, into.stderr
    again = ar("import", str(tmp_path / "runs.jsonl"), "--store", "postgres", "--dsn", dsn)
    assert "imported 0 run(s)" in again.stderr and "2 already there, skipped" in again.stderr
    bad = ar("import", "-", "--store", "postgres", "--dsn", dsn, stdin="hello\n")
    assert bad.returncode == 2 and "line 1: not an abstractruntime export" in bad.stderr

    pg = daemon_on(tmp_path, "pg", dsn, WORKFLOWS)
    try:
        with pg.client() as c:
            for rid, records in before.items():  # the same chains, record for record
                assert [x.model_dump(mode="json") for x in c.ledger(rid).records] == records
            assert c.resume(waiting, {"text": "yes"}).output == {"answer": {"text": "yes"}, "x": 5}
            records = [x.model_dump(mode="json") for x in c.ledger(waiting).records]
            assert verify_ledger_chain(records)["ok"] and len(records) == len(before[waiting]) + 2
    finally:
        pg.stop()


def _subscribe_in_thread(client, after):
    """Events of every run from `after`, collected by a thread into the returned list."""
    import threading

    got: list = []

    def pump():
        for ev in client.subscribe(after=after):
            got.append(ev)

    threading.Thread(target=pump, daemon=True).start()
    return got


def test_a_subscriber_on_c_sees_every_event_of_runs_on_a_and_b_once_in_order(tmp_path, dsn):
    import threading

    from daemon_fixture import WORKFLOWS

    a, b, c = (daemon_on(tmp_path, n, dsn, WORKFLOWS) for n in "abc")
    try:
        with a.client() as ca, b.client() as cb, c.client() as cc:
            start = cc.status().cursor
            seen = _subscribe_in_thread(cc, start)
            runs: list = []

            def work(client, n):
                for i in range(5):
                    rid = client.start("ask", {"x": n * 10 + i}).run_id
                    client.resume(rid, {"text": f"{n}-{i}"})
                    runs.append(rid)

            # Four threads on A's connection and four on B's (requests over one connection run concurrently).
            threads = [threading.Thread(target=work, args=(cl, n)) for n, cl in enumerate([ca, cb] * 4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(runs) == 40

            def done():
                finished = {e.run_id for e in seen if e.kind == "state" and e.state.status == "completed"}
                return finished >= set(runs)

            wait_for(done, what="C's subscriber to see all 40 runs complete")
            mine = [e for e in seen if e.run_id in set(runs)]
            cursors = [e.cursor for e in seen]
            assert cursors == sorted(set(cursors)), "every event once, in cursor order"
            for rid in runs:  # each run's records, each once and in order, as its ledger has them
                records = [e.record.seq for e in mine if e.run_id == rid and e.kind == "record"]
                assert records == [r.seq for r in ca.ledger(rid).records]
                states = [e.state.status for e in mine if e.run_id == rid and e.kind == "state"]
                assert states[-1] == "completed" and "waiting" in states
            peers = cc.status().peers
            assert len(peers) == 3 and sum(p.this for p in peers) == 1
            version = {w.workflow_id: w.version for w in ca.workflows()}["ask"]
            assert all(p.workflows["ask"] == version and p.heartbeat_age_s < 30 for p in peers)
        # A replay after a restart of C comes from the database: the same events, once, in order.
        c.stop()
        c.start()
        with c.client() as cc:
            replay: list = []
            for ev in cc.subscribe(after=start):
                if ev.run_id in set(runs):
                    replay.append(ev)
                if len(replay) == len(mine):
                    break
            assert [(e.cursor, e.kind) for e in replay] == [(e.cursor, e.kind) for e in mine]
    finally:
        for d in (a, b, c):
            d.stop()


def test_three_daemons_eight_clients_each_race_resumes_each_applied_once(tmp_path, dsn):
    import random
    import threading

    from daemon_fixture import WORKFLOWS

    daemons = [daemon_on(tmp_path, n, dsn, WORKFLOWS) for n in "abc"]
    try:
        with daemons[0].client() as c0:
            runs = [c0.start("ask", {"x": i}).run_id for i in range(12)]
        wins: dict = {}
        refusals: list = []
        lock = threading.Lock()

        def client(d, n):
            order = runs[:]
            random.Random(n).shuffle(order)
            with d.client() as cl:
                for rid in order:
                    try:
                        out = cl.resume(rid, {"text": f"client-{n}"})
                    except Exception as e:
                        with lock:
                            refusals.append((type(e).__name__, str(e)[:100]))
                        continue
                    with lock:
                        wins.setdefault(rid, []).append((n, out.output["answer"]["text"]))

        threads = [threading.Thread(target=client, args=(daemons[n % 3], n)) for n in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        from collections import Counter

        assert sorted(wins) == sorted(runs) and all(len(w) == 1 for w in wins.values()), (wins, Counter(refusals))
        # The others were told the run already completed (never busy: a resume waits for the lease).
        assert Counter(r[0] for r in refusals) == Counter({"RunFinishedError": 12 * 23}), Counter(refusals)
        status = cli(tmp_path, "status", "--data", str(daemons[1].data))
        assert status.returncode == 0 and "peers (3 daemons on this database):" in status.stdout, status.stderr
        assert status.stdout.count("(this one)") == 1 and status.stdout.count("ask@") == 3
        with daemons[2].client() as c2:
            for rid, [(n, text)] in wins.items():
                assert text == f"client-{n}"
                records = [r.model_dump(mode="json") for r in c2.ledger(rid).records]
                assert verify_ledger_chain(records)["ok"]
                answered = [r for r in records if r["status"] == "completed" and r["node_id"] == "ask"]
                assert len(answered) == 1 and c2.state(rid).output["answer"] == {"text": text}
    finally:
        for d in daemons:
            d.stop()


def test_sigkill_loop_over_three_daemons_loses_no_acknowledged_step(tmp_path, dsn):
    import random
    import threading
    import time

    from daemon_fixture import WORKFLOWS

    # A dead daemon's runs go to the others 2 s after its last heartbeat.
    daemons = [daemon_on(tmp_path, n, dsn, WORKFLOWS, lease_s=2) for n in "abc"]
    started: dict = {}
    answered: dict = {}
    napping: list = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(n):
        rng = random.Random(n)
        i = 0
        while not stop.is_set():
            i += 1
            d = rng.choice(daemons)
            try:
                with d.client() as cl:
                    rid = cl.start("ask", {"x": n * 1000 + i}).run_id
                    with lock:
                        started[rid] = n
                    text = f"w{n}-{i}"
                    cl.resume(rid, {"text": text})
                    with lock:
                        answered[rid] = text
            except Exception:  # the daemon was killed under us: what was acknowledged must hold
                time.sleep(0.05)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in workers:
        t.start()
    rng = random.Random(7)
    try:
        for _ in range(4):
            before = len(answered)  # traffic between kills: some answers acknowledged since the last
            wait_for(lambda: len(answered) >= before + 5, what="some acknowledged answers")  # noqa: B023
            victim = rng.choice(daemons)
            with victim.client() as cl:  # a run in the middle of a 1 s step when its daemon dies
                napping.append(cl.start("slow", {"seconds": 1.0}, wait=False).run_id)
            victim.kill(signal.SIGKILL)
            victim.start()
        stop.set()
        for t in workers:
            t.join(60)
        assert len(answered) > 20
        with daemons[0].client() as cl:
            for rid, text in answered.items():  # every acknowledged answer is there
                st = cl.state(rid)
                assert st.status == "completed" and st.output["answer"] == {"text": text}, (rid, st)
            for rid in started:  # every acknowledged start is there, and no run is left mid-step
                st = wait_for(lambda: (s := cl.state(rid)).status != "running" and s, what=f"run {rid} taken over")  # noqa: B023
                assert st.status in ("waiting", "completed")
                records = [r.model_dump(mode="json") for r in cl.ledger(rid).records]
                assert verify_ledger_chain(records)["ok"], rid
            for rid in napping:  # taken over by another daemon once the dead one's lease expired
                st = wait_for(lambda: (s := cl.state(rid)).status == "completed" and s, what=f"napping run {rid}")  # noqa: B023
                assert st.output == {"slept": 1.0}
    finally:
        stop.set()
        for d in daemons:
            d.stop()


def test_a_timer_is_left_for_a_daemon_that_has_its_workflow_and_node(tmp_path, dsn):
    from daemon_fixture import WORKFLOWS

    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "timer.py").write_text(TIMER)
    old = tmp_path / "old"  # "timer" without the node its runs go on at
    old.mkdir()
    (old / "timer.py").write_text(TIMER.replace('"done": lambda run, ctx: StepPlan(node_id="done", complete_output={"fired": True})', ""))
    a = daemon_on(tmp_path, "a", dsn, wf, lease_s=1, start=False)
    b = daemon_on(tmp_path, "b", dsn, WORKFLOWS, lease_s=1)  # does not serve "timer" at all
    c = daemon_on(tmp_path, "c", dsn, old, lease_s=1)
    a.start()
    try:
        with a.client() as ca:
            run = ca.start("timer", {"seconds": 0.5}).run_id
        a.stop()  # a clean stop: its leases go at once
        with b.client() as cb:
            wait_for(lambda: f"run {run} is stranded" in c.log.read_text(), what="c to find the run stranded")
            assert cb.state(run).status == "waiting"
            assert run not in b.log.read_text()  # b never touched it
        a.start()
        with a.client() as ca:
            done = wait_for(lambda: (s := ca.state(run)).status == "completed" and s, what="a to fire it")
            assert done.output == {"fired": True}
    finally:
        for d in (a, b, c):
            d.stop()


def test_a_daemon_frozen_past_its_lease_cannot_apply_a_step_twice(tmp_path, dsn):
    import psycopg
    from daemon_fixture import WORKFLOWS

    a = daemon_on(tmp_path, "a", dsn, WORKFLOWS, lease_s=1)
    b = daemon_on(tmp_path, "b", dsn, WORKFLOWS, lease_s=1)
    try:
        with a.client() as ca:
            a_id = ca.status().daemon_id
            run = ca.start("slow", {"seconds": 3.0}, wait=False).run_id
        with psycopg.connect(dsn, autocommit=True) as db:
            lease = "SELECT owner FROM abstractruntime.leases WHERE run_id = %s"
            owner = wait_for(lambda: (r := db.execute(lease, (run,)).fetchone()) and r[0], what="a to lease the run")
        assert owner == a_id
        a.proc.send_signal(signal.SIGSTOP)  # frozen in the middle of the 3 s step: its heartbeat stops too
        try:
            with b.client() as cb:
                done = wait_for(lambda: (s := cb.state(run)).status == "completed" and s, what="b to take it over")
                assert done.output == {"slept": 3.0}
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # a wakes, finishes its copy of the step, and is refused at the commit.
        wait_for(lambda: "was changed by another daemon" in a.log.read_text(), what="a's step refused")
        with b.client() as cb:
            records = [r.model_dump(mode="json") for r in cb.ledger(run).records]
            assert verify_ledger_chain(records)["ok"]
            assert [r["node_id"] for r in records if r["status"] == "completed"].count("nap") == 1
            assert cb.state(run).status == "completed"
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
            d.stop()


def test_a_step_longer_than_the_lease_keeps_its_run_while_its_daemon_lives(tmp_path, dsn):
    from daemon_fixture import WORKFLOWS

    a = daemon_on(tmp_path, "a", dsn, WORKFLOWS, lease_s=1)
    b = daemon_on(tmp_path, "b", dsn, WORKFLOWS, lease_s=1)
    try:
        with a.client() as ca:  # a 3 s step under a 1 s lease: the heartbeat renews it
            assert ca.start("slow", {"seconds": 3.0}).state.output == {"slept": 3.0}
        assert "ticking it here" not in b.log.read_text() and "changed by another daemon" not in a.log.read_text()
    finally:
        for d in (a, b):
            d.stop()
