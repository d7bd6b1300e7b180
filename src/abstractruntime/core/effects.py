"""Effect outcomes, the handler signature, and the built-in handlers that only decide a wait.

A handler is `handler(run, effect, default_next_node) -> EffectOutcome` (two-argument
handlers `(run, effect)` are accepted too). `default_next_node` is the node the StepPlan
named, so a waiting effect resumes there without repeating it in its payload.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from .clock import SYSTEM_CLOCK, Clock
from .models import Effect, RunState, WaitReason, WaitState
from .timeutil import epoch_to_iso, iso_to_epoch

EffectHandler = Callable[..., "EffectOutcome"]
log = logging.getLogger("abstractruntime.runtime")


@dataclass(frozen=True)
class EffectOutcome:
    """What a handler did: completed (with a JSON-safe result), waiting, or failed."""

    status: str
    result: Optional[Dict[str, Any]] = None
    wait: Optional[WaitState] = None
    error: Optional[str] = None
    # For a failure: whether another attempt could succeed (the effect policy decides how many).
    retryable: bool = True

    @classmethod
    def completed(cls, result: Optional[Dict[str, Any]] = None) -> EffectOutcome:
        return cls(status="completed", result=result)

    @classmethod
    def waiting(cls, wait: WaitState) -> EffectOutcome:
        return cls(status="waiting", wait=wait)

    @classmethod
    def failed(cls, error: str, *, retryable: bool = True) -> EffectOutcome:
        return cls(status="failed", error=error, retryable=retryable)


def call_handler(handler: EffectHandler, run: RunState, effect: Effect, default_next_node: Optional[str]) -> Any:
    if _arity(handler) >= 3:
        return handler(run, effect, default_next_node)
    return handler(run, effect)


# Weak: hot reload makes new handler functions; the old ones (and their modules) must go.
_ARITY_CACHE: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _arity(fn: Callable[..., Any]) -> int:
    key = getattr(fn, "__func__", fn)
    try:
        n = _ARITY_CACHE.get(key)
    except TypeError:  # not weak-referenceable: work it out each time
        n = None
    if n is None:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return 3
        if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
            n = 3
        else:
            n = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        try:
            _ARITY_CACHE[key] = n
        except TypeError:
            pass
    return n


def event_wait_key(name: str, scope: Optional[str], *, session_id: Optional[str], run_id: Optional[str]) -> str:
    """The wait key of a named event. Scopes: global (default), session, run."""
    scope = (scope or "global").lower()
    if scope == "global":
        return f"event:global:{name}"
    if scope == "session":
        if not session_id:
            raise ValueError(f"event {name!r} has scope 'session' but no session_id is known: give session_id")
        return f"event:session:{session_id}:{name}"
    if scope == "run":
        if not run_id:
            raise ValueError(f"event {name!r} has scope 'run' but no run_id is known: give run_id, the run that waits")
        return f"event:run:{run_id}:{name}"
    raise ValueError(f"unknown event scope {scope!r} (expected global, session or run)")


def _choices(payload: Dict[str, Any]) -> Optional[list]:
    c = payload.get("choices")
    if c is None:
        return None
    if not isinstance(c, (list, tuple)) or not all(isinstance(x, str) for x in c):
        raise ValueError("choices must be a list of strings")
    return list(c)


# The key in `WaitState.details` of a wait with a deadline: {"on_timeout": node or None}.
# The deadline itself is the wait's `until`, so the stores' timer index fires it like a timer.
DEADLINE = "deadline"


def _deadline(p: Dict[str, Any], now: float) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """The wait's deadline (ISO) and its details entry, from `timeout_s` or `until` and
    `on_timeout`; (None, None) without one. A bad value raises ValueError naming the key."""
    timeout_s, until, on_timeout = p.get("timeout_s"), p.get("until"), p.get("on_timeout")
    if timeout_s is not None and until is not None:
        raise ValueError("give timeout_s or until, not both")
    if timeout_s is not None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        at = epoch_to_iso(now + float(timeout_s))
    elif until is not None:
        try:
            iso_to_epoch(str(until))
        except ValueError:
            raise ValueError(f"until {until!r} is not an ISO-8601 time") from None
        at = str(until)
    else:
        if on_timeout is not None:
            raise ValueError("on_timeout needs a deadline: timeout_s or until")
        if "timeout" in p:
            # Accepted and ignored, as the published package does; but say so, once per wait.
            log.warning("payload key 'timeout' sets no deadline: use timeout_s (seconds) or until (ISO-8601)")
        return None, None
    if on_timeout is not None and (not isinstance(on_timeout, str) or not on_timeout):
        raise ValueError(f"on_timeout must be a node id, got {on_timeout!r}")
    return at, {"on_timeout": on_timeout}


def _wait_details(deadline: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return {DEADLINE: deadline} if deadline is not None else None


def ask_user_handler(clock: Clock) -> EffectHandler:
    """The ASK_USER handler, placing deadlines (`timeout_s`) by `clock`."""

    def handle(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
        return _ask_user(run, effect, default_next_node, clock.time())

    return handle


def handle_ask_user(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
    return _ask_user(run, effect, default_next_node, SYSTEM_CLOCK.time())


def _ask_user(run: RunState, effect: Effect, default_next_node: Optional[str], now: float) -> EffectOutcome:
    p = effect.payload
    prompt = p.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return EffectOutcome.failed("ask_user needs payload.prompt (a non-empty string)")
    try:
        choices = _choices(p)
        until, deadline = _deadline(p, now)
    except ValueError as e:
        return EffectOutcome.failed(f"ask_user: {e}", retryable=False)
    return EffectOutcome.waiting(
        WaitState(
            reason=WaitReason.USER,
            wait_key=str(p.get("wait_key") or f"user:{run.run_id}:{run.steps}"),
            until=until,
            resume_to_node=p.get("resume_to_node") or default_next_node,
            result_key=effect.result_key,
            prompt=prompt,
            choices=choices,
            allow_free_text=bool(p.get("allow_free_text", True)),
            details=_wait_details(deadline),
        )
    )


def wait_event_handler(clock: Clock) -> EffectHandler:
    """The WAIT_EVENT handler, placing deadlines (`timeout_s`) by `clock`."""

    def handle(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
        return _wait_event(run, effect, default_next_node, clock.time())

    return handle


def handle_wait_event(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
    return _wait_event(run, effect, default_next_node, SYSTEM_CLOCK.time())


def _wait_event(run: RunState, effect: Effect, default_next_node: Optional[str], now: float) -> EffectOutcome:
    p = effect.payload
    key = p.get("wait_key")
    if not key:
        name = p.get("name")
        if not name:
            return EffectOutcome.failed("wait_event needs payload.wait_key or payload.name")
        try:
            key = event_wait_key(str(name), p.get("scope"), session_id=run.session_id, run_id=run.run_id)
        except ValueError as e:
            return EffectOutcome.failed(f"wait_event: {e}")
    try:
        choices = _choices(p)
        until, deadline = _deadline(p, now)
    except ValueError as e:
        return EffectOutcome.failed(f"wait_event: {e}", retryable=False)
    return EffectOutcome.waiting(
        WaitState(
            reason=WaitReason.EVENT,
            wait_key=str(key),
            until=until,
            resume_to_node=p.get("resume_to_node") or default_next_node,
            result_key=effect.result_key,
            prompt=p.get("prompt"),
            choices=choices,
            allow_free_text=bool(p.get("allow_free_text", True)),
            details=_wait_details(deadline),
        )
    )


def wait_until_handler(clock: Clock) -> EffectHandler:
    """The WAIT_UNTIL handler, deciding "already due" by `clock`."""

    def handle(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
        return _wait_until(run, effect, default_next_node, clock.time())

    return handle


def handle_wait_until(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
    return _wait_until(run, effect, default_next_node, SYSTEM_CLOCK.time())


def _wait_until(run: RunState, effect: Effect, default_next_node: Optional[str], now: float) -> EffectOutcome:
    until = effect.payload.get("until")
    if not until:
        return EffectOutcome.failed("wait_until needs payload.until (an ISO-8601 time)")
    try:
        due = iso_to_epoch(str(until))
    except ValueError:
        return EffectOutcome.failed(f"wait_until: {until!r} is not an ISO-8601 time")
    if due <= now:
        return EffectOutcome.completed({"until": str(until), "ready": True})
    return EffectOutcome.waiting(
        WaitState(
            reason=WaitReason.UNTIL,
            wait_key=f"until:{run.run_id}:{run.steps}",
            until=str(until),
            resume_to_node=effect.payload.get("resume_to_node") or default_next_node,
            result_key=effect.result_key,
        )
    )


def handle_answer_user(run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
    msg = effect.payload.get("message")
    if msg is None:
        return EffectOutcome.failed("answer_user needs payload.message")
    return EffectOutcome.completed({"message": str(msg), "level": str(effect.payload.get("level") or "message")})
