"""An expense that escalates when nobody answers, then waits to be paid.

The manager is asked first; if they do not answer within `manager_timeout_s` (default 120 s)
the director is asked instead; if nobody answers within `director_timeout_s` the expense is
rejected. An approved expense waits for the run-scoped event `expense_paid` (sent with
`abstractruntime emit expense_paid --run RUN_ID`), for at most `payment_timeout_s`.

Only documented effects: ASK_USER and WAIT_EVENT with a deadline (`timeout_s`, `on_timeout`),
and ANSWER_USER. See README.md, "A run you can steer".
"""

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

CHOICES = ["approve", "reject"]


def _ask(node, who, timeout_key, default_s, on_timeout, run):
    amount = run.vars.get("amount", 120)
    return StepPlan(
        node_id=node,
        effect=Effect(
            EffectType.ASK_USER,
            {
                "prompt": f"{who}: approve an expense of {amount} EUR for {run.vars.get('employee', 'someone')}?",
                "choices": CHOICES,
                "allow_free_text": False,
                "timeout_s": run.vars.get(timeout_key, default_s),
                "on_timeout": on_timeout,
            },
            result_key="decision",
        ),
        next_node="decide",
    )


def manager(run, ctx):
    return _ask("manager", "Manager", "manager_timeout_s", 120, "escalate", run)


def escalate(run, ctx):
    run.vars["escalated"] = True
    return _ask("escalate", "Director (the manager did not answer)", "director_timeout_s", 600, "timed_out", run)


def decide(run, ctx):
    if run.vars["decision"].get("text") == "approve":
        return StepPlan(node_id="decide", next_node="await_payment")
    return StepPlan(node_id="decide", next_node="rejected")


def await_payment(run, ctx):
    return StepPlan(
        node_id="await_payment",
        effect=Effect(
            EffectType.WAIT_EVENT,
            {
                "name": "expense_paid",
                "scope": "run",
                "timeout_s": run.vars.get("payment_timeout_s", 86400),
                "on_timeout": "unpaid",
            },
            result_key="payment",
        ),
        next_node="paid",
    )


def paid(run, ctx):
    return StepPlan(
        node_id="paid",
        complete_output={
            "status": "paid",
            "escalated": run.vars.get("escalated", False),
            "payment": run.vars["payment"],
        },
    )


def unpaid(run, ctx):
    return StepPlan(node_id="unpaid", complete_output={"status": "approved, not paid in time"})


def rejected(run, ctx):
    return StepPlan(
        node_id="rejected", complete_output={"status": "rejected", "escalated": run.vars.get("escalated", False)}
    )


def timed_out(run, ctx):
    return StepPlan(
        node_id="timed_out",
        effect=Effect(
            EffectType.ANSWER_USER, {"message": "Nobody answered: the expense is rejected.", "level": "warning"}
        ),
        next_node="rejected",
    )


expense = WorkflowSpec(
    workflow_id="expense",
    entry_node="manager",
    nodes={
        "manager": manager,
        "escalate": escalate,
        "decide": decide,
        "await_payment": await_payment,
        "paid": paid,
        "unpaid": unpaid,
        "rejected": rejected,
        "timed_out": timed_out,
    },
)
