"""Retry and idempotency policy for effects."""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol

from .jsonutil import canonical, sha256_hex
from .models import Effect, EffectType, RetryPolicy, RunState


def compute_idempotency_key(*, run_id: str, step: int, node_id: str, effect: Effect) -> str:
    """Stable across a crash: a step replayed from the same checkpoint has the same `step`
    number (it is part of the checkpoint) and the same node and effect, so the same key."""
    try:
        body = canonical(effect.to_dict())
    except (TypeError, ValueError):
        body = repr(effect.to_dict())
    return sha256_hex(f"{run_id}|{step}|{node_id}|{body}")[:32]


class EffectPolicy(Protocol):
    def retry_for(self, effect: Effect) -> RetryPolicy: ...

    def idempotency_key(self, *, run: RunState, node_id: str, effect: Effect) -> str: ...


class DefaultEffectPolicy:
    """Per-effect-type retry policies (an `Effect.retry` overrides); one attempt by default."""

    def __init__(
        self,
        retries: Optional[Dict[Any, RetryPolicy]] = None,
        default: Optional[RetryPolicy] = None,
    ) -> None:
        self._retries = {EffectType(k).value if not isinstance(k, str) else k: v for k, v in (retries or {}).items()}
        self._default = default or RetryPolicy()

    def retry_for(self, effect: Effect) -> RetryPolicy:
        if effect.retry is not None:
            return effect.retry
        t = effect.type.value if isinstance(effect.type, EffectType) else str(effect.type)
        return self._retries.get(t, self._default)

    def idempotency_key(self, *, run: RunState, node_id: str, effect: Effect) -> str:
        return compute_idempotency_key(run_id=run.run_id, step=run.steps, node_id=node_id, effect=effect)


class NoRetryPolicy(DefaultEffectPolicy):
    """Never retries, even where an Effect asks for it."""

    def retry_for(self, effect: Effect) -> RetryPolicy:
        return RetryPolicy()
