"""Runtime behaviour: the loop, effects, failures, retries, idempotency, composition.

Most tests run on every store backend: the runtime must behave the same whatever stores it.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from abstractruntime import (
    Effect,
    EffectOutcome,
    EffectType,
    RetryPolicy,
    RunFinishedError,
    RunNotFoundError,
    RunNotWaitingError,
    RunStatus,
    Runtime,
    StepPlan,
    WaitKeyMismatchError,
    WaitReason,
    WorkflowRegistry,
    WorkflowSpec,
)
from abstractruntime.core.clock import ManualClock


def rt_for(stores, **kw) -> Runtime:
    rs, ls = stores.open()
    return Runtime(run_store=rs, ledger_store=ls, **kw)


def wf(workflow_id, entry, **nodes) -> WorkflowSpec:
    return WorkflowSpec(workflow_id=workflow_id, entry_node=entry, nodes=nodes)


def ask_then_done(prompt="Continue?", choices=None):
    def ask(run, ctx):
        payload = {"prompt": prompt}
        if choices:
            payload["choices"] = choices
        return StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, payload, result_key="answer"), next_node="done"
        )

    def done(run, ctx):
        return StepPlan(node_id="done", complete_output={"answer": run.vars.get("answer")})

    return wf("askflow", "ask", ask=ask, done=done)


# -- the basic loop -------------------------------------------------------------------------


def test_pause_resume_complete_with_ledger(stores):
    rt = rt_for(stores)
    w = ask_then_done(choices=["yes", "no"])
    rid = rt.start(workflow=w, vars={"x": 1}, session_id="s1", actor_id="me")
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.USER
    assert st.waiting.prompt == "Continue?" and st.waiting.choices == ["yes", "no"]
    st = rt.resume(workflow=w, run_id=rid, wait_key=st.waiting.wait_key, payload={"text": "yes"})
    assert st.status == RunStatus.COMPLETED and st.output == {"answer": {"text": "yes"}}
    assert st.session_id == "s1" and st.actor_id == "me" and st.vars["x"] == 1
    led = rt.get_ledger(rid)
    assert [(r["node_id"], r["status"]) for r in led] == [
        ("ask", "waiting"),
        ("ask", "completed"),
        ("done", "completed"),
    ]
    assert led[0]["effect"]["type"] == "ask_user" and led[0]["result"]["wait"]["prompt"] == "Continue?"
    assert led[1]["result"]["resumed"]["payload"] == {"text": "yes"}
    assert rt.verify_ledger(rid)["ok"]
    assert rt.get_state(rid).status == RunStatus.COMPLETED
    assert [r.run_id for r in rt.list_runs(status=RunStatus.COMPLETED)] == [rid]


def test_pure_transitions_and_max_steps(stores):
    rt = rt_for(stores)

    def loop(run, ctx):
        run.vars["i"] = run.vars.get("i", 0) + 1
        if run.vars["i"] >= 25:
            return StepPlan(node_id="loop", complete_output={"i": run.vars["i"]})
        return StepPlan(node_id="loop", next_node="loop")

    w = wf("loop", "loop", loop=loop)
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid, max_steps=10)
    assert st.status == RunStatus.RUNNING and st.vars["i"] == 10
    assert rt.get_state(rid).vars["i"] == 10  # committed at the step budget
    st = rt.tick(workflow=w, run_id=rid, max_steps=100)
    assert st.status == RunStatus.COMPLETED and st.output == {"i": 25}


def test_tick_on_finished_run_returns_it(stores):
    rt = rt_for(stores)
    w = wf("one", "a", a=lambda run, ctx: StepPlan(node_id="a", complete_output={"ok": True}))
    rid = rt.start(workflow=w)
    assert rt.tick(workflow=w, run_id=rid).status == RunStatus.COMPLETED
    assert rt.tick(workflow=w, run_id=rid).output == {"ok": True}
    assert len(rt.get_ledger(rid)) == 1


# -- failures -------------------------------------------------------------------------------


def test_node_that_raises_fails_only_its_run(stores):
    rt = rt_for(stores)

    def boom(run, ctx):
        raise ValueError("bad input")

    w = wf("boom", "a", a=boom)
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)  # never raises
    assert st.status == RunStatus.FAILED and "ValueError: bad input" in st.error and "'a'" in st.error
    rec = rt.get_ledger(rid)[-1]
    assert rec["status"] == "failed" and "Traceback" in rec["traceback"] and "bad input" in rec["traceback"]
    other = ask_then_done()
    rid2 = rt.start(workflow=other)
    assert rt.tick(workflow=other, run_id=rid2).status == RunStatus.WAITING


def test_unknown_next_node_fails_clearly(stores):
    rt = rt_for(stores)
    w = wf("typo", "a", a=lambda run, ctx: StepPlan(node_id="a", next_node="dnoe"))
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.FAILED
    assert "next_node 'dnoe'" in st.error and "not in workflow 'typo'" in st.error


@pytest.mark.parametrize(
    "ret, words",
    [
        ({"not": "a plan"}, "returned dict, not a StepPlan"),
        (StepPlan(node_id="a"), "returned no effect, next_node or complete_output"),
    ],
)
def test_bad_node_results_fail_the_run(stores, ret, words):
    rt = rt_for(stores)
    w = wf("bad", "a", a=lambda run, ctx: ret)
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.FAILED and words in st.error


def test_unserializable_vars_fail_the_step_and_keep_the_checkpoint(stores):
    rt = rt_for(stores)

    def a(run, ctx):
        run.vars["good"] = 2
        return StepPlan(node_id="a", next_node="b")

    def b(run, ctx):
        run.vars["conn"] = {"socket": object()}
        return StepPlan(node_id="b", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}), next_node="a")

    w = wf("unser", "a", a=a, b=b)
    rid = rt.start(workflow=w, vars={"good": 1})
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.FAILED
    assert "vars['conn']['socket'] (object) is not JSON-serializable" in st.error
    stored = rt.get_state(rid)
    assert stored.status == RunStatus.FAILED and stored.vars == {"good": 1}  # the last checkpoint's vars
    assert rt.get_ledger(rid)[-1]["status"] == "failed"
    assert rt.verify_ledger(rid)["ok"]


def test_start_rejects_unserializable_vars(stores):
    rt = rt_for(stores)
    with pytest.raises(TypeError, match=r"vars\['when'\] \(datetime\)"):
        rt.start(workflow=ask_then_done(), vars={"when": datetime.now()})


# -- resume errors --------------------------------------------------------------------------


def test_resume_errors_are_typed_and_change_nothing(stores):
    rt = rt_for(stores)
    w = ask_then_done()
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    before = rt.get_state(rid).to_dict()
    with pytest.raises(WaitKeyMismatchError) as e:
        rt.resume(workflow=w, run_id=rid, wait_key="wrong", payload={"text": "x"})
    assert e.value.data["expected"] == st.waiting.wait_key and isinstance(e.value, ValueError)
    assert rt.get_state(rid).to_dict() == before
    with pytest.raises(RunNotFoundError):
        rt.resume(workflow=w, run_id="nope", wait_key=None, payload={})
    with pytest.raises(KeyError):  # the builtin the published package raised
        rt.get_state("nope")
    with pytest.raises(TypeError):
        rt.resume(workflow=w, run_id=rid, wait_key=None, payload="yes")  # type: ignore[arg-type]
    rt.resume(workflow=w, run_id=rid, wait_key=None, payload={"text": "ok"})
    with pytest.raises(RunFinishedError) as e2:
        rt.resume(workflow=w, run_id=rid, wait_key=None, payload={})
    assert isinstance(e2.value, RunNotWaitingError) and e2.value.CODE != RunNotWaitingError.CODE


def test_resume_a_running_run_is_not_waiting(stores):
    rt = rt_for(stores)
    w = ask_then_done()
    rid = rt.start(workflow=w)
    with pytest.raises(RunNotWaitingError, match="not waiting"):
        rt.resume(workflow=w, run_id=rid, wait_key=None, payload={})


def test_two_concurrent_resumes_one_wins(stores):
    rt = rt_for(stores)
    w = ask_then_done()
    rid = rt.start(workflow=w)
    key = rt.tick(workflow=w, run_id=rid).waiting.wait_key
    results, barrier = [], threading.Barrier(2)

    def answer(text):
        barrier.wait()
        try:
            results.append(rt.resume(workflow=w, run_id=rid, wait_key=key, payload={"text": text}).status)
        except RunNotWaitingError as e:
            results.append(type(e).__name__)

    ts = [threading.Thread(target=answer, args=(t,)) for t in ("a", "b")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(map(str, results)) == sorted([str(RunStatus.COMPLETED), "RunFinishedError"])
    assert sum(1 for r in rt.get_ledger(rid) if r["node_id"] == "done") == 1


# -- effects --------------------------------------------------------------------------------


def test_wait_until_past_continues_and_future_waits(stores):
    clock = ManualClock()
    rt = rt_for(stores, clock=clock)
    delta = {"s": -5}

    def w8(run, ctx):
        until = datetime.fromtimestamp(clock.time() + delta["s"], timezone.utc).isoformat()
        return StepPlan(node_id="w8", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}, "woke"), next_node="done")

    w = wf(
        "timer", "w8", w8=w8, done=lambda run, ctx: StepPlan(node_id="done", complete_output={"w": run.vars["woke"]})
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.COMPLETED and st.output["w"]["ready"] is True
    delta["s"] = 0.2
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.UNTIL and st.waiting.until
    clock.advance(0.19)
    assert rt.tick(workflow=w, run_id=rid).status == RunStatus.WAITING  # not yet due
    clock.advance(0.01)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.COMPLETED and "resumed_at" in st.output["w"]


def test_bad_effect_payloads_fail_with_reasons(stores):
    rt = rt_for(stores)
    cases = {
        "ask_user needs payload.prompt": Effect(EffectType.ASK_USER, {}),
        "is not an ISO-8601 time": Effect(EffectType.WAIT_UNTIL, {"until": "next tuesday"}),
        "wait_event needs payload.wait_key or payload.name": Effect(EffectType.WAIT_EVENT, {}),
        "no handler registered for effect 'llm_call'": Effect(EffectType.LLM_CALL, {"prompt": "hi"}),
        "choices must be a list of strings": Effect(EffectType.ASK_USER, {"prompt": "?", "choices": "yes"}),
    }
    for words, eff in cases.items():
        w = wf("bad_effect", "a", a=lambda run, ctx, eff=eff: StepPlan(node_id="a", effect=eff, next_node="a"))
        rid = rt.start(workflow=w)
        st = rt.tick(workflow=w, run_id=rid)
        assert st.status == RunStatus.FAILED and words in st.error, (words, st.error)


def test_events_by_name_and_scope(stores):
    rs, ls = stores.open()
    reg = WorkflowRegistry()
    rt = Runtime(run_store=rs, ledger_store=ls, workflow_registry=reg)

    def waiter(run, ctx):
        return StepPlan(
            node_id="wait",
            effect=Effect(
                EffectType.WAIT_EVENT, {"name": "approved", "scope": run.vars["scope"], "prompt": "Approve?"}, "evt"
            ),
            next_node="done",
        )

    w = wf(
        "waiter", "wait", wait=waiter, done=lambda run, ctx: StepPlan(node_id="done", complete_output=run.vars["evt"])
    )
    reg.register(w)
    g1 = rt.start(workflow=w, vars={"scope": "global"})
    g2 = rt.start(workflow=w, vars={"scope": "global"})
    s1 = rt.start(workflow=w, vars={"scope": "session"}, session_id="S")
    for r in (g1, g2, s1):
        st = rt.tick(workflow=w, run_id=r)
        assert (
            st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.EVENT and st.waiting.prompt == "Approve?"
        )
    assert sorted(rt.emit_event(name="approved", payload={"by": "ann"})) == sorted([g1, g2])
    assert rt.get_state(g1).output == {"by": "ann"}
    assert rt.get_state(s1).status == RunStatus.WAITING
    assert rt.emit_event(name="approved", payload={"by": "bob"}, scope="session", session_id="other") == []
    assert rt.emit_event(name="approved", payload={"by": "bob"}, scope="session", session_id="S") == [s1]
    assert rt.get_state(s1).output == {"by": "bob"}


def test_emit_event_effect_resumes_waiters(stores):
    rs, ls = stores.open()
    reg = WorkflowRegistry()
    rt = Runtime(run_store=rs, ledger_store=ls, workflow_registry=reg)
    waiter = wf(
        "w",
        "wait",
        wait=lambda run, ctx: StepPlan(
            node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"name": "go"}, "e"), next_node="d"
        ),
        d=lambda run, ctx: StepPlan(node_id="d", complete_output={"got": run.vars["e"]}),
    )
    emitter = wf(
        "emit",
        "emit",
        emit=lambda run, ctx: StepPlan(
            node_id="emit",
            effect=Effect(EffectType.EMIT_EVENT, {"name": "go", "payload": {"n": 7}}, "sent"),
            next_node="d",
        ),
        d=lambda run, ctx: StepPlan(node_id="d", complete_output=run.vars["sent"]),
    )
    reg.register(waiter)
    reg.register(emitter)
    ids = [rt.start(workflow=waiter) for _ in range(3)]
    for i in ids:
        rt.tick(workflow=waiter, run_id=i)
    e = rt.start(workflow=emitter)
    st = rt.tick(workflow=emitter, run_id=e)
    assert st.status == RunStatus.COMPLETED and sorted(st.output["resumed"]) == sorted(ids)
    assert all(rt.get_state(i).output == {"got": {"n": 7}} for i in ids)


def test_answer_user_is_recorded(stores):
    rt = rt_for(stores)
    w = wf(
        "ans",
        "a",
        a=lambda run, ctx: StepPlan(
            node_id="a",
            effect=Effect(EffectType.ANSWER_USER, {"message": "Done!", "level": "success"}, "said"),
            next_node="b",
        ),
        b=lambda run, ctx: StepPlan(node_id="b", complete_output={}),
    )
    rid = rt.start(workflow=w)
    assert rt.tick(workflow=w, run_id=rid).status == RunStatus.COMPLETED
    rec = [r for r in rt.get_ledger(rid) if r["node_id"] == "a" and r["status"] == "completed"][0]
    assert rec["result"] == {"message": "Done!", "level": "success"}


def test_host_handler_and_external_effect(stores):
    calls = []

    def llm(run, effect, default_next_node):
        calls.append(effect.payload["prompt"])
        return EffectOutcome.completed({"content": "hello " + effect.payload["prompt"]})

    rs, ls = stores.open()
    rt = Runtime(
        run_store=rs,
        ledger_store=ls,
        effect_handlers={EffectType.LLM_CALL: llm},
        external_effects=[EffectType.TOOL_CALLS],
    )
    w = wf(
        "agent",
        "think",
        think=lambda run, ctx: StepPlan(
            node_id="think", effect=Effect(EffectType.LLM_CALL, {"prompt": "bob"}, "llm"), next_node="act"
        ),
        act=lambda run, ctx: StepPlan(
            node_id="act",
            effect=Effect(
                EffectType.TOOL_CALLS,
                {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}, "call_id": "c1"}]},
                "tools",
            ),
            next_node="done",
        ),
        done=lambda run, ctx: StepPlan(
            node_id="done", complete_output={"llm": run.vars["llm"], "tools": run.vars["tools"]}
        ),
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert calls == ["bob"]
    assert st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.JOB
    eff = st.waiting.details["effect"]
    assert eff["type"] == "tool_calls" and eff["payload"]["tool_calls"][0]["name"] == "add"
    st = rt.resume(
        workflow=w, run_id=rid, wait_key=st.waiting.wait_key, payload={"results": [{"call_id": "c1", "output": 3}]}
    )
    assert st.status == RunStatus.COMPLETED
    assert st.output == {"llm": {"content": "hello bob"}, "tools": {"results": [{"call_id": "c1", "output": 3}]}}
    keyed = [r for r in rt.get_ledger(rid) if r["node_id"] == "think"]
    assert [r["status"] for r in keyed] == ["started", "completed"] and keyed[0]["idempotency_key"] == keyed[1][
        "idempotency_key"
    ]


def test_retries_record_each_attempt(stores):
    attempts = []

    def flaky(run, effect, nxt):
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("provider down")
        return EffectOutcome.completed({"ok": len(attempts)})

    rs, ls = stores.open()
    rt = Runtime(run_store=rs, ledger_store=ls, effect_handlers={EffectType.LLM_CALL: flaky})
    w = wf(
        "retry",
        "a",
        a=lambda run, ctx: StepPlan(
            node_id="a",
            effect=Effect(EffectType.LLM_CALL, {"p": 1}, "r", retry=RetryPolicy(llm_max_attempts=3, backoff_base=0.01)),
            next_node="b",
        ),
        b=lambda run, ctx: StepPlan(node_id="b", complete_output=run.vars["r"]),
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.COMPLETED and st.output == {"ok": 3}
    recs = [r for r in rt.get_ledger(rid) if r["node_id"] == "a"]
    assert [(r["attempt"], r["status"]) for r in recs] == [
        (1, "started"),
        (1, "failed"),
        (2, "started"),
        (2, "failed"),
        (3, "started"),
        (3, "completed"),
    ]
    assert len({r["idempotency_key"] for r in recs}) == 1
    assert "ConnectionError: provider down" in recs[1]["error"]

    def always(run, effect, nxt):
        raise TimeoutError("slow")

    rt.register_effect_handler(EffectType.LLM_CALL, always)
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.FAILED and "TimeoutError: slow (after 3 attempts)" in st.error


def test_recorded_effect_result_is_reused_after_a_crash(stores):
    """A replay from an older checkpoint finds the effect's result by its idempotency key."""
    calls = []

    def tool(run, effect, nxt):
        calls.append(1)
        return EffectOutcome.completed({"charged": True})

    rs, ls = stores.open()
    rt = Runtime(run_store=rs, ledger_store=ls, effect_handlers={"charge_card": tool})
    w = wf(
        "pay",
        "a",
        a=lambda run, ctx: StepPlan(node_id="a", effect=Effect("charge_card", {"amount": 5}, "res"), next_node="b"),  # type: ignore[arg-type]
        b=lambda run, ctx: StepPlan(node_id="b", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}), next_node="c"),
        c=lambda run, ctx: StepPlan(node_id="c", complete_output=run.vars["res"]),
    )
    rid = rt.start(workflow=w)
    before = rs.load(rid)  # the checkpoint a crash would leave if the tick never committed
    assert rt.tick(workflow=w, run_id=rid).status == RunStatus.WAITING
    rs.save(before)  # "crash": the run is back where it started, the ledger keeps the effect's record
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.WAITING and calls == [1]
    st = rt.resume(workflow=w, run_id=rid, wait_key=None, payload={})
    assert st.output == {"charged": True} and calls == [1]


