"""The timer-driven scheduler and create_scheduled_runtime."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

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
from abstractruntime.core.clock import ManualClock


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


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def in_s(seconds, clock):
    return lambda: iso(clock.time() + seconds)


def wait_for(cond, what, timeout=30.0):
    """Wait on a condition (real time only bounds a hang; the test's outcome never depends on it)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def clock(stores):
    stores.clock = ManualClock()
    return stores.clock


def test_thousands_of_timers_due_at_once_all_resume(stores, clock):
    rs, ls = stores.open()
    n = 1000
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
        run_store=rs, ledger_store=ls, workflows=[wf], poll_interval_s=30.0, on_run_resumed=on_resumed, clock=clock
    )
    try:
        due = iso(clock.time() + 60)
        ids = []
        for _ in range(n):
            rid, st = sr.run(wf, vars={"until": due})
            assert st.status == RunStatus.WAITING
            ids.append(rid)
        assert not finished
        clock.advance(60)  # every timer falls due at this one instant
        assert done.wait(30), f"only {len(finished)} of {n} resumed"
        assert sorted(finished) == sorted(ids)
        assert all(sr.get_state(i).status == RunStatus.COMPLETED for i in ids[:50])
        # One claim took them all: no poll cycle per run.
        assert sr.stats.poll_cycles < 10
    finally:
        sr.stop()


def test_a_timer_not_yet_due_does_not_fire(stores, clock):
    rs, ls = stores.open()
    sr = create_scheduled_runtime(run_store=rs, ledger_store=ls, poll_interval_s=0.01, clock=clock)
    try:
        rid, st = sr.run(timer_wf(in_s(10, clock)))
        assert st.status == RunStatus.WAITING
        wait_for(lambda: clock.sleepers > 0, "the scheduler to sleep")  # else it may miss the advance
        cycles = sr.stats.poll_cycles
        clock.advance(9.9)  # the scheduler wakes (its poll interval passed) and looks
        wait_for(lambda: sr.stats.poll_cycles > cycles, "a scheduler cycle after 9.9 s")
        assert sr.get_state(rid).status == RunStatus.WAITING
        clock.advance(0.1)
        wait_for(lambda: sr.get_state(rid).status == RunStatus.COMPLETED, "the timer to fire")
    finally:
        sr.stop()


def test_a_new_earlier_timer_wakes_a_sleeping_scheduler(stores, clock):
    rs, ls = stores.open()
    sr = create_scheduled_runtime(run_store=rs, ledger_store=ls, poll_interval_s=60.0, clock=clock)
    try:
        sr.run(timer_wf(in_s(3600, clock), "late"))
        wait_for(lambda: sr.stats.poll_cycles >= 1, "the scheduler's first cycle")  # it now sleeps up to 60 s
        rid, st = sr.run(timer_wf(in_s(5, clock), "soon"))
        assert st.status == RunStatus.WAITING
        # Only 5 s pass: a scheduler not woken by the store would sleep on towards its 60 s cap.
        clock.advance(5)
        wait_for(lambda: sr.get_state(rid).status == RunStatus.COMPLETED, "the earlier timer to fire")
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


def test_unknown_workflow_does_not_stop_the_scheduler(stores, clock):
    rs, ls = stores.open()
    ghost = timer_wf(in_s(1, clock), "ghost")
    real = timer_wf(in_s(2, clock), "real")
    failures = []
    sr = create_scheduled_runtime(
        run_store=rs,
        ledger_store=ls,
        workflows=[real],
        poll_interval_s=0.05,
        on_run_failed=lambda rid, e: failures.append(e),
        clock=clock,
    )
    try:
        gid = sr.runtime.start(workflow=ghost)
        sr.runtime.tick(workflow=ghost, run_id=gid)
        rid, _ = sr.run(real)
        clock.advance(2)
        wait_for(lambda: sr.get_state(rid).status == RunStatus.COMPLETED, "the real workflow's timer")
        # Both timers are due in one batch: the real run is committed before the poll reports
        # the ghost's failure, so wait for that report too.
        wait_for(lambda: any(isinstance(e, WorkflowNotFoundError) for e in failures), "the ghost's failure")
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


def test_due_runs_are_ticked_in_batches_each_on_its_own(stores, clock):
    """Due runs are committed together in batches (Runtime.tick_many); each run's outcome is
    its own: a node that raises fails its run only, a busy run is left for the next poll, a
    child finishing in a batch wakes its waiting parent."""
    rs, ls = stores.open()
    due = in_s(5, clock)

    def done(run, ctx):
        if run.vars.get("boom"):
            raise RuntimeError("boom")
        return StepPlan(node_id="done", complete_output={"n": run.vars.get("n")})

    wf = WorkflowSpec(
        workflow_id="t",
        entry_node="wait",
        nodes={
            "wait": lambda run, ctx: StepPlan(
                node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": due()}), next_node="done"
            ),
            "done": done,
        },
    )
    parent = WorkflowSpec(
        workflow_id="p",
        entry_node="call",
        nodes={
            "call": lambda run, ctx: StepPlan(
                node_id="call",
                effect=Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "t", "vars": {"n": -1}}, "child"),
                next_node="end",
            ),
            "end": lambda run, ctx: StepPlan(node_id="end", complete_output={"child": run.vars.get("child")}),
        },
    )
    resumed = []
    sr = create_scheduled_runtime(
        run_store=rs,
        ledger_store=ls,
        workflows=[wf, parent],
        auto_start=False,
        clock=clock,
        on_run_resumed=lambda st: resumed.append(st.run_id),
    )
    sr.scheduler.commit_batch = 8
    rt = sr.runtime
    ids = [rt.start_and_tick(workflow=wf, vars={"n": i, "boom": i == 7}).run_id for i in range(30)]
    p = rt.start_and_tick(workflow=parent)
    assert p.status == RunStatus.WAITING
    busy = ids[3]
    clock.advance(10)
    with rt._locks.hold(busy):  # another thread's tick holds it: the batch does not wait for it
        holder = threading.Thread(target=lambda: sr.scheduler.poll_once())
        holder.start()
        holder.join(30)
    assert not holder.is_alive()
    states = {r: rt.get_state(r) for r in ids}
    assert states[ids[7]].status == RunStatus.FAILED and "boom" in states[ids[7]].error
    assert states[busy].status == RunStatus.WAITING
    assert all(
        s.status == RunStatus.COMPLETED and s.output == {"n": i}
        for i, s in enumerate(states.values())
        if i not in (3, 7)
    )
    assert all(rt.verify_ledger(r)["ok"] for r in ids)
    assert rt.get_state(p.run_id).status == RunStatus.COMPLETED  # woken by its child
    assert set(ids) - {busy, ids[7]} <= set(resumed) and busy not in resumed
    assert sr.scheduler.poll_once() >= 1 and rt.get_state(busy).status == RunStatus.COMPLETED
