"""Ask for a name, greet it. The smallest pause -> resume workflow."""

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def ask_name(run, ctx):
    return StepPlan(
        node_id="ask_name",
        effect=Effect(EffectType.ASK_USER, {"prompt": "What is your name?"}, result_key="name"),
        next_node="greet",
    )


def greet(run, ctx):
    name = (run.vars.get("name") or {}).get("text", "stranger")
    return StepPlan(node_id="greet", complete_output={"greeting": f"Hello, {name}!"})


greeting = WorkflowSpec(workflow_id="greeting", entry_node="ask_name", nodes={"ask_name": ask_name, "greet": greet})