def test_handler_returning_unserializable_result_fails_clearly(stores):
    rs, ls = stores.open()
    rt = Runtime(
        run_store=rs,
        ledger_store=ls,
        effect_handlers={EffectType.LLM_CALL: lambda r, e, n: EffectOutcome.completed({"raw": object()})},
    )
    w = wf(
        "x", "a", a=lambda run, ctx: StepPlan(node_id="a", effect=Effect(EffectType.LLM_CALL, {}, "r"), next_node="a")
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.FAILED and "result['raw'] (object)" in st.error


# -- subworkflows and cancellation ---------------------------------------------------------------


def _parent_child(reg, is_async=False):
    child = ask_then_done(prompt="Child asks")
    child = WorkflowSpec(workflow_id="child", entry_node="ask", nodes=child.nodes)
    parent = wf(
        "parent",
        "spawn",
        spawn=lambda run, ctx: StepPlan(
            node_id="spawn",
            effect=Effect(
                EffectType.START_SUBWORKFLOW, {"workflow_id": "child", "vars": {"k": 1}, "async": is_async}, "sub"
            ),
            next_node="done",
        ),
        done=lambda run, ctx: StepPlan(node_id="done", complete_output={"sub": run.vars["sub"]}),
    )
    reg.register(child)
    reg.register(parent)
    return parent, child


def test_sync_subworkflow_parent_waits_then_resumes(stores):
    rs, ls = stores.open()
    reg = WorkflowRegistry()
    rt = Runtime(run_store=rs, ledger_store=ls, workflow_registry=reg)
    parent, child = _parent_child(reg)
    pid = rt.start(workflow=parent)
    st = rt.tick(workflow=parent, run_id=pid)
    assert st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.SUBWORKFLOW
    cid = st.waiting.details["sub_run_id"]
    c = rt.get_state(cid)
    assert c.parent_run_id == pid and c.vars == {"k": 1} and c.waiting.prompt == "Child asks"
    rt.resume(workflow=child, run_id=cid, wait_key=None, payload={"text": "hi"})
    p = rt.get_state(pid)
    assert p.status == RunStatus.COMPLETED
    assert p.output == {"sub": {"sub_run_id": cid, "output": {"answer": {"text": "hi"}}}}


def test_failed_child_fails_parent_clearly(stores):
    rs, ls = stores.open()
    reg = WorkflowRegistry()
    rt = Runtime(run_store=rs, ledger_store=ls, workflow_registry=reg)
    parent, child = _parent_child(reg)
    pid = rt.start(workflow=parent)
    cid = rt.tick(workflow=parent, run_id=pid).waiting.details["sub_run_id"]
    rt.cancel_run(cid, reason="operator said no")
    p = rt.get_state(pid)
    assert p.status == RunStatus.FAILED and f"subworkflow run {cid} (child) cancelled" in p.error


def test_async_subworkflow_returns_child_id(stores):
    rs, ls = stores.open()
    reg = WorkflowRegistry()
    rt = Runtime(run_store=rs, ledger_store=ls, workflow_registry=reg)
    parent, _ = _parent_child(reg, is_async=True)
    pid = rt.start(workflow=parent)
    st = rt.tick(workflow=parent, run_id=pid)
    assert st.status == RunStatus.COMPLETED
    cid = st.output["sub"]["sub_run_id"]
    assert rt.get_state(cid).status == RunStatus.WAITING and rt.get_state(cid).parent_run_id == pid


def test_subworkflow_without_registry_fails_clearly(stores):
    rt = rt_for(stores)
    w = wf(
        "p",
        "a",
        a=lambda run, ctx: StepPlan(
            node_id="a", effect=Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "c"}), next_node="a"
        ),
    )
    rid = rt.start(workflow=w)
    assert "needs a workflow_registry" in rt.tick(workflow=w, run_id=rid).error


