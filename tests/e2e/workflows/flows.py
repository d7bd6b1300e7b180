"""Workflows the daemon tests serve."""

import time

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def _ask(run, ctx):
    return StepPlan(
        node_id="ask",
        effect=Effect(EffectType.ASK_USER, {"prompt": "Continue?", "choices": ["yes", "no"]}, result_key="answer"),
        next_node="done",
    )


def _done(run, ctx):
    return StepPlan(node_id="done", complete_output={"answer": run.vars.get("answer"), "x": run.vars.get("x")})


ask = WorkflowSpec(workflow_id="ask", entry_node="ask", nodes={"ask": _ask, "done": _done})


def _nap(run, ctx):
    time.sleep(float(run.vars.get("seconds", 1.0)))
    return StepPlan(node_id="nap", complete_output={"slept": run.vars.get("seconds", 1.0)})


slow = WorkflowSpec(workflow_id="slow", entry_node="nap", nodes={"nap": _nap})


def _wait_event(run, ctx):
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"name": "go"}, "evt"), next_node="fin")


events = WorkflowSpec(
    workflow_id="events",
    entry_node="wait",
    nodes={"wait": _wait_event, "fin": lambda run, ctx: StepPlan(node_id="fin", complete_output=run.vars["evt"])},
)


def _step(run, ctx):
    run.vars["i"] = run.vars.get("i", 0) + 1
    if run.vars["i"] >= int(run.vars.get("n", 3)):
        return StepPlan(node_id="step", next_node="ask")
    return StepPlan(node_id="step", next_node="step")


steps = WorkflowSpec(workflow_id="steps", entry_node="step", nodes={"step": _step, "ask": _ask, "done": _done})


def _use_tool(run, ctx):
    calls = [{"name": "add", "arguments": {"a": run.vars.get("a", 2), "b": run.vars.get("b", 3)}, "call_id": "c1"}]
    return StepPlan(node_id="use_tool", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, "tools"), next_node="report")


def _report(run, ctx):
    return StepPlan(node_id="report", complete_output={"tools": run.vars["tools"]})


tool = WorkflowSpec(workflow_id="tool", entry_node="use_tool", nodes={"use_tool": _use_tool, "report": _report})
