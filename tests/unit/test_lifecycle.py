"""Runs people steer: deadlines on waits, enforced choices, run-scoped events, retry and fork.

On every store backend, with a manual clock where time matters.
"""

from __future__ import annotations

import pytest

from abstractruntime import (
    Effect,
    EffectOutcome,
    EffectType,
    RunNotWaitingError,
    RunStatus,
    Runtime,
    StepPlan,
    WorkflowRegistry,
    WorkflowSpec,
)
from abstractruntime.core.clock import ManualClock
from abstractruntime.core.errors import InvalidParamsError, RunNotFailedError
from abstractruntime.scheduler import Scheduler

EXPENSE_CHOICES = ["approve", "reject"]


def expense(on_timeout="escalate", timeout_s=60):
    def ask(run, ctx):
        payload = {"prompt": "Approve?", "choices": EXPENSE_CHOICES, "allow_free_text": False}
        if timeout_s is not None:
            payload.update(timeout_s=timeout_s, on_timeout=on_timeout)
        return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, payload, "decision"), next_node="done")

    return WorkflowSpec(
        workflow_id="expense",
        entry_node="ask",
        nodes={
            "ask": ask,
            "escalate": lambda run, ctx: StepPlan(node_id="escalate", complete_output={"escalated": run.vars}),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"decision": run.vars["decision"]}),
        },
    )


def runtime(stores, clock, *workflows, **kw):
    rs, ls = stores.open()
    reg = WorkflowRegistry(list(workflows))
    return Runtime(run_store=rs, ledger_store=ls, workflow_registry=reg, clock=clock, record_origin=True, **kw), reg


@pytest.fixture
def clock():
    return ManualClock()


# -- deadlines --------------------------------------------------------------------------------


def test_a_deadline_fires_through_the_scheduler_at_on_timeout(stores, clock):
    wf = expense()
    rt, reg = runtime(stores, clock, wf)
    st = rt.start_and_tick(workflow=wf)
    assert st.status == RunStatus.WAITING and st.waiting.until is not None
    sched = Scheduler(runtime=rt, registry=reg, clock=clock)
    assert sched.poll_once() == 0  # not due yet
    clock.advance(61)
    assert sched.poll_once() == 1
    done = rt.get_state(st.run_id)
    assert done.status == RunStatus.COMPLETED
    assert done.output["escalated"]["decision"]["timed_out"] is True
    assert any("timed_out" in (r["result"] or {}) for r in rt.get_ledger(st.run_id))


def test_a_deadline_survives_reopening_the_stores(stores, clock):
    if stores.kind == "memory":
        pytest.skip("in-memory stores do not outlive their objects")
    wf = expense()
    rt, _ = runtime(stores, clock, wf)
    rid = rt.start_and_tick(workflow=wf).run_id
    stores.close_all()
    clock.advance(120)
    rt2, reg2 = runtime(stores, clock, wf)
    assert Scheduler(runtime=rt2, registry=reg2, clock=clock).poll_once() == 1
    assert rt2.get_state(rid).output["escalated"]["decision"]["timed_out"] is True


def test_an_answer_in_time_wins_and_an_answer_after_the_deadline_is_refused(stores, clock):
    wf = expense()
    rt, reg = runtime(stores, clock, wf)
    a = rt.start_and_tick(workflow=wf).run_id
    b = rt.start_and_tick(workflow=wf).run_id
    clock.advance(30)
    assert rt.resume(workflow=None, run_id=a, wait_key=None, payload={"text": "approve"}).output == {
        "decision": {"text": "approve"}
    }
    clock.advance(31)
    with pytest.raises(RunNotWaitingError, match="deadline passed"):
        rt.resume(workflow=None, run_id=b, wait_key=None, payload={"text": "approve"})
    assert rt.get_state(b).output["escalated"]["decision"]["timed_out"] is True  # went on without it
    assert Scheduler(runtime=rt, registry=reg, clock=clock).poll_once() == 0  # and fires nothing twice


def test_a_deadline_without_on_timeout_resumes_where_an_answer_would(stores, clock):
    wf = expense(on_timeout=None, timeout_s=5)
    rt, reg = runtime(stores, clock, wf)
    rid = rt.start_and_tick(workflow=wf).run_id
    clock.advance(6)
    Scheduler(runtime=rt, registry=reg, clock=clock).poll_once()
    assert rt.get_state(rid).output == {
        "decision": {"timed_out": True, "deadline": rt.get_ledger(rid)[-2]["result"]["timed_out"]["deadline"]}
    }


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"prompt": "p", "timeout_s": -1}, "timeout_s must be a number"),
        ({"prompt": "p", "timeout_s": 5, "until": "2030-01-01T00:00:00+00:00"}, "not both"),
        ({"prompt": "p", "on_timeout": "x"}, "on_timeout needs a deadline"),
        ({"prompt": "p", "timeout_s": 5, "on_timeout": "nowhere"}, "on_timeout names 'nowhere'"),
    ],
)
def test_bad_deadlines_fail_the_run_with_a_message_naming_the_key(stores, clock, payload, message):
    wf = WorkflowSpec(
        workflow_id="bad",
        entry_node="a",
        nodes={"a": lambda run, ctx: StepPlan(node_id="a", effect=Effect(EffectType.ASK_USER, payload), next_node="a")},
    )
    rt, _ = runtime(stores, clock, wf)
    st = rt.start_and_tick(workflow=wf)
    assert st.status == RunStatus.FAILED and message in st.error


