"""The Scheduler and the WorkflowRegistry as published."""

from __future__ import annotations

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    InMemoryLedgerStore,
    InMemoryRunStore,
    RunStatus,
    Runtime,
    Scheduler,
    StepPlan,
    WaitReason,
    WorkflowRegistry,
    WorkflowSpec,
)

TIMER = WorkflowSpec(
    workflow_id="timer",
    entry_node="n",
    nodes={
        "n": lambda run, ctx: StepPlan(
            node_id="n", effect=Effect(EffectType.WAIT_UNTIL, {"until": "2999-01-01T00:00:00+00:00"}), next_node="d"
        ),
        "d": lambda run, ctx: StepPlan(node_id="d", complete_output={"ok": 1}),
    },
)


def test_a_scheduler_needs_a_queryable_run_store():
    class SaveLoad:
        def save(self, run):
            pass

        def load(self, run_id):
            return None

    rt = Runtime(run_store=SaveLoad(), ledger_store=InMemoryLedgerStore())
    with pytest.raises(TypeError, match="QueryableRunStore"):
        Scheduler(runtime=rt, registry=WorkflowRegistry())


def test_poll_once_resumes_due_timers_and_counts_them_in_its_stats(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    reg = WorkflowRegistry()
    reg.register(TIMER)
    resumed = []
    s = Scheduler(
        runtime=rt, registry=reg, poll_interval_s=0.05, on_run_resumed=resumed.append, on_run_failed=lambda rid, e: None
    )
    assert s.poll_once() == 0 and s.stats.last_poll_at is not None
    rid = rt.start(workflow=TIMER)
    st = rt.tick(workflow=TIMER, run_id=rid)
    st.waiting.until = "2000-01-01T00:00:00+00:00"  # the host moves the timer into the past
    runs.save(st)
    assert s.poll_once() == 1
    assert rt.get_state(rid).status == RunStatus.COMPLETED and [r.run_id for r in resumed] == [rid]
    assert (s.stats.poll_cycles, s.stats.runs_resumed, s.stats.errors) == (2, 1, [])


def test_starting_a_running_scheduler_twice_raises_already_running():
    s = Scheduler(
        runtime=Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore()), registry=WorkflowRegistry()
    )
    s.start()
    try:
        assert s.is_running
        with pytest.raises(RuntimeError, match="already running"):
            s.start()
    finally:
        s.stop()
    assert not s.is_running


def test_resume_event_says_wait_key_mismatch_or_not_waiting():
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    reg = WorkflowRegistry()
    w = WorkflowSpec(
        workflow_id="ev",
        entry_node="n",
        nodes={
            "n": lambda run, ctx: StepPlan(
                node_id="n", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k1"}, "ev"), next_node="d"
            ),
            "d": lambda run, ctx: StepPlan(node_id="d", complete_output={"ev": run.vars["ev"]}),
        },
    )
    reg.register(w)
    s = Scheduler(runtime=rt, registry=reg)
    rid = rt.start(workflow=w)
    rt.tick(workflow=w, run_id=rid)
    assert [r.run_id for r in s.find_waiting_runs(wait_reason=WaitReason.EVENT)] == [rid]
    with pytest.raises(ValueError, match="wait_key mismatch"):
        s.resume_event(run_id=rid, wait_key="k2", payload={})
    assert s.resume_event(run_id=rid, wait_key="k1", payload={"z": 1}).output == {"ev": {"z": 1}}
    with pytest.raises(ValueError, match="not waiting"):
        s.resume_event(run_id=rid, wait_key="k1", payload={})


def test_the_registry_refuses_a_duplicate_and_names_unknown_ids():
    reg = WorkflowRegistry()
    reg.register(TIMER)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(WorkflowSpec(workflow_id="timer", entry_node="n", nodes=TIMER.nodes))
    with pytest.raises(KeyError, match="not registered"):
        reg.unregister("nope")
    with pytest.raises(KeyError, match="not registered"):
        reg.get_or_raise("nope")
    assert reg.get("nope") is None and reg.list_ids() == ["timer"]
    reg.unregister("timer")
    assert reg.list_ids() == []
