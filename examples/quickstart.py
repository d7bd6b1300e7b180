"""Pause and resume in memory: start a run, see it wait, answer it, read its ledger."""

from abstractruntime import Effect, EffectType, InMemoryLedgerStore, InMemoryRunStore, Runtime, StepPlan, WorkflowSpec


def ask(run, ctx):
    return StepPlan(
        node_id="ask",
        effect=Effect(EffectType.ASK_USER, {"prompt": "Ship it?", "choices": ["yes", "no"]}, result_key="answer"),
        next_node="done",
    )


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"shipped": run.vars["answer"]["text"] == "yes"})


wf = WorkflowSpec(workflow_id="ship", entry_node="ask", nodes={"ask": ask, "done": done})
rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())

run_id = rt.start(workflow=wf)
state = rt.tick(workflow=wf, run_id=run_id)
print(f"{state.status.value}: {state.waiting.prompt} {state.waiting.choices}")

state = rt.resume(workflow=wf, run_id=run_id, wait_key=state.waiting.wait_key, payload={"text": "yes"})
print(f"{state.status.value}: {state.output}")
for rec in rt.get_ledger(run_id):
    print(f"  #{rec['seq']} {rec['node_id']:<5} {rec['status']}")
print("ledger verifies:", rt.verify_ledger(run_id)["ok"])
