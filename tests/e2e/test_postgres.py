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
