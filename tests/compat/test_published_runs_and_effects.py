"""Run state and the built-in effects behave as in the published package."""

from __future__ import annotations

import copy

from abstractruntime import (
    Effect,
    EffectType,
    InMemoryLedgerStore,
    InMemoryRunStore,
    RunState,
    RunStatus,
    Runtime,
    StepPlan,
    WaitReason,
    WorkflowSpec,
)
from abstractruntime.core.runtime import EffectOutcome


def wf(wid, entry, **nodes):
    return WorkflowSpec(workflow_id=wid, entry_node=entry, nodes=nodes)


def done_with_vars(node_id="done"):
    # The workflow's own vars (the published package adds bookkeeping keys beginning with "_").
    return lambda run, ctx: StepPlan(
        node_id=node_id, complete_output={k: v for k, v in run.vars.items() if not k.startswith("_")}
    )


def test_run_status_and_wait_reason_compare_equal_to_their_string_values():
    assert RunStatus.COMPLETED == "completed" and RunStatus.WAITING == "waiting"
    assert WaitReason.USER == "user" and WaitReason.UNTIL == "until"


def test_ledger_record_statuses_compare_equal_to_started_and_completed(published):
    runs, ledger = published.open()
    rt = Runtime(
        run_store=runs,
        ledger_store=ledger,
        effect_handlers={EffectType.LLM_CALL: lambda r, e: EffectOutcome.completed({})},
    )
    w = wf(
        "l",
        "a",
        a=lambda run, ctx: StepPlan(node_id="a", effect=Effect(EffectType.LLM_CALL, {}, "r"), next_node="done"),
        done=done_with_vars(),
    )
    rid = rt.start(workflow=w)
    rt.tick(workflow=w, run_id=rid)
    statuses = [r["status"] for r in rt.get_ledger(rid)]
    assert statuses[0] == "started" and statuses.count("completed") >= 2


def test_run_state_new_takes_workflow_entry_vars_and_parent():
    run = RunState.new(workflow_id="w", entry_node="a", vars={"x": 1}, parent_run_id="p-1")
    assert (run.workflow_id, run.current_node, run.vars, run.parent_run_id) == ("w", "a", {"x": 1}, "p-1")
    assert run.status == RunStatus.RUNNING and len(run.run_id) == 36


def test_a_host_may_set_fields_of_a_state_and_save_it_again(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    w = wf(
        "h",
        "ask",
        ask=lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "a"), next_node="done"
        ),
        done=done_with_vars(),
    )
    rid = rt.start(workflow=w)
    rt.tick(workflow=w, run_id=rid)
    state = runs.load(rid)
    state.vars["host"] = "was here"
    state.status, state.waiting, state.current_node = RunStatus.RUNNING, None, "done"
    runs.save(state)
    out = rt.tick(workflow=w, run_id=rid)
    assert out.status == RunStatus.COMPLETED and out.output == {"host": "was here"}


def test_effect_handlers_may_take_run_effect_and_next_node_or_just_run_and_effect():
    def two(run, effect):
        return EffectOutcome.completed({"args": 2})

    def three(run, effect, default_next_node):
        return EffectOutcome.completed({"args": 3, "next": default_next_node})

    for handler, expected in ((two, {"args": 2}), (three, {"args": 3, "next": "done"})):
        rt = Runtime(
            run_store=InMemoryRunStore(),
            ledger_store=InMemoryLedgerStore(),
            effect_handlers={EffectType.LLM_CALL: handler},
        )
        w = wf(
            "h",
            "a",
            a=lambda run, ctx: StepPlan(node_id="a", effect=Effect(EffectType.LLM_CALL, {}, "r"), next_node="done"),
            done=done_with_vars(),
        )
        rid = rt.start(workflow=w)
        assert rt.tick(workflow=w, run_id=rid).output == {"r": expected}


