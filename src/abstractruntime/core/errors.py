"""One root exception and a small taxonomy with stable codes.

Each error that can cross the wire carries a numeric `CODE` and a stable `NAME`. The codes
start at 1000: JSON-RPC reserves -32768..-32000 for itself and LSP uses -32001/-32002, so
application errors stay clear of both. Each and converts itself to a JSON-RPC error object with structured
`data`. Errors also subclass the builtin the published package raised in the same place
(`KeyError` for an unknown run, `ValueError` for a bad resume) so existing `except` clauses
keep working.
"""

from __future__ import annotations

from typing import Any, Dict


class AbstractRuntimeError(Exception):
    """Any error of the runtime (the root of the taxonomy)."""

    CODE = 1000
    NAME = "runtime_error"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data: Dict[str, Any] = data

    def __str__(self) -> str:  # KeyError subclasses would otherwise print repr()
        return self.message

    def to_error_object(self) -> Dict[str, Any]:
        return {"code": self.CODE, "message": self.message, "data": {"name": self.NAME, **self.data}}


class RunNotFoundError(AbstractRuntimeError, KeyError):
    """No run has this id."""

    CODE = 1001
    NAME = "run_not_found"


class WorkflowNotFoundError(AbstractRuntimeError, KeyError):
    """No workflow with this id is registered (served)."""

    CODE = 1002
    NAME = "workflow_not_found"


class RunNotWaitingError(AbstractRuntimeError, ValueError):
    """The run is not waiting, so it cannot be resumed."""

    CODE = 1003
    NAME = "run_not_waiting"


class WaitKeyMismatchError(AbstractRuntimeError, ValueError):
    """The run waits on another key than the one given; nothing changed."""

    CODE = 1004
    NAME = "wait_key_mismatch"


class RunFinishedError(RunNotWaitingError):
    """The run already completed, failed or was cancelled."""

    CODE = 1005
    NAME = "run_already_finished"


class InvalidWorkflowError(AbstractRuntimeError, ValueError):
    """A workflow definition is invalid, or lacks the node a run needs."""

    CODE = 1006
    NAME = "invalid_workflow"


class NotJsonSerializableError(AbstractRuntimeError, TypeError):
    """A value that must be stored is not JSON-serializable (the message names it)."""

    CODE = 1007
    NAME = "not_json_serializable"


class RunBusyError(AbstractRuntimeError):
    """Another owner holds the run's lease (it is being ticked elsewhere)."""

    CODE = 1008
    NAME = "run_busy"


class WorkflowMismatchError(AbstractRuntimeError, ValueError):
    """The run belongs to another workflow than the one given."""

    CODE = 1009
    NAME = "workflow_mismatch"


class EffectHandlerMissingError(AbstractRuntimeError):
    """No handler is registered for an effect type."""

    CODE = 1010
    NAME = "effect_handler_missing"


class RunStrandedError(InvalidWorkflowError):
    """A waiting run's resume node is missing from the workflow's current version.

    A reload removed it. Nothing changed: restore the node, migrate the run, or cancel it."""

    CODE = 1012
    NAME = "run_stranded"


class StorageUnavailableError(AbstractRuntimeError, OSError):
    """The store cannot write now (disk full, no file descriptors left, an I/O error). Nothing
    was changed; reads still work; the same request succeeds once the resource is back."""

    CODE = 1013
    NAME = "storage_unavailable"


ERROR_TYPES = (
    AbstractRuntimeError,
    RunNotFoundError,
    WorkflowNotFoundError,
    RunNotWaitingError,
    WaitKeyMismatchError,
    RunFinishedError,
    InvalidWorkflowError,
    NotJsonSerializableError,
    RunBusyError,
    WorkflowMismatchError,
    EffectHandlerMissingError,
    RunStrandedError,
    StorageUnavailableError,
)
