"""A small agent: the model answers or asks for tools, the tools run, the model sees their
results, until it answers.

`lookup_order` runs at once; `refund_order` needs approval (the run waits for a person to
approve or deny it, from the editor or `abstractruntime answer`). Needs a model and
AbstractCore (`pip install 'abstractruntime[abstractcore]'`): set `[model] provider = "ollama"`
and `model = "qwen3:4b"` in the project config, or serve with `--llm-provider ollama
--llm-model qwen3:4b` (see docs/integrations/abstractcore.md). Without one, a run fails at its
first model call with a message saying exactly this.
"""

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
from abstractruntime.integrations.abstractcore import tool

ORDERS = {"A-1001": {"item": "kettle", "amount": 39.0, "status": "delivered"}}
MAX_TURNS = 4


@tool
def lookup_order(order_id: str) -> dict:
    """Look up an order by its id."""
    return ORDERS.get(order_id, {"error": f"no order {order_id}"})


@tool(policy="approval")
def refund_order(order_id: str, amount: float) -> dict:
    """Refund an order (a person approves it first)."""
    return {"order_id": order_id, "refunded": amount}


def start(run, ctx):
    question = run.vars.get("question", "Please refund my order A-1001, the kettle arrived broken.")
    run.vars["messages"] = [{"role": "user", "content": question}]
    run.vars["turns"] = 0
    return StepPlan(node_id="start", next_node="think")


def think(run, ctx):
    return StepPlan(
        node_id="think",
        effect=Effect(
            EffectType.LLM_CALL,
            {
                "messages": run.vars["messages"],
                "system_prompt": "You are a support agent. Use the tools; refund only delivered orders.",
                "tools": ["lookup_order", "refund_order"],
                "params": {"temperature": 0},
            },
            result_key="llm",
        ),
        next_node="decide",
    )


def decide(run, ctx):
    calls = run.vars["llm"]["tool_calls"]
    if not calls or run.vars["turns"] >= MAX_TURNS:
        return StepPlan(node_id="decide", complete_output={"answer": run.vars["llm"]["content"], "turns": run.vars["turns"]})
    return StepPlan(
        node_id="decide",
        effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, result_key="tool_results"),
        next_node="observe",
    )


def observe(run, ctx):
    # The model sees what it asked for and what came back (a denial included), then thinks again.
    llm, results = run.vars["llm"], run.vars["tool_results"]["results"]
    run.vars["messages"] = run.vars["messages"] + [
        {"role": "assistant", "content": llm["content"] or "", "tool_calls": llm["tool_calls"]},
        *[{"role": "tool", "tool_call_id": r["call_id"], "name": r["name"], "content": str(r.get("output", r.get("error")))} for r in results],
    ]
    run.vars["turns"] += 1
    return StepPlan(node_id="observe", next_node="think")


agent = WorkflowSpec(
    workflow_id="agent",
    entry_node="start",
    nodes={"start": start, "think": think, "decide": decide, "observe": observe},
)
