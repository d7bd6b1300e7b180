"""Executing a node's effect: pure effects decided in memory, host effects recorded around each
attempt (with retries), external effects handed to a host as a wait.

Durability of host effects: a `started` record is durable before the handler runs, and its
outcome record before the run moves on, both under an idempotency key derived from the run, the
step number, the node and the effect. A replay after a crash therefore finds the step it was
in: a recorded result is reused (the effect already happened once); a recorded step whose
effect differs from what the node now asks is an error (`UnexpectedStepError`), not a silent
second run with other arguments.
"""

from __future__ import annotations

import time
import traceback as tb
from typing import Any, Callable, Dict, List, Optional

from .effects import EffectHandler, EffectOutcome, call_handler
from .errors import NotJsonSerializableError, UnexpectedStepError
from .jsonutil import find_unserializable
from .models import Effect, EffectType, RunState, StepRecord, WaitReason, WaitState, type_key
from .policy import EffectPolicy, NoRetryPolicy
from .tick import Tick

# Effects whose handlers only decide a wait or a value: nothing outside the run happens,
# so replaying them after a crash needs no idempotency lookup.
PURE_EFFECTS = frozenset(
    {EffectType.ASK_USER.value, EffectType.WAIT_EVENT.value, EffectType.WAIT_UNTIL.value, EffectType.ANSWER_USER.value}
)


# Effects on other runs, handled by `composition.Composition` inside the asking run's tick.
COMPOSITION_EFFECTS = frozenset({EffectType.EMIT_EVENT.value, EffectType.START_SUBWORKFLOW.value})


def new_record(run: RunState, node_id: str, effect: Optional[Effect], **kw: Any) -> StepRecord:
    return StepRecord.start(run=run, node_id=node_id, effect=effect, **kw)


def finish(rec: StepRecord, out: EffectOutcome, trace: Optional[str] = None, *, instant: bool = False) -> StepRecord:
    if out.status == "completed":
        return rec.finish_success(out.result, instant=instant)
    if out.status == "waiting" and out.wait is not None:
        return rec.finish_waiting(out.wait, instant=instant)
    return rec.finish_failure(out.error or "effect failed", trace)


def describe_unserializable(run: RunState, records: List[StepRecord], err: Exception) -> str:
    bad = find_unserializable(run.vars, "vars")
    if bad:
        return f"{bad} is not JSON-serializable; the run keeps its last checkpoint"
    for r in records:
        for label, value in (("effect", r.effect), ("result", r.result)):
            bad = find_unserializable(value, f"{label} of node {r.node_id!r}")
            if bad:
                return f"{bad} is not JSON-serializable"
    for label, value in (("output", run.output), ("waiting", run.waiting.to_dict() if run.waiting else None)):
        bad = find_unserializable(value, label)
        if bad:
            return f"{bad} is not JSON-serializable"
    return f"state is not JSON-serializable: {err}"


