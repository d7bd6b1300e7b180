from __future__ import annotations

import pytest

from abstractruntime import InvalidWorkflowError, StepPlan, WorkflowSpec


def n(run, ctx):
    return StepPlan(node_id="a", complete_output={})


def test_valid_spec():
    wf = WorkflowSpec(workflow_id="w", entry_node="a", nodes={"a": n})
    assert wf.get_node("a") is n and wf.has_node("a") and not wf.has_node("b")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(workflow_id="", entry_node="a", nodes={"a": n}), "workflow_id"),
        (dict(workflow_id="w", entry_node="b", nodes={"a": n}), "entry_node 'b' is not one of its nodes (a)"),
        (dict(workflow_id="w", entry_node="a", nodes={"a": 42}), "node 'a' is int, not a callable"),
        (dict(workflow_id="w", entry_node="a", nodes={}), "non-empty"),
        (dict(workflow_id="w", entry_node="a", nodes={"": n, "a": n}), "node ids must be non-empty"),
    ],
)
def test_invalid_spec_is_rejected_when_constructed(kwargs, words):
    with pytest.raises(InvalidWorkflowError) as e:
        WorkflowSpec(**kwargs)
    assert words in str(e.value)
    assert isinstance(e.value, ValueError)
