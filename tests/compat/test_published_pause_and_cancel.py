"""Runtime.pause_run / resume_run / cancel_run as published."""

from __future__ import annotations

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    RunStatus,
    Runtime,
    StepPlan,
    WaitReason,
    WorkflowRegistry,
    WorkflowSpec,
    create_scheduled_runtime,
)


def two_steps():
    return WorkflowSpec(
        workflow_id="two",
        entry_node="a",
        nodes={
            "a": lambda run, ctx: StepPlan(node_id="a", next_node="b"),
            "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"ok": True}),
        },
    )


def waits_on(effect: Effect):
    return WorkflowSpec(
        workflow_id="w",
        entry_node="a",
        nodes={
            "a": lambda run, ctx: StepPlan(node_id="a", effect=effect, next_node="b"),
            "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"got": run.vars.get("r")}),
        },
    )


def test_a_paused_running_run_waits_on_pause_run_id_and_tick_leaves_it(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    w = two_steps()
    rid = rt.start(workflow=w)
    st = rt.pause_run(rid, reason="hold on")
    assert st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.USER
    assert st.waiting.wait_key == f"pause:{rid}" and st.current_node == "a"
    assert rt.tick(workflow=w, run_id=rid).status == RunStatus.WAITING  # a no-op
    st = rt.resume_run(rid)
    assert st.status == RunStatus.RUNNING and st.waiting is None
    assert rt.tick(workflow=w, run_id=rid).output == {"ok": True}


def test_resume_of_a_paused_run_raises_a_value_error_that_says_paused(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    w = waits_on(Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, "r"))
    rid = rt.start(workflow=w)
    rt.tick(workflow=w, run_id=rid)
    st = rt.pause_run(rid)
    assert st.status == RunStatus.WAITING and st.waiting.wait_key == "k"  # a waiting run keeps its wait
    with pytest.raises(ValueError, match="paused"):
        rt.resume(workflow=w, run_id=rid, wait_key="k", payload={"v": 1})
    rt.resume_run(rid)
    assert rt.resume(workflow=w, run_id=rid, wait_key="k", payload={"v": 1}).output == {"got": {"v": 1}}


def test_a_paused_wait_until_does_not_fire_until_resumed(published):
    runs, ledger = published.open()
    registry = WorkflowRegistry()
    w = waits_on(Effect(EffectType.WAIT_UNTIL, {"until": "2999-01-01T00:00:00+00:00"}))
    registry.register(w)
    sr = create_scheduled_runtime(run_store=runs, ledger_store=ledger, workflows=[w], auto_start=False)
    rid = sr.runtime.start(workflow=w)
    sr.runtime.tick(workflow=w, run_id=rid)
    sr.runtime.pause_run(rid)
    state = runs.load(rid)
    state.waiting.until = "2000-01-01T00:00:00+00:00"  # the host moves the timer into the past
    runs.save(state)
    assert sr.scheduler.poll_once() == 0
    assert sr.get_state(rid).status == RunStatus.WAITING
    sr.runtime.resume_run(rid)
    assert sr.scheduler.poll_once() == 1
    assert sr.get_state(rid).status == RunStatus.COMPLETED


def test_cancel_run_cancels_running_and_waiting_runs_and_leaves_a_completed_one(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    w = waits_on(Effect(EffectType.ASK_USER, {"prompt": "?"}, "r"))
    running = rt.start(workflow=w)
    assert rt.cancel_run(running).status == RunStatus.CANCELLED
    waiting = rt.start(workflow=w)
    rt.tick(workflow=w, run_id=waiting)
    st = rt.cancel_run(waiting, reason="no longer needed")
    assert st.status == RunStatus.CANCELLED and st.waiting is None
    assert rt.tick(workflow=w, run_id=waiting).status == RunStatus.CANCELLED  # tick: a no-op
    completed = rt.start(workflow=two_steps())
    rt.tick(workflow=two_steps(), run_id=completed)
    assert rt.cancel_run(completed).status == RunStatus.COMPLETED
