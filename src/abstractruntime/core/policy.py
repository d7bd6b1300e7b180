"""How often a failing effect is tried, how long to wait in between, and its idempotency key.

The shape is the published package's: a policy answers `max_attempts(effect)` (attempts include
the first), `backoff_seconds(effect=, attempt=)` (the pause after failed attempt `attempt`:
`backoff_base * 2 ** (attempt - 1)`, capped) and `idempotency_key(run=, node_id=, effect=)`.
Only host effects (LLM and tool calls, handlers of the host's own) are retried; waits and the
other built-in effects run once whatever the policy says.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Protocol, runtime_checkable

from .jsonutil import canonical, sha256_hex
from .models import Effect, EffectType, RunState, type_key


def compute_idempotency_key(*, run_id: str, node_id: str, effect: Effect, effect_seq: int = 0) -> str:
    """32 hex characters naming one effect of one run: the same for a replay of the same step.

    The kernel passes the run's step count as `effect_seq` (it is part of the checkpoint), so a
    step replayed after a crash finds its recorded result, and the same effect asked for at two
    different steps gets two keys."""
    try:
        body = canonical(effect.to_dict())
    except (TypeError, ValueError):
        body = repr(effect.to_dict())
    return sha256_hex(f"{run_id}|{effect_seq}|{node_id}|{body}")[:32]


@runtime_checkable
class EffectPolicy(Protocol):
    def max_attempts(self, effect: Effect) -> int: ...

    def backoff_seconds(self, *, effect: Effect, attempt: int) -> float: ...

    def idempotency_key(self, *, run: RunState, node_id: str, effect: Effect) -> str: ...


def _type(effect: Effect) -> str:
    return type_key(effect.type)


class _Backoff:
    """Exponential backoff and the kernel's idempotency key, shared by the policies below."""

    _base = 1.0
    _cap = 60.0

    def backoff_seconds(self, *, effect: Effect, attempt: int) -> float:
        return max(0.0, min(self._cap, self._base * 2.0 ** (attempt - 1)))

    def idempotency_key(self, *, run: RunState, node_id: str, effect: Effect) -> str:
        return compute_idempotency_key(run_id=run.run_id, node_id=node_id, effect=effect, effect_seq=run.steps)


class RetryPolicy(_Backoff):
    """LLM calls tried `llm_max_attempts` times, tool calls `tool_max_attempts`, anything else once."""

    def __init__(
        self,
        *,
        llm_max_attempts: int = 3,
        tool_max_attempts: int = 2,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        for name, n in (("llm_max_attempts", llm_max_attempts), ("tool_max_attempts", tool_max_attempts)):
            if int(n) < 1:
                raise ValueError(f"RetryPolicy.{name} must be >= 1, got {n}")
        self.llm_max_attempts, self.tool_max_attempts = int(llm_max_attempts), int(tool_max_attempts)
        self._base, self._cap = float(backoff_base), float(backoff_max)

    @property
    def backoff_base(self) -> float:
        return self._base

    @property
    def backoff_max(self) -> float:
        return self._cap

    def max_attempts(self, effect: Effect) -> int:
        t = _type(effect)
        if t == EffectType.LLM_CALL.value:
            return self.llm_max_attempts
        if t == EffectType.TOOL_CALLS.value:
            return self.tool_max_attempts
        return 1

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(llm_max_attempts={self.llm_max_attempts}, tool_max_attempts={self.tool_max_attempts}, "
            f"backoff_base={self._base}, backoff_max={self._cap})"
        )


class DefaultEffectPolicy(_Backoff):
    """`default_max_attempts` for every effect type, except those `effect_max_attempts` names
    (keys are effect types or their string values). One attempt by default: nothing retried."""

    def __init__(
        self,
        default_max_attempts: int = 1,
        default_backoff_base: float = 1.0,
        default_backoff_max: float = 60.0,
        effect_max_attempts: Optional[Mapping[Any, int]] = None,
    ) -> None:
        if int(default_max_attempts) < 1:
            raise ValueError(f"DefaultEffectPolicy.default_max_attempts must be >= 1, got {default_max_attempts}")
        self.default_max_attempts = int(default_max_attempts)
        self._base, self._cap = float(default_backoff_base), float(default_backoff_max)
        self.effect_max_attempts: Dict[str, int] = {type_key(k): int(v) for k, v in (effect_max_attempts or {}).items()}

    @property
    def default_backoff_base(self) -> float:
        return self._base

    @property
    def default_backoff_max(self) -> float:
        return self._cap

    def max_attempts(self, effect: Effect) -> int:
        return self.effect_max_attempts.get(_type(effect), self.default_max_attempts)

    def __repr__(self) -> str:
        return (
            f"DefaultEffectPolicy(default_max_attempts={self.default_max_attempts}, default_backoff_base="
            f"{self._base}, default_backoff_max={self._cap}, effect_max_attempts={self.effect_max_attempts})"
        )


class NoRetryPolicy(DefaultEffectPolicy):
    """One attempt for every effect, even one whose `Effect(retry=...)` asks for more."""

    def __init__(self) -> None:
        super().__init__()

    def max_attempts(self, effect: Effect) -> int:
        return 1