def test_wait_event_takes_a_deadline_too(stores, clock):
    wf = WorkflowSpec(
        workflow_id="paid",
        entry_node="wait",
        nodes={
            "wait": lambda run, ctx: StepPlan(
                node_id="wait",
                effect=Effect(
                    EffectType.WAIT_EVENT,
                    {
                        "name": "expense_paid",
                        "scope": "run",
                        "until": "2027-01-15T10:00:00+00:00",
                        "on_timeout": "late",
                    },
                    "paid",
                ),
                next_node="done",
            ),
            "late": lambda run, ctx: StepPlan(node_id="late", complete_output={"late": True}),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"paid": run.vars["paid"]}),
        },
    )
    rt, reg = runtime(stores, clock, wf)
    on_time = rt.start_and_tick(workflow=wf).run_id
    late = rt.start_and_tick(workflow=wf).run_id
    assert rt.emit_event(name="expense_paid", scope="run", run_id=on_time, payload={"amount": 5}) == [on_time]
    assert rt.get_state(on_time).output == {"paid": {"amount": 5}}
    clock.set(1_800_000_000 + 10**8)
    Scheduler(runtime=rt, registry=reg, clock=clock).poll_once()
    assert rt.get_state(late).output == {"late": True}


# -- choices and run-scoped events -------------------------------------------------------------


def test_an_answer_outside_the_choices_is_invalid_params_and_the_run_keeps_waiting(stores, clock):
    wf = expense(timeout_s=None)
    rt, _ = runtime(stores, clock, wf)
    rid = rt.start_and_tick(workflow=wf).run_id
    with pytest.raises(InvalidParamsError, match="'approve', 'reject'") as e:
        rt.resume(workflow=None, run_id=rid, wait_key=None, payload={"text": "maybe"})
    assert e.value.to_error_object()["code"] == -32602 and e.value.data["choices"] == EXPENSE_CHOICES
    assert rt.get_state(rid).status == RunStatus.WAITING
    assert rt.resume(workflow=None, run_id=rid, wait_key=None, payload={"text": "reject"}).status == RunStatus.COMPLETED


def test_a_run_scoped_event_without_a_run_id_is_invalid_params(stores, clock):
    rt, _ = runtime(stores, clock)
    with pytest.raises(InvalidParamsError, match="no run_id"):
        rt.emit_event(name="expense_paid", scope="run")


# -- retry -----------------------------------------------------------------------------------------


def test_retry_runs_a_failed_run_again_from_its_failed_node_under_the_new_code(stores, clock):
    calls = []

    def charge(run, effect):
        calls.append(run.run_id)
        return EffectOutcome.completed({"charged": 10})

    broken = {"fix": False}

    def book(run, ctx):
        if not broken["fix"]:
            raise RuntimeError("ledger API down")
        return StepPlan(node_id="book", complete_output={"booked": run.vars["charge"]})

    def charge_node(run, ctx):
        return StepPlan(
            node_id="charge", effect=Effect(EffectType.LLM_CALL, {"amount": 10}, "charge"), next_node="book"
        )

    wf = WorkflowSpec(workflow_id="pay", entry_node="charge", nodes={"charge": charge_node, "book": book})
    rt, _ = runtime(stores, clock, wf, effect_handlers={EffectType.LLM_CALL: charge})
    st = rt.start_and_tick(workflow=wf)
    assert st.status == RunStatus.FAILED and "ledger API down" in st.error
    with pytest.raises(RunNotFailedError, match="not failed"):
        rt.retry_run(rt.start(workflow=wf))
    broken["fix"] = True
    done = rt.retry_run(st.run_id)
    assert done.status == RunStatus.COMPLETED and done.output == {"booked": {"charged": 10}}
    assert calls.count(st.run_id) == 1  # the charge ran once
    assert any("retried" in (r["result"] or {}) for r in rt.get_ledger(st.run_id))
    assert rt.verify_ledger(st.run_id)["ok"]


# -- fork ------------------------------------------------------------------------------------------