def test_a_handler_that_raises_fails_its_run_with_the_error():
    def boom(run, effect):
        raise RuntimeError("provider down")

    rt = Runtime(
        run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), effect_handlers={EffectType.LLM_CALL: boom}
    )
    w = wf(
        "h", "a", a=lambda run, ctx: StepPlan(node_id="a", effect=Effect(EffectType.LLM_CALL, {}, "r"), next_node="a")
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.FAILED and "provider down" in st.error


def test_a_runtime_accepts_a_run_store_that_offers_only_save_and_load():
    class SaveLoad:
        def __init__(self):
            self.runs = {}

        def save(self, run):
            self.runs[run.run_id] = copy.deepcopy(run)

        def load(self, run_id):
            return self.runs.get(run_id)

    rt = Runtime(run_store=SaveLoad(), ledger_store=InMemoryLedgerStore())
    w = wf(
        "s",
        "ask",
        ask=lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "a"), next_node="done"
        ),
        done=done_with_vars(),
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.WAITING
    assert rt.resume(workflow=w, run_id=rid, wait_key=st.waiting.wait_key, payload={"text": "y"}).output == {
        "a": {"text": "y"}
    }


def test_answer_user_completes_at_once_with_message_and_level_message(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    w = wf(
        "a",
        "say",
        say=lambda run, ctx: StepPlan(
            node_id="say", effect=Effect(EffectType.ANSWER_USER, {"message": "hi"}, "out"), next_node="done"
        ),
        done=done_with_vars(),
    )
    rid = rt.start(workflow=w)
    assert rt.tick(workflow=w, run_id=rid).output == {"out": {"message": "hi", "level": "message"}}


def test_an_effect_with_no_next_node_completes_the_run_with_success_and_its_result(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    w = wf(
        "t",
        "say",
        say=lambda run, ctx: StepPlan(node_id="say", effect=Effect(EffectType.ANSWER_USER, {"message": "bye"}, "out")),
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.COMPLETED
    assert st.output == {"success": True, "result": {"message": "bye", "level": "message"}}


def test_a_wait_with_no_next_node_completes_the_run_with_the_answer_once_resumed():
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    w = wf(
        "t",
        "ask",
        ask=lambda run, ctx: StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "a")),
    )
    rid = rt.start(workflow=w)
    key = rt.tick(workflow=w, run_id=rid).waiting.wait_key
    st = rt.resume(workflow=w, run_id=rid, wait_key=key, payload={"text": "ok"})
    assert st.status == RunStatus.COMPLETED and st.output == {"success": True, "result": {"text": "ok"}}


def test_emit_event_with_no_registry_and_no_listener_succeeds():
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    w = wf(
        "e",
        "emit",
        emit=lambda run, ctx: StepPlan(
            node_id="emit",
            effect=Effect(EffectType.EMIT_EVENT, {"name": "x", "payload": {"a": 1}}, "res"),
            next_node="done",
        ),
        done=done_with_vars(),
    )
    rid = rt.start(workflow=w)
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.COMPLETED and st.output["res"]["name"] == "x"


def test_ask_user_and_wait_event_accept_wait_key_and_resume_to_node_in_the_payload(published):
    runs, ledger = published.open()
    rt = Runtime(run_store=runs, ledger_store=ledger)
    for etype, payload in (
        (EffectType.ASK_USER, {"prompt": "?", "wait_key": "my-key", "resume_to_node": "z"}),
        (EffectType.WAIT_EVENT, {"wait_key": "my-key", "resume_to_node": "z"}),
    ):
        w = wf(
            "k",
            "n",
            n=lambda run, ctx, etype=etype, payload=payload: StepPlan(
                node_id="n", effect=Effect(etype, payload, "_temp.x"), next_node="d"
            ),
            d=lambda run, ctx: StepPlan(node_id="d", complete_output={"via": "d"}),
            z=lambda run, ctx: StepPlan(node_id="z", complete_output={"via": "z", "x": run.vars["_temp"]["x"]}),
        )
        rid = rt.start(workflow=w)
        st = rt.tick(workflow=w, run_id=rid)
        assert (st.waiting.wait_key, st.waiting.resume_to_node) == ("my-key", "z")
        out = rt.resume(workflow=w, run_id=rid, wait_key="my-key", payload={"text": "yes", "extra": 1})
        # a dotted result_key writes a nested path; the resume payload is written whole
        assert out.output == {"via": "z", "x": {"text": "yes", "extra": 1}}
