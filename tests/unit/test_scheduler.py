"""The timer-driven scheduler and create_scheduled_runtime."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    RunStatus,
    Runtime,
    Scheduler,
    StepPlan,
    WorkflowNotFoundError,
    WorkflowRegistry,
    WorkflowSpec,
    create_scheduled_runtime,
)


def timer_wf(until_fn, workflow_id="timer"):
    return WorkflowSpec(
        workflow_id=workflow_id,
        entry_node="wait",
        nodes={
            "wait": lambda run, ctx: StepPlan(
                node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until_fn()}, "woke"), next_node="done"
            ),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"ok": True}),
        },
    )


def in_s(seconds):
    return lambda: (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def test_thousands_of_timers_due_at_once_all_resume(stores):
    rs, ls = stores.open()
    n = 500 if stores.kind == "jsonfile" else 2000  # fsync'd files: fewer runs to create in time
    wf = WorkflowSpec(
        workflow_id="same_instant",
        entry_node="wait",
        nodes={
            "wait": lambda run, ctx: StepPlan(
                node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}), next_node="done"
            ),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"ok": True}),
        },
    )
    done = threading.Event()
    finished = []

    def on_resumed(state):
        finished.append(state.run_id)
        if len(finished) == n:
            done.set()

    sr = create_scheduled_runtime(
        run_store=rs, ledger_store=ls, workflows=[wf], poll_interval_s=30.0, on_run_resumed=on_resumed
    )
    try:
        due = (datetime.now(timezone.utc) + timedelta(seconds=4)).isoformat()
        ids = []
        for _ in range(n):
            rid, st = sr.run(wf, vars={"until": due})
            assert st.status == RunStatus.WAITING, "the timer fell due before every run was waiting"
            ids.append(rid)
        assert done.wait(30), f"only {len(finished)} of {n} resumed"
        assert sorted(finished) == sorted(ids)
        assert all(sr.get_state(i).status == RunStatus.COMPLETED for i in ids[:50])
        # Woken by the stores, not by polling: the poll interval is 30 s.
        assert sr.stats.poll_cycles < 200
    finally:
        sr.stop()


def test_a_new_earlier_timer_wakes_a_sleeping_scheduler(stores):
    rs, ls = stores.open()
    sr = create_scheduled_runtime(run_store=rs, ledger_store=ls, poll_interval_s=60.0)
    try:
        late = timer_wf(in_s(3600), "late")
        sr.run(late)
        time.sleep(0.1)  # the scheduler now sleeps (up to 60 s)
        soon = timer_wf(in_s(0.2), "soon")
        rid, st = sr.run(soon)
        assert st.status == RunStatus.WAITING
        deadline = time.time() + 5
        while sr.get_state(rid).status != RunStatus.COMPLETED and time.time() < deadline:
            time.sleep(0.02)
        assert sr.get_state(rid).status == RunStatus.COMPLETED
    finally:
        sr.stop()


def test_recovery_ticks_interrupted_runs(stores):
    rs, ls = stores.open()
    wf = WorkflowSpec(
        workflow_id="w", entry_node="a", nodes={"a": lambda run, ctx: StepPlan(node_id="a", complete_output={"ok": 1})}
    )
    rt = Runtime(run_store=rs, ledger_store=ls)
    rid = rt.start(workflow=wf)  # RUNNING and never ticked, as after a crash mid-tick
    reg = WorkflowRegistry([wf])
    sch = Scheduler(runtime=rt, registry=reg, poll_interval_s=0.05)
    assert sch.recover() == 1
    assert rt.get_state(rid).status == RunStatus.COMPLETED


def test_unknown_workflow_does_not_stop_the_scheduler(stores):
    rs, ls = stores.open()
    ghost = timer_wf(in_s(0.05), "ghost")
    real = timer_wf(in_s(0.1), "real")
    failures = []
    sr = create_scheduled_runtime(
        run_store=rs,
        ledger_store=ls,
        workflows=[real],
        poll_interval_s=0.05,
        on_run_failed=lambda rid, e: failures.append(e),
    )
    try:
        gid = sr.runtime.start(workflow=ghost)
        sr.runtime.tick(workflow=ghost, run_id=gid)
        rid, _ = sr.run(real)
        deadline = time.time() + 5
        while sr.get_state(rid).status != RunStatus.COMPLETED and time.time() < deadline:
            time.sleep(0.02)
        assert sr.get_state(rid).status == RunStatus.COMPLETED
        assert any(isinstance(e, WorkflowNotFoundError) for e in failures)
        assert "ghost" in "".join(sr.stats.errors)
    finally:
        sr.stop()


def test_respond_and_find_waiting(stores):
    rs, ls = stores.open()
    wf = WorkflowSpec(
        workflow_id="q",
        entry_node="ask",
        nodes={
            "ask": lambda run, ctx: StepPlan(
                node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "name?"}, "name"), next_node="done"
            ),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"name": run.vars["name"]}),
        },
    )
    sr = create_scheduled_runtime(run_store=rs, ledger_store=ls, auto_start=False)
    rid, st = sr.run(wf)
    assert [r.run_id for r in sr.find_waiting_runs()] == [rid]
    assert not sr.is_running
    st = sr.respond(rid, {"text": "Ada"})
    assert st.output == {"name": {"text": "Ada"}}
    with pytest.raises(Exception, match="already completed"):
        sr.respond(rid, {"text": "again"})
