"""An expense approval: ask a person, pause briefly, then report the decision.

Shows ASK_USER with choices, a short WAIT_UNTIL, and ANSWER_USER.
"""

from datetime import datetime, timedelta, timezone

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def ask(run, ctx):
    amount = run.vars.get("amount", 120)
    return StepPlan(
        node_id="ask",
        effect=Effect(
            EffectType.ASK_USER,
            {
                "prompt": f"Approve an expense of {amount} EUR?",
                "choices": ["approve", "reject"],
                "allow_free_text": False,
            },
            result_key="decision",
        ),
        next_node="cool_off",
    )


def cool_off(run, ctx):
    until = (datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat()
    return StepPlan(node_id="cool_off", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="report")


OUTCOME = {"approve": "approved", "reject": "rejected"}


def report(run, ctx):
    decision = (run.vars.get("decision") or {}).get("text", "reject")
    message = f"Expense {OUTCOME.get(decision, decision)}."
    return StepPlan(
        node_id="report",
        effect=Effect(EffectType.ANSWER_USER, {"message": message, "level": "info"}, "reported"),
        next_node="done",
    )


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"decision": run.vars["decision"]["text"]})


approval = WorkflowSpec(
    workflow_id="approval",
    entry_node="ask",
    nodes={"ask": ask, "cool_off": cool_off, "report": report, "done": done},
)
