"""START_SUBWORKFLOW, child listings and the scheduled runtime's child helpers, as published."""

from __future__ import annotations

from abstractruntime import (
    Effect,
    EffectType,
    InMemoryLedgerStore,
    InMemoryRunStore,
    RunStatus,
    Runtime,
    StepPlan,
    WaitReason,
    WorkflowRegistry,
    WorkflowSpec,
    create_scheduled_runtime,
)

CHILD = WorkflowSpec(
    workflow_id="child",
    entry_node="c",
    nodes={"c": lambda run, ctx: StepPlan(node_id="c", complete_output={"got": run.vars.get("x")})},
)
ASKING_CHILD = WorkflowSpec(
    workflow_id="asking_child",
    entry_node="c",
    nodes={
        "c": lambda run, ctx: StepPlan(
            node_id="c", effect=Effect(EffectType.ASK_USER, {"prompt": "child?"}, "a"), next_node="d"
        ),
        "d": lambda run, ctx: StepPlan(node_id="d", complete_output={"answer": run.vars.get("a")}),
    },
)


def parent(payload, wid="parent"):
    return WorkflowSpec(
        workflow_id=wid,
        entry_node="n",
        nodes={
            "n": lambda run, ctx: StepPlan(
                node_id="n", effect=Effect(EffectType.START_SUBWORKFLOW, payload, "sub"), next_node="d"
            ),
            "d": lambda run, ctx: StepPlan(node_id="d", complete_output={"sub": run.vars.get("sub")}),
        },
    )


def runtime(published=None):
    runs, ledger = published.open() if published is not None else (InMemoryRunStore(), InMemoryLedgerStore())
    reg = WorkflowRegistry()
    for w in (CHILD, ASKING_CHILD):
        reg.register(w)
    return Runtime(run_store=runs, ledger_store=ledger, workflow_registry=reg), reg


def test_a_sync_subworkflow_returns_sub_run_id_and_output(published):
    rt, _ = runtime(published)
    p = parent({"workflow_id": "child", "vars": {"x": 5}})
    rid = rt.start(workflow=p)
    sub = rt.tick(workflow=p, run_id=rid).output["sub"]
    assert set(sub) == {"sub_run_id", "output"} and sub["output"] == {"got": 5}
    assert rt.get_state(sub["sub_run_id"]).parent_run_id == rid


def test_an_async_subworkflow_returns_async_true_and_sub_run_id(published):
    rt, _ = runtime(published)
    p = parent({"workflow_id": "child", "vars": {"x": 5}, "async": True})
    rid = rt.start(workflow=p)
    sub = rt.tick(workflow=p, run_id=rid).output["sub"]
    assert sub == {"sub_run_id": sub["sub_run_id"], "async": True}


def test_async_with_wait_leaves_the_parent_waiting_on_subworkflow_child_id(published):
    rt, reg = runtime(published)
    p = parent({"workflow_id": "asking_child", "async": True, "wait": True})
    reg.register(p)
    rid = rt.start(workflow=p)
    st = rt.tick(workflow=p, run_id=rid)
    child_id = st.waiting.details["sub_run_id"]
    assert st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.SUBWORKFLOW
    assert st.waiting.wait_key == f"subworkflow:{child_id}"
    assert st.waiting.details["sub_workflow_id"] == "asking_child"


def test_a_waiting_child_leaves_details_with_sub_run_id_sub_workflow_id_and_sub_waiting(published):
    rt, _ = runtime(published)
    p = parent({"workflow_id": "asking_child"})
    rid = rt.start(workflow=p)
    d = rt.tick(workflow=p, run_id=rid).waiting.details
    assert d["sub_workflow_id"] == "asking_child"
    child = rt.get_state(d["sub_run_id"])
    assert d["sub_waiting"] == {"reason": "user", "wait_key": child.waiting.wait_key}


def test_subworkflow_errors_name_the_registry_the_missing_id_or_workflow_id():
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
    p = parent({"workflow_id": "child"})
    assert "workflow_registry" in rt.tick(workflow=p, run_id=rt.start(workflow=p)).error
    rt, _ = runtime()
    p = parent({"workflow_id": "nope"})
    error = rt.tick(workflow=p, run_id=rt.start(workflow=p)).error
    assert "nope" in error and "not found" in error
    p = parent({"vars": {}})
    assert "workflow_id" in rt.tick(workflow=p, run_id=rt.start(workflow=p)).error


def test_run_stores_list_a_parents_children_by_status(published):
    rt, _ = runtime(published)
    p = parent({"workflow_id": "asking_child"})
    rid = rt.start(workflow=p)
    rt.tick(workflow=p, run_id=rid)
    kids = rt.run_store.list_children(parent_run_id=rid)
    assert [(k.workflow_id, k.status) for k in kids] == [("asking_child", RunStatus.WAITING)]
    assert rt.run_store.list_children(parent_run_id=rid, status=RunStatus.COMPLETED) == []


def test_cancel_with_children_cancels_the_run_and_its_children(published):
    runs, ledger = published.open()
    p = parent({"workflow_id": "asking_child"})
    sr = create_scheduled_runtime(
        run_store=runs, ledger_store=ledger, workflows=[CHILD, ASKING_CHILD], auto_start=False
    )
    rid, st = sr.run(p)
    child_id = st.waiting.details["sub_run_id"]
    states = sr.cancel_with_children(rid, reason="stop")
    assert [(s.workflow_id, s.status) for s in states] == [
        ("parent", RunStatus.CANCELLED),
        ("asking_child", RunStatus.CANCELLED),
    ]
    assert sr.get_state(child_id).status == RunStatus.CANCELLED


def test_resume_subworkflow_parent_returns_the_parent_carried_on(published):
    runs, ledger = published.open()
    p = parent({"workflow_id": "asking_child"})
    sr = create_scheduled_runtime(
        run_store=runs, ledger_store=ledger, workflows=[CHILD, ASKING_CHILD], auto_start=False
    )
    rid, st = sr.run(p)
    child_id = st.waiting.details["sub_run_id"]
    child = sr.respond(child_id, {"text": "hi"})
    assert child.status == RunStatus.COMPLETED
    state = sr.resume_subworkflow_parent(child_run_id=child_id, child_output=child.output)
    assert state.run_id == rid and state.status == RunStatus.COMPLETED
    assert state.output == {"sub": {"sub_run_id": child_id, "output": {"answer": {"text": "hi"}}}}