def test_cancel(stores):
    rs, ls = stores.open()
    reg = WorkflowRegistry()
    rt = Runtime(run_store=rs, ledger_store=ls, workflow_registry=reg)
    parent, _ = _parent_child(reg)
    pid = rt.start(workflow=parent)
    cid = rt.tick(workflow=parent, run_id=pid).waiting.details["sub_run_id"]
    st = rt.cancel_run(pid, reason="no longer needed")
    assert st.status == RunStatus.CANCELLED and st.error == "cancelled: no longer needed"
    assert rt.get_state(cid).status == RunStatus.CANCELLED  # the child goes with its parent
    assert rt.get_ledger(pid)[-1]["status"] == "cancelled"
    with pytest.raises(RunNotWaitingError):
        rt.resume(workflow=parent, run_id=pid, wait_key=None, payload={})
    done = ask_then_done()
    rid = rt.start(workflow=done)
    rt.tick(workflow=done, run_id=rid)
    rt.resume(workflow=done, run_id=rid, wait_key=None, payload={})
    before = rt.get_state(rid).to_dict()
    assert rt.cancel_run(rid).to_dict() == before  # a finished run: nothing to cancel, nothing changes


def test_a_host_effect_whose_payload_is_not_json_fails_its_step_naming_the_key(stores):
    # It used to raise out of tick and leave the run `running`, so recovery re-raised it at
    # every start.
    ran = []
    rt = rt_for(stores, effect_handlers={"custom": lambda run, effect: ran.append(1) or EffectOutcome.completed({})})
    w = wf(
        "bad_effect",
        "go",
        go=lambda run, ctx: StepPlan(node_id="go", effect=Effect("custom", {"x": {1, 2}}), next_node="done"),  # type: ignore[arg-type]
        done=lambda run, ctx: StepPlan(node_id="done", complete_output={}),
    )
    st = rt.start_and_tick(workflow=w)
    assert st.status == RunStatus.FAILED and not ran
    assert "payload['x'] (set) is not JSON-serializable" in st.error and "'custom'" in st.error
    assert rt.get_state(st.run_id).status == RunStatus.FAILED  # committed, not left running
    last = rt.get_ledger(st.run_id)[-1]
    assert last["status"] == "failed" and last["effect"] == {"type": "custom", "payload": None, "result_key": None}
    assert rt.verify_ledger(st.run_id)["ok"]


