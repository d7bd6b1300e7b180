"""Maps workflow ids to the `WorkflowSpec`s that run them."""

from __future__ import annotations

import threading
from typing import Dict, Iterator, List, Optional

from ..core.errors import WorkflowNotFoundError
from ..core.spec import WorkflowSpec


def not_found(workflow_id: str, known: List[str]) -> WorkflowNotFoundError:
    return WorkflowNotFoundError(
        f"workflow {workflow_id!r} is not registered (serving: {', '.join(known) or 'none'})", workflow_id=workflow_id
    )


class WorkflowRegistry:
    def __init__(self, workflows: Optional[List[WorkflowSpec]] = None) -> None:
        self._lock = threading.Lock()
        self._specs: Dict[str, WorkflowSpec] = {}
        for wf in workflows or ():
            self.register(wf)

    def register(self, workflow: WorkflowSpec, *, replace: bool = False) -> None:
        """Serve `workflow` under its id. An id already registered is a ValueError unless
        `replace=True` (hot reload swaps a module's new version in this way)."""
        if not isinstance(workflow, WorkflowSpec):
            raise TypeError(f"expected a WorkflowSpec, got {type(workflow).__name__}")
        with self._lock:
            old = self._specs.get(workflow.workflow_id)
            if old is not None and old is not workflow and not replace:
                raise ValueError(
                    f"workflow {workflow.workflow_id!r} is already registered: unregister it first, or "
                    "register(workflow, replace=True)"
                )
            self._specs[workflow.workflow_id] = workflow

    def unregister(self, workflow_id: str) -> WorkflowSpec:
        """Stop serving a workflow (runs of it keep their checkpoints); KeyError if unknown."""
        with self._lock:
            wf = self._specs.pop(workflow_id, None)
            if wf is None:
                raise not_found(workflow_id, sorted(self._specs))
            return wf

    def get(self, workflow_id: str) -> Optional[WorkflowSpec]:
        return self._specs.get(workflow_id)

    def get_or_raise(self, workflow_id: str) -> WorkflowSpec:
        """The workflow, or WorkflowNotFoundError (1002) naming the ones registered: the one
        message for an unknown workflow id, wherever it was asked for."""
        wf = self._specs.get(workflow_id)
        if wf is None:
            raise not_found(workflow_id, sorted(self._specs))
        return wf

    def list_ids(self) -> List[str]:
        return sorted(self._specs)

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def __iter__(self) -> Iterator[WorkflowSpec]:
        return iter(list(self._specs.values()))
