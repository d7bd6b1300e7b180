"""The kernel: models, workflow spec, effect handlers, policies, errors and the runtime loop."""

from .effects import EffectHandler, EffectOutcome
from .errors import (
    AbstractRuntimeError,
    InvalidWorkflowError,
    NotJsonSerializableError,
    RunBusyError,
    RunFinishedError,
    RunNotFoundError,
    RunNotWaitingError,
    WaitKeyMismatchError,
    WorkflowMismatchError,
    WorkflowNotFoundError,
)
from .models import (
    Effect,
    EffectType,
    RunState,
    RunStatus,
    StepPlan,
    StepRecord,
    StepStatus,
    WaitReason,
    WaitState,
)
from .policy import DefaultEffectPolicy, EffectPolicy, NoRetryPolicy, RetryPolicy, compute_idempotency_key
from .runtime import DefaultRunContext, Runtime
from .spec import WorkflowSpec

__all__ = [
    "AbstractRuntimeError",
    "DefaultEffectPolicy",
    "DefaultRunContext",
    "Effect",
    "EffectHandler",
    "EffectOutcome",
    "EffectPolicy",
    "EffectType",
    "InvalidWorkflowError",
    "NoRetryPolicy",
    "NotJsonSerializableError",
    "RetryPolicy",
    "RunBusyError",
    "RunFinishedError",
    "RunNotFoundError",
    "RunNotWaitingError",
    "RunState",
    "RunStatus",
    "Runtime",
    "StepPlan",
    "StepRecord",
    "StepStatus",
    "WaitKeyMismatchError",
    "WaitReason",
    "WaitState",
    "WorkflowMismatchError",
    "WorkflowNotFoundError",
    "WorkflowSpec",
    "compute_idempotency_key",
]
