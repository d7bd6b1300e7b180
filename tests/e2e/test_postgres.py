"""Several daemons on one PostgreSQL database: the same runs, served by any of them.

The tests start a throwaway PostgreSQL of their own (tests/pg_server.py); each test gets a
database of its own on it."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest
from daemon_fixture import DaemonProcess, wait_for

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


def daemon_on(tmp: Path, name: str, dsn: str, workflows: Path) -> DaemonProcess:
    folder = tmp / name
    folder.mkdir()
    return DaemonProcess(folder, "unix", workflows=workflows, extra=["--store", "postgres", "--dsn", dsn]).start()



def test_a_run_started_on_one_daemon_is_answered_on_another(tmp_path, dsn):
    from daemon_fixture import WORKFLOWS

    a = daemon_on(tmp_path, "a", dsn, WORKFLOWS)
    b = daemon_on(tmp_path, "b", dsn, WORKFLOWS)
    try:
        with a.client() as ca, b.client() as cb:
            run = ca.start("ask", {"x": 1}).run_id
            assert [r.run_id for r in cb.runs(status="waiting").runs] == [run]  # B sees A's run
            assert cb.resume(run, {"text": "yes"}).status == "completed"
            assert ca.state(run).output == {"answer": {"text": "yes"}, "x": 1}
            records = [r.model_dump(mode="json") for r in ca.ledger(run).records]
            assert verify_ledger_chain(records)["ok"] and [r["seq"] for r in records] == [1, 2, 3, 4]
            assert cb.status().store == "postgres"
    finally:
        a.stop()
        b.stop()


def test_a_timer_set_through_one_daemon_fires_through_another_after_a_sigkill(tmp_path, dsn):
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "timer.py").write_text(TIMER)
    a = daemon_on(tmp_path, "a", dsn, wf)
    c = daemon_on(tmp_path, "c", dsn, wf)
    try:
        with a.client() as ca:
            run = ca.start("timer", {"seconds": 1.5}).run_id
            assert ca.state(run).status == "waiting"
        a.kill(signal.SIGKILL)
        with c.client() as cc:
            done = wait_for(lambda: (s := cc.state(run)).status == "completed" and s, what="the timer through c")
            assert done.output == {"fired": True}
    finally:
        a.stop()
        c.stop()


def test_export_from_files_import_into_postgres_and_answer_a_waiting_run_there(tmp_path, dsn):
    import json
    import subprocess
    import sys

    from daemon_fixture import WORKFLOWS

    from abstractruntime.client.connection import env_with_package

    def ar(*args, stdin=None):
        return subprocess.run(
            [sys.executable, "-m", "abstractruntime", *args],
            cwd=tmp_path,
            env=env_with_package(),
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
        )

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