class EffectExecutor:
    """Runs effects for a Runtime: its handlers, its external effect types, its policy, and
    the ledger it records host effects in."""

    def __init__(self, ledger: Any, policy: EffectPolicy, handlers: Dict[str, EffectHandler], external: set) -> None:
        self.ledger = ledger
        self.policy = policy
        self.handlers = handlers
        self.external = external

    def execute(
        self,
        run: RunState,
        node_id: str,
        effect: Effect,
        nxt: Optional[str],
        t: Tick,
        composition: Callable[[str, Tick], Optional[EffectHandler]],
    ) -> EffectOutcome:
        etype = type_key(effect.type)
        if etype in self.external:
            return self._external_wait(run, node_id, effect, nxt, t)
        handler = (composition(etype, t) if etype in COMPOSITION_EFFECTS else None) or self.handlers.get(etype)
        if handler is None:
            error = f"no handler registered for effect {etype!r}"
            t.records.append(new_record(run, node_id, effect).finish_failure(error))
            return EffectOutcome.failed(error)
        if etype in PURE_EFFECTS:
            # One record: nothing happens outside the run between "started" and its outcome,
            # so the outcome record (which carries the effect) says all there is to say.
            out = _safe_call(handler, run, effect, nxt)
            t.records.append(finish(StepRecord.start(run=run, node_id=node_id, effect=effect), out, instant=True))
            return out
        return self._host_effect(run, node_id, effect, nxt, handler, t)

    def _host_effect(
        self, run: RunState, node_id: str, effect: Effect, nxt: Optional[str], handler: EffectHandler, t: Tick
    ) -> EffectOutcome:
        bad = find_unserializable(effect.payload, "payload")
        if bad:
            # The effect cannot be recorded as it is, so it is not run: the step fails, with a
            # record that names the key (and carries the effect without its payload).
            error = f"effect {type_key(effect.type)!r} of node {node_id!r}: {bad} is not JSON-serializable"
            rec = new_record(run, node_id, None).finish_failure(error)
            rec.effect = {"type": type_key(effect.type), "payload": None, "result_key": effect.result_key}
            t.records.append(rec)
            return EffectOutcome.failed(error)
        key = self.policy.idempotency_key(run=run, node_id=node_id, effect=effect)
        prior = self.ledger.find_step(run.run_id, run.steps)
        if prior is not None:
            if prior.get("idempotency_key") != key or prior.get("node_id") != node_id:
                # The code changed under a replay: the node now asks for another effect than
                # the one recorded at this step. Running it would act twice, differently.
                unexpected = UnexpectedStepError(
                    f"run {run.run_id} step {run.steps}: node {node_id!r} now asks for "
                    f"{_describe(effect.to_dict())}, but the ledger recorded {_describe(prior.get('effect'))} "
                    f"at node {prior.get('node_id')!r} (record {prior.get('seq')}); the workflow's code is not "
                    "deterministic in what it requests: restore the recorded behaviour, or retry the run from "
                    "an earlier step",
                    run_id=run.run_id,
                    step=run.steps,
                    recorded=prior.get("effect"),
                    requested=effect.to_dict(),
                )
                t.records.append(new_record(run, node_id, effect, idempotency_key=key).finish_failure(str(unexpected)))
                return EffectOutcome.failed(f"{UnexpectedStepError.__name__}: {unexpected}")
            if prior.get("status") == "completed":
                return EffectOutcome.completed(prior.get("result"))  # it happened once: reuse it
        policy = self.policy if effect.retry is None or isinstance(self.policy, NoRetryPolicy) else effect.retry
        return self._attempts(run, node_id, effect, nxt, handler, key, policy, t)

    def _attempts(
        self,
        run: RunState,
        node_id: str,
        effect: Effect,
        nxt: Optional[str],
        handler: EffectHandler,
        key: str,
        policy: Any,
        t: Tick,
    ) -> EffectOutcome:
        out = EffectOutcome.failed("effect not attempted")
        attempt = 0
        attempts = max(1, int(policy.max_attempts(effect)))
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(max(0.0, float(policy.backoff_seconds(effect=effect, attempt=attempt - 1))))
            started = new_record(run, node_id, effect, attempt=attempt, idempotency_key=key)
            # Durable before the side effect: the ledger shows the attempt even if we die in it.
            self._append_now(run, t.records + [started])
            t.records = []
            try:
                out = call_handler(handler, run, effect, nxt)
                if not isinstance(out, EffectOutcome):
                    out = EffectOutcome.failed(
                        f"handler for {effect.type} returned {type(out).__name__}, not an EffectOutcome"
                    )
                elif out.status == "completed" and out.result is not None:
                    bad = find_unserializable(out.result, "result")
                    if bad:
                        out = EffectOutcome.failed(
                            f"effect {type_key(effect.type)!r} returned {bad}, which is not JSON-serializable"
                        )
                # A failed outcome is tried again unless the handler says it would fail the same
                # way (`retryable=False`: a bad payload, a refused request).
                retry = out.status == "failed" and out.retryable
                trace = None
            except (Exception, SystemExit) as e:  # isolation boundary: a failing handler fails this attempt only
                out = EffectOutcome.failed(f"{type(e).__name__}: {e}")
                retry = True
                trace = tb.format_exc()
            rec = finish(new_record(run, node_id, effect, attempt=attempt, idempotency_key=key), out, trace)
            # Durable before the run moves on: after a crash this result is found at its step.
            self._append_now(run, [rec])
            if not (retry and attempt < attempts):
                break
        if out.status == "failed" and attempt > 1:
            out = EffectOutcome.failed(f"{out.error} (after {attempt} attempts)")
        return out

    def _append_now(self, run: RunState, records: List[StepRecord]) -> None:
        try:
            self.ledger.append_many(run.run_id, records)
        except (TypeError, ValueError) as e:
            raise NotJsonSerializableError(describe_unserializable(run, records, e)) from e

    def _external_wait(self, run: RunState, node_id: str, effect: Effect, nxt: Optional[str], t: Tick) -> EffectOutcome:
        key = self.policy.idempotency_key(run=run, node_id=node_id, effect=effect)
        wait = WaitState(
            reason=WaitReason.JOB,
            wait_key=f"job:{run.run_id}:{key[:16]}",
            resume_to_node=effect.payload.get("resume_to_node") or nxt,
            result_key=effect.result_key,
            details={"effect": effect.to_dict(), "idempotency_key": key, "node_id": node_id, "external": True},
        )
        t.records.append(new_record(run, node_id, effect, idempotency_key=key))
        t.records.append(new_record(run, node_id, effect, idempotency_key=key).finish_waiting(wait))
        return EffectOutcome.waiting(wait)


def _safe_call(handler: EffectHandler, run: RunState, effect: Effect, nxt: Optional[str]) -> EffectOutcome:
    try:
        out = call_handler(handler, run, effect, nxt)
    except (Exception, SystemExit) as e:  # isolation boundary for built-in handlers
        return EffectOutcome.failed(f"{type(e).__name__}: {e}")
    if not isinstance(out, EffectOutcome):
        return EffectOutcome.failed(f"handler returned {type(out).__name__}, not an EffectOutcome")
    return out


def _describe(effect: Any) -> str:
    if not isinstance(effect, dict):
        return repr(effect)
    payload = repr(effect.get("payload"))
    return f"{effect.get('type')!r} {payload[:200] + '...' if len(payload) > 200 else payload}"