def _three_steps(calls):
    def fetch(run, effect):
        calls.append(effect.payload)
        return EffectOutcome.completed({"price": 100})

    def quote(run, ctx):
        return StepPlan(
            node_id="quote", effect=Effect(EffectType.LLM_CALL, {"item": run.vars["item"]}, "q"), next_node="ask"
        )

    def ask(run, ctx):
        return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Buy?"}, "ok"), next_node="total")

    def total(run, ctx):
        return StepPlan(
            node_id="total",
            complete_output={"total": run.vars["q"]["price"] * run.vars.get("qty", 1), "ok": run.vars["ok"]},
        )

    wf = WorkflowSpec(workflow_id="buy", entry_node="quote", nodes={"quote": quote, "ask": ask, "total": total})
    return wf, {EffectType.LLM_CALL: fetch}


def test_fork_from_a_middle_record_with_changed_vars_replays_without_running_effects_again(stores, clock):
    calls = []
    wf, handlers = _three_steps(calls)
    rt, _ = runtime(stores, clock, wf, effect_handlers=handlers)
    src = rt.start_and_tick(workflow=wf, vars={"item": "pen"}).run_id
    rt.resume(workflow=None, run_id=src, wait_key=None, payload={"text": "yes"})
    assert rt.get_state(src).output == {"total": 100, "ok": {"text": "yes"}}
    ledger = rt.get_ledger(src)
    asked = next(r for r in ledger if r["status"] == "waiting")
    assert len(calls) == 1

    # After the prompt was asked, before its answer: the fork asks again, with qty 3.
    fork = rt.fork_run(src, seq=asked["seq"], vars={"qty": 3})
    assert fork.status == RunStatus.RUNNING and fork.current_node == "ask" and fork.vars["q"] == {"price": 100}
    st = rt.tick(workflow=None, run_id=fork.run_id)
    assert st.status == RunStatus.WAITING and st.waiting.prompt == "Buy?"
    st = rt.resume(workflow=None, run_id=fork.run_id, wait_key=None, payload={"text": "no"})
    assert st.output == {"total": 300, "ok": {"text": "no"}}
    assert len(calls) == 1  # the recorded fetch was not run again

    report = rt.verify_ledger(fork.run_id)
    assert report["ok"] and report["origin"] == {
        "run_id": src,
        "seq": asked["seq"],
        "record_hash": asked["record_hash"],
        "verified": True,
    }
    first = rt.get_ledger(fork.run_id)[0]
    assert first["result"]["forked"]["run_id"] == src and first["result"]["forked"]["changed_vars"] == {"qty": 3}


def test_fork_of_the_last_record_and_a_fork_of_a_fork(stores, clock):
    calls = []
    wf, handlers = _three_steps(calls)
    rt, _ = runtime(stores, clock, wf, effect_handlers=handlers)
    src = rt.start_and_tick(workflow=wf, vars={"item": "pen"}).run_id  # waits at ask
    f1 = rt.fork_run(src)
    assert f1.current_node == "ask" and f1.vars["q"] == {"price": 100}
    rt.tick(workflow=None, run_id=f1.run_id)
    rt.resume(workflow=None, run_id=f1.run_id, wait_key=None, payload={"text": "yes"})
    f2 = rt.fork_run(f1.run_id, vars={"qty": 2})
    assert f2.status == RunStatus.COMPLETED or f2.current_node == "total"
    if f2.status == RunStatus.RUNNING:
        assert rt.tick(workflow=None, run_id=f2.run_id).output == {"total": 200, "ok": {"text": "yes"}}
    assert len(calls) == 1
    assert rt.verify_ledger(f2.run_id)["origin"]["verified"]


def test_fork_refuses_a_bad_seq_and_a_changed_effect(stores, clock):
    calls = []
    wf, handlers = _three_steps(calls)
    rt, reg = runtime(stores, clock, wf, effect_handlers=handlers)
    src = rt.start_and_tick(workflow=wf, vars={"item": "pen"}).run_id
    n = len(rt.get_ledger(src))
    with pytest.raises(InvalidParamsError, match=f"records 1 to {n}"):
        rt.fork_run(src, seq=n + 1)

    def quote_changed(run, ctx):
        return StepPlan(node_id="quote", effect=Effect(EffectType.LLM_CALL, {"item": "ink"}, "q"), next_node="ask")

    changed = WorkflowSpec(workflow_id="buy", entry_node="quote", nodes={**wf.nodes, "quote": quote_changed})
    with pytest.raises(InvalidParamsError, match="now asks for"):
        rt.fork_run(src, workflow=changed)


def test_a_run_without_an_origin_record_cannot_be_forked(stores, clock):
    calls = []
    wf, handlers = _three_steps(calls)
    rs, ls = stores.open()
    rt = Runtime(run_store=rs, ledger_store=ls, effect_handlers=handlers)
    rid = rt.start_and_tick(workflow=wf, vars={"item": "pen"}).run_id
    with pytest.raises(InvalidParamsError, match="record_origin"):
        rt.fork_run(rid, workflow=wf)
