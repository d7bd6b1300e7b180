"""`create_scheduled_runtime()` and its ScheduledRuntime, as published."""

from __future__ import annotations

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    RunStatus,
    StepPlan,
    WaitReason,
    WorkflowSpec,
    create_scheduled_runtime,
)

ASK = WorkflowSpec(
    workflow_id="ask",
    entry_node="ask",
    nodes={
        "ask": lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "a"), next_node="done"
        ),
        "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"a": run.vars["a"]}),
    },
)
EVENT = WorkflowSpec(
    workflow_id="event",
    entry_node="n",
    nodes={
        "n": lambda run, ctx: StepPlan(
            node_id="n", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k1"}, "ev"), next_node="d"
        ),
        "d": lambda run, ctx: StepPlan(node_id="d", complete_output={"ev": run.vars["ev"]}),
    },
)


def test_a_scheduled_runtime_starts_runs_answers_them_and_stops(published):
    runs, ledger = published.open()
    sr = create_scheduled_runtime(run_store=runs, ledger_store=ledger, workflows=[EVENT], auto_start=True)
    try:
        assert sr.is_running and sr.registry.get("event") is EVENT and sr.runtime.run_store is runs
        rid = sr.start(workflow=ASK)  # registers it
        assert sr.registry.get("ask") is ASK and sr.get_state(rid).status == RunStatus.RUNNING
        st = sr.tick(rid)
        assert st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.USER
        assert [r.run_id for r in sr.find_waiting_runs()] == [rid]
        assert sr.respond(rid, {"text": "yes"}).output == {"a": {"text": "yes"}}
        eid, st = sr.run(EVENT)
        assert st.status == RunStatus.WAITING
        assert sr.resume_event(run_id=eid, wait_key="k1", payload={"z": 1}).output == {"ev": {"z": 1}}
        assert [r["status"] for r in sr.get_ledger(eid)][-1] == "completed"
        assert sr.stats.poll_cycles >= 0
    finally:
        sr.stop()
    assert not sr.is_running


def test_respond_to_a_finished_run_says_not_waiting():
    sr = create_scheduled_runtime(workflows=[ASK], auto_start=False)
    rid, _ = sr.run(ASK)
    sr.respond(rid, {"text": "yes"})
    with pytest.raises(ValueError, match="not waiting"):
        sr.respond(rid, {"text": "again"})