def test_a_replayed_step_that_asks_for_another_effect_fails_with_both_named(stores):
    # Like DBOS's unexpected-step error: after a crash the node's code changed what it asks
    # for at a step whose effect was already recorded. Running it again would act twice.
    ran = []
    rt = rt_for(
        stores, effect_handlers={"pay": lambda run, eff: ran.append(eff.payload) or EffectOutcome.completed({"ok": 1})}
    )

    class Crash(BaseException):
        pass

    def crash(run, ctx):
        raise Crash()  # the process "dies" after the effect was recorded, before the tick commits

    v1 = wf(
        "pay",
        "pay",
        pay=lambda run, ctx: StepPlan(node_id="pay", effect=Effect("pay", {"amount": 10}, "r"), next_node="after"),  # type: ignore[arg-type]
        after=crash,
    )
    rid = rt.start(workflow=v1)
    with pytest.raises(Crash):
        rt.tick(workflow=v1, run_id=rid)
    assert ran == [{"amount": 10}] and rt.get_state(rid).status == RunStatus.RUNNING
    # v2 asks for another amount at the same step.
    v2 = wf(
        "pay",
        "pay",
        pay=lambda run, ctx: StepPlan(node_id="pay", effect=Effect("pay", {"amount": 99}, "r"), next_node="after"),  # type: ignore[arg-type]
        after=lambda run, ctx: StepPlan(node_id="after", complete_output={}),
    )
    st = rt.tick(workflow=v2, run_id=rid)
    assert ran == [{"amount": 10}]  # not run again, with other arguments
    assert st.status == RunStatus.FAILED and st.error.startswith("UnexpectedStepError:")
    assert "'amount': 99" in st.error and "'amount': 10" in st.error
    # The same code replays fine: the recorded result is reused.
    rid2 = rt.start(workflow=v1)
    with pytest.raises(Crash):
        rt.tick(workflow=v1, run_id=rid2)
    v1_fixed = wf(
        "pay",
        "pay",
        pay=v1.nodes["pay"],
        after=lambda run, ctx: StepPlan(node_id="after", complete_output={"r": run.vars["r"]}),
    )
    st = rt.tick(workflow=v1_fixed, run_id=rid2)
    assert st.status == RunStatus.COMPLETED and st.output == {"r": {"ok": 1}} and len(ran) == 2
