"""Written against the published `abstractruntime` 0.13 API only: it prints the same lines on
that package and on this one (tests/compat/test_published_example.py checks ours).

Five things a user of the published package does:
1. pause and unpause a run waiting on JSON files in one process, and answer it in another;
2. retry a flaky effect under a RetryPolicy, each attempt in the ledger;
3. keep a large value out of the run state as an artifact, and read it back;
4. let the scheduler fire a timer;
5. run a child workflow that asks a question, and carry its parent on.

    python examples/published_api.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

from abstractruntime import (
    Effect,
    EffectType,
    InMemoryArtifactStore,
    InMemoryLedgerStore,
    InMemoryRunStore,
    JsonFileRunStore,
    JsonlLedgerStore,
    RetryPolicy,
    RunStatus,
    Runtime,
    StepPlan,
    WorkflowSpec,
    create_scheduled_runtime,
    offload_large_values,
)
from abstractruntime.core.runtime import EffectOutcome

APPROVAL = WorkflowSpec(
    workflow_id="approval",
    entry_node="ask",
    nodes={
        "ask": lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Approve?"}, "answer"), next_node="done"
        ),
        "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"answer": run.vars["answer"]}),
    },
)


def pause_in_a_first_process(folder: str) -> None:
    rt = Runtime(run_store=JsonFileRunStore(folder), ledger_store=JsonlLedgerStore(folder))
    run_id = rt.start(workflow=APPROVAL)
    state = rt.tick(workflow=APPROVAL, run_id=run_id)
    print("1. waiting:", state.status.value, "for", state.waiting.prompt, flush=True)
    state = rt.pause_run(run_id, reason="lunch")
    print("1. paused, still waiting:", state.status.value, flush=True)
    state = rt.resume_run(run_id)
    print("1. unpaused, waiting again:", state.status.value, "for", state.waiting.prompt, flush=True)
    with open(os.path.join(folder, "run-id.txt"), "w") as f:
        f.write(run_id)


def resume_in_this_process(folder: str) -> None:
    with open(os.path.join(folder, "run-id.txt")) as f:
        run_id = f.read()
    rt = Runtime(run_store=JsonFileRunStore(folder), ledger_store=JsonlLedgerStore(folder))
    state = rt.get_state(run_id)
    print("1. found waiting in another process:", state.status.value, "for", state.waiting.prompt)
    state = rt.resume(workflow=APPROVAL, run_id=run_id, wait_key=state.waiting.wait_key, payload={"text": "yes"})
    print("1. answered:", state.status.value, state.output)


def retries() -> None:
    calls = []

    def flaky_llm(run, effect):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("provider unavailable")
        return EffectOutcome.completed({"content": "hello"})

    rt = Runtime(
        run_store=InMemoryRunStore(),
        ledger_store=InMemoryLedgerStore(),
        effect_handlers={EffectType.LLM_CALL: flaky_llm},
        effect_policy=RetryPolicy(llm_max_attempts=3, backoff_base=0.0),
    )
    wf = WorkflowSpec(
        workflow_id="llm",
        entry_node="call",
        nodes={
            "call": lambda run, ctx: StepPlan(
                node_id="call", effect=Effect(EffectType.LLM_CALL, {"prompt": "hi"}, "reply"), next_node="done"
            ),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"reply": run.vars["reply"]["content"]}),
        },
    )
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    attempts = [r["attempt"] for r in rt.get_ledger(run_id) if r["node_id"] == "call" and r["status"] == "started"]
    print("2. retried:", state.status.value, state.output, "attempts", attempts)


def artifacts() -> None:
    store = InMemoryArtifactStore()

    def fetch(run, ctx):
        page = {"url": "https://example.org", "html": "<p>" + "x" * 20_000 + "</p>"}
        run.vars["page"] = offload_large_values(page, artifact_store=store, run_id=run.run_id, max_inline_bytes=1024)
        return StepPlan(node_id="fetch", next_node="read")

    def read(run, ctx):
        html = store.load_text(run.vars["page"]["html"]["$artifact"])
        return StepPlan(node_id="read", complete_output={"url": run.vars["page"]["url"], "html_chars": len(html)})

    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), artifact_store=store)
    wf = WorkflowSpec(workflow_id="fetch", entry_node="fetch", nodes={"fetch": fetch, "read": read})
    run_id = rt.start(workflow=wf)
    state = rt.tick(workflow=wf, run_id=run_id)
    print("3. offloaded:", state.output, "artifacts", len(store.list_by_run(run_id)))


def timer() -> None:
    due = (datetime.now(timezone.utc) + timedelta(seconds=0.3)).isoformat()
    wf = WorkflowSpec(
        workflow_id="reminder",
        entry_node="wait",
        nodes={
            "wait": lambda run, ctx: StepPlan(
                node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": due}), next_node="done"
            ),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"reminded": True}),
        },
    )
    sr = create_scheduled_runtime(workflows=[wf], poll_interval_s=0.05)
    try:
        run_id, state = sr.run(wf)
        print("4. timer set:", state.status.value)
        deadline = time.monotonic() + 30
        while sr.get_state(run_id).status != RunStatus.COMPLETED and time.monotonic() < deadline:
            time.sleep(0.05)
        print("4. fired by the scheduler:", sr.get_state(run_id).status.value, sr.get_state(run_id).output)
    finally:
        sr.stop()


def child_workflow() -> None:
    parent = WorkflowSpec(
        workflow_id="parent",
        entry_node="delegate",
        nodes={
            "delegate": lambda run, ctx: StepPlan(
                node_id="delegate",
                effect=Effect(EffectType.START_SUBWORKFLOW, {"workflow_id": "approval"}, "approval"),
                next_node="done",
            ),
            "done": lambda run, ctx: StepPlan(
                node_id="done", complete_output={"approved": run.vars["approval"]["output"]["answer"]["text"]}
            ),
        },
    )
    sr = create_scheduled_runtime(workflows=[APPROVAL, parent], auto_start=False)
    parent_id, state = sr.run(parent)
    child_id = state.waiting.details["sub_run_id"]
    print("5. parent waits for its child:", state.status.value, state.waiting.reason.value)
    child = sr.respond(child_id, {"text": "yes"})
    print("5. child answered:", child.status.value)
    state = sr.resume_subworkflow_parent(child_run_id=child_id, child_output=child.output)
    print("5. parent carried on:", state.status.value, state.output)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--pause":
        pause_in_a_first_process(sys.argv[2])
        return
    folder = tempfile.mkdtemp(prefix="published-api-")
    subprocess.run([sys.executable, __file__, "--pause", folder], check=True)  # it ends: only its files are left
    resume_in_this_process(folder)
    retries()
    artifacts()
    timer()
    child_workflow()


if __name__ == "__main__":
    main()
