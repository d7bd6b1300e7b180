"""Workflows the daemon benchmarks use."""

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def _ask(run, ctx):
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Continue?"}, "answer"), next_node="done")


def _done(run, ctx):
    return StepPlan(node_id="done", complete_output={"answer": run.vars.get("answer")})


ask = WorkflowSpec(workflow_id="ask", entry_node="ask", nodes={"ask": _ask, "done": _done})


def _again(run, ctx):
    # Waits again after every answer: each resume is one full round trip through a tick.
    return StepPlan(node_id="again", effect=Effect(EffectType.ASK_USER, {"prompt": "Again?"}, "answer"), next_node="again")


again = WorkflowSpec(workflow_id="again", entry_node="again", nodes={"again": _again})


def _at(run, ctx):
    # Every run of a burst waits for the same instant (vars["until"], ISO-8601).
    return StepPlan(node_id="at", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}), next_node="fired")


def _fired(run, ctx):
    return StepPlan(node_id="fired", complete_output={"fired": True})


at_instant = WorkflowSpec(workflow_id="at_instant", entry_node="at", nodes={"at": _at, "fired": _fired})
