"""Workflow definitions: a named graph of node functions, validated when constructed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from .errors import InvalidWorkflowError

# A node takes the run (mutable `run.vars`) and a context object, and returns a StepPlan.
NodeHandler = Callable[[Any, Any], Any]


@dataclass
class WorkflowSpec:
    """A workflow: `workflow_id`, the `entry_node` it starts at, and its `nodes`.

    Validated at construction so a broken definition is rejected where it is written,
    not when a run first reaches the bad node.
    """

    workflow_id: str
    entry_node: str
    nodes: Dict[str, NodeHandler]
    # A hash of the defining module's source when the workflow was loaded from a file.
    version: Optional[str] = None
    source: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"WorkflowSpec {self.workflow_id!r}"
        if not isinstance(self.workflow_id, str) or not self.workflow_id.strip():
            raise InvalidWorkflowError("WorkflowSpec.workflow_id must be a non-empty string")
        if not isinstance(self.nodes, dict) or not self.nodes:
            raise InvalidWorkflowError(f"{where}: nodes must be a non-empty dict of node_id -> function")
        for node_id, handler in self.nodes.items():
            if not isinstance(node_id, str) or not node_id.strip():
                raise InvalidWorkflowError(f"{where}: node ids must be non-empty strings, got {node_id!r}")
            if not callable(handler):
                raise InvalidWorkflowError(f"{where}: node {node_id!r} is {type(handler).__name__}, not a callable")
        if not isinstance(self.entry_node, str) or not self.entry_node.strip():
            raise InvalidWorkflowError(f"{where}: entry_node must be a non-empty string")
        if self.entry_node not in self.nodes:
            known = ", ".join(sorted(self.nodes))
            raise InvalidWorkflowError(f"{where}: entry_node {self.entry_node!r} is not one of its nodes ({known})")

    def get_node(self, node_id: str) -> NodeHandler:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise InvalidWorkflowError(
                f"workflow {self.workflow_id!r} has no node {node_id!r}",
                workflow_id=self.workflow_id,
                node_id=node_id,
            ) from None

    def has_node(self, node_id: str) -> bool:
        return node_id in self.nodes
