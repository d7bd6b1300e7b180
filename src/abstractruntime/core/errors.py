"""One root exception and a small taxonomy with stable codes.

Each error that can cross the wire carries a numeric `CODE` and a stable `NAME`. The codes
start at 1000: JSON-RPC reserves -32768..-32000 for itself and LSP uses -32001/-32002, so
application errors stay clear of both. Each and converts itself to a JSON-RPC error object with structured
`data`. Errors also subclass the builtin the published package raised in the same place
(`KeyError` for an unknown run, `ValueError` for a bad resume) so existing `except` clauses
keep working.
"""

from __future__ import annotations

import re
from typing import Any, Dict

# Run and workflow ids: letters, digits and `_.:-`, starting with a letter or digit, at most
# 200. Stores make file names of run ids, so no valid id can name a path outside their folder.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
_ID = re.compile(ID_PATTERN)


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


class RunPausedError(RunNotWaitingError):
    """The run is paused (`Runtime.pause_run`): it takes no answer until `resume_run`."""

    CODE = 1015
    NAME = "run_paused"


class RunNotFailedError(AbstractRuntimeError, ValueError):
    """Only a failed run can be retried (fork a run to run it again from one of its steps)."""

    CODE = 1016
    NAME = "run_not_failed"


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


class InvalidRunIdError(AbstractRuntimeError, ValueError):
    """A run id with characters a store cannot use as a file name."""

    CODE = 1011
    NAME = "invalid_run_id"


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a valid id (see ID_PATTERN, and no `..`), else InvalidRunIdError."""
    if not isinstance(run_id, str) or not _ID.match(run_id) or ".." in run_id:
        raise InvalidRunIdError(
            f"invalid run id {run_id!r}: use letters, digits and _.:- (max 200)", run_id=str(run_id)[:200]
        )
    return run_id


class RunStrandedError(InvalidWorkflowError):
    """A waiting run's resume node is missing from the workflow's current version.

    A reload removed it. Nothing changed: restore the node, migrate the run, or cancel it."""

    CODE = 1012
    NAME = "run_stranded"


class UnexpectedStepError(AbstractRuntimeError):
    """A replayed step asked for another effect than the one its ledger recorded: the workflow's
    code changed what it requests (data: `recorded` and `requested`). The run fails rather than
    act a second time, differently."""

    CODE = 1014
    NAME = "unexpected_step"


class InvalidParamsError(AbstractRuntimeError, ValueError):
    """The params do not match the method's schema or the run's wait (an answer that is not one of
    its choices, a run-scoped event without a run id); `data` says what was expected. Nothing changed.

    Its code is JSON-RPC's own invalid-params code: to a client, a wrong answer is a wrong param."""

    CODE = -32602
    NAME = "invalid_params"


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
    InvalidRunIdError,
    RunStrandedError,
    StorageUnavailableError,
    UnexpectedStepError,
    RunPausedError,
    InvalidParamsError,
    RunNotFailedError,
)
