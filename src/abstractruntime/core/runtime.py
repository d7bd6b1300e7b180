"""The execution loop: `Runtime.start`, `tick`, `resume`, and the durable commit of each tick.

Durability model (see docs/architecture.md):
- A checkpoint always sits at a node boundary: `current_node` is the next node to run and
  `vars` is the state it will see. A tick runs nodes in memory and commits once when the run
  waits, ends, or uses up `max_steps`: the step records and the checkpoint go to the stores
  together (atomically where the backend allows).
- A crash before that commit replays the tick's nodes from the last checkpoint. Nodes must
  therefore be deterministic in what they request; anything with an outside effect is an
  Effect, and effects run by host handlers are recorded (started, then completed) straight
  to the ledger under an idempotency key, so a replay reuses a recorded result instead of
  running the effect again.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback as tb
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from .clock import SYSTEM_CLOCK, Clock
from .effects import (
    EffectHandler,
    EffectOutcome,
    call_handler,
    event_wait_key,
    handle_answer_user,
    handle_ask_user,
    handle_wait_event,
    wait_until_handler,
)
from .errors import (
    AbstractRuntimeError,
    InvalidWorkflowError,
    NotJsonSerializableError,
    RunBusyError,
    RunFinishedError,
    RunNotFoundError,
    RunNotWaitingError,
    RunStrandedError,
    WaitKeyMismatchError,
    WorkflowMismatchError,
    WorkflowNotFoundError,
)
from .jsonutil import find_unserializable
from .ledger_hash import verify_ledger_chain
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
    utc_now_iso,
)
from .policy import DefaultEffectPolicy, EffectPolicy
from .spec import WorkflowSpec
from .timeutil import iso_to_epoch

log = logging.getLogger("abstractruntime.runtime")

# Effects whose handlers only decide a wait or a value: nothing outside the run happens,
# so replaying them after a crash needs no idempotency lookup.
_PURE_EFFECTS = frozenset(
    {EffectType.ASK_USER.value, EffectType.WAIT_EVENT.value, EffectType.WAIT_UNTIL.value, EffectType.ANSWER_USER.value}
)


@dataclass
class DefaultRunContext:
    """The `ctx` a node receives."""

    def now_iso(self) -> str:
        return utc_now_iso()


class _RunLocks:
    """One re-entrant lock per run id, created on demand and dropped when unused."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: Dict[str, List[Any]] = {}

    @contextmanager
    def hold(self, run_id: str, timeout: Optional[float] = None) -> Iterator[None]:
        with self._guard:
            ent = self._locks.get(run_id)
            if ent is None:
                ent = self._locks[run_id] = [threading.RLock(), 0]
            ent[1] += 1
        ok = ent[0].acquire(timeout=-1 if timeout is None else timeout)
        try:
            if not ok:
                raise RunBusyError(f"run {run_id} is busy in another tick", run_id=run_id)
            yield
        finally:
            if ok:
                ent[0].release()
            with self._guard:
                ent[1] -= 1
                if ent[1] == 0:
                    self._locks.pop(run_id, None)


@dataclass
class _Tick:
    """Per-tick scratch: records not yet committed, and work to do once the lock is released."""

    records: List[StepRecord] = field(default_factory=list)
    after: List[Callable[[], None]] = field(default_factory=list)
    # False when a parent ticks its child inline and handles the child's ending itself.
    notify_parent: bool = True


class Runtime:
    """Durable graph runner. Thread-safe: one tick per run at a time, any number of runs."""

    def __init__(
        self,
        *,
        run_store: Any,
        ledger_store: Any,
        effect_handlers: Optional[Dict[Any, EffectHandler]] = None,
        context: Optional[Any] = None,
        workflow_registry: Optional[Any] = None,
        artifact_store: Optional[Any] = None,
        effect_policy: Optional[EffectPolicy] = None,
        external_effects: Optional[Iterable[Any]] = None,
        owner_id: Optional[str] = None,
        lease_s: float = 300.0,
        clock: Optional[Clock] = None,
    ) -> None:
        self._run_store = run_store
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._ledger_store = ledger_store
        self._ctx = context or DefaultRunContext()
        self.workflow_registry = workflow_registry
        self.artifact_store = artifact_store
        self.effect_policy: EffectPolicy = effect_policy or DefaultEffectPolicy()
        self.owner_id = owner_id or f"runtime-{uuid.uuid4().hex[:12]}"
        self.lease_s = lease_s
        self._locks = _RunLocks()
        self._tls = threading.local()  # the tick a composition handler (emit, subworkflow) belongs to
        self._cancel_requests: Dict[str, Optional[str]] = {}
        self._handlers: Dict[str, EffectHandler] = {
            EffectType.ASK_USER.value: handle_ask_user,
            EffectType.WAIT_EVENT.value: handle_wait_event,
            EffectType.WAIT_UNTIL.value: wait_until_handler(self.clock),
            EffectType.ANSWER_USER.value: handle_answer_user,
            EffectType.EMIT_EVENT.value: self._handle_emit_event,
            EffectType.START_SUBWORKFLOW.value: self._handle_start_subworkflow,
        }
        for t, h in (effect_handlers or {}).items():
            self.register_effect_handler(t, h)
        self._external: Set[str] = {_type_key(t) for t in (external_effects or ())}

    # ------------------------------------------------------------------------------------
    # Configuration
    # ------------------------------------------------------------------------------------

    @property
    def run_store(self) -> Any:
        return self._run_store

    @property
    def ledger_store(self) -> Any:
        return self._ledger_store

    def register_effect_handler(self, effect_type: Any, handler: EffectHandler) -> None:
        self._handlers[_type_key(effect_type)] = handler

    def declare_external(self, effect_type: Any) -> None:
        """Effects of this type are executed outside the process: the run waits (reason
        job) with the effect in the wait's details until a host resumes it with the result."""
        self._external.add(_type_key(effect_type))

    # ------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------

    def start(
        self,
        *,
        workflow: WorkflowSpec,
        vars: Optional[Dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        session_id: Optional[str] = None,
        parent_run_id: Optional[str] = None,
        run_id: Optional[str] = None,
    ) -> str:
        """Create and durably store a new run at the workflow's entry node; returns its id."""
        run = self._new_run(workflow, vars, actor_id, session_id, parent_run_id, run_id)
        self._run_store.commit(run, [], self._ledger_store)
        return run.run_id

    def start_and_tick(
        self,
        *,
        workflow: WorkflowSpec,
        vars: Optional[Dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        session_id: Optional[str] = None,
        max_steps: int = 100,
    ) -> RunState:
        """`start` then `tick`, with one commit instead of two: the run is stored when it first
        waits or ends. A crash before that leaves no run at all (the caller got no id)."""
        run = self._new_run(workflow, vars, actor_id, session_id, None, None)
        t = _Tick()
        with self._guard(run.run_id):
            state = self._advance(workflow, run, max_steps, t)
        self._run_after(t)
        return state

    def _new_run(
        self,
        workflow: WorkflowSpec,
        vars: Optional[Dict[str, Any]],
        actor_id: Optional[str],
        session_id: Optional[str],
        parent_run_id: Optional[str],
        run_id: Optional[str],
    ) -> RunState:
        if vars is not None and not isinstance(vars, dict):
            raise TypeError(f"vars must be a dict, got {type(vars).__name__}")
        bad = find_unserializable(vars or {})
        if bad:
            raise NotJsonSerializableError(f"cannot start {workflow.workflow_id!r}: {bad} is not JSON-serializable")
        return RunState.new(
            workflow_id=workflow.workflow_id,
            entry_node=workflow.entry_node,
            vars=vars,
            actor_id=actor_id,
            session_id=session_id,
            parent_run_id=parent_run_id,
            run_id=run_id,
            workflow_version=workflow.version,
        )

    def get_state(self, run_id: str) -> RunState:
        run = self._run_store.load(run_id)
        if run is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        return run

    def get_ledger(self, run_id: str) -> List[Dict[str, Any]]:
        return self._ledger_store.list(run_id)

    def verify_ledger(self, run_id: str) -> Dict[str, Any]:
        """Check the run's hash chain: {ok, count, errors, first_bad_index, head_hash}."""
        return verify_ledger_chain(self._ledger_store.list(run_id))

    def list_runs(
        self, *, status: Any = None, workflow_id: Optional[str] = None, wait_reason: Any = None, limit: int = 100
    ) -> List[RunState]:
        return self._run_store.list_runs(status=status, workflow_id=workflow_id, wait_reason=wait_reason, limit=limit)

    def tick(self, *, workflow: WorkflowSpec, run_id: str, max_steps: int = 100) -> RunState:
        """Run nodes until the run waits, completes, fails, is cancelled or `max_steps` pass."""
        t = _Tick()
        with self._guard(run_id):
            run = self.get_state(run_id)
            _check_workflow(workflow, run)
            state = self._advance(workflow, run, max_steps, t)
        self._run_after(t)
        return state

    def resume(
        self,
        *,
        workflow: Optional[WorkflowSpec],
        run_id: str,
        wait_key: Optional[str],
        payload: Dict[str, Any],
        max_steps: int = 100,
    ) -> RunState:
        """Answer a waiting run: write `payload` to the wait's `result_key` and continue.

        A wrong `wait_key`, or a run that is not waiting, raises a typed error and changes
        nothing. `wait_key=None` accepts whatever the run waits on. `workflow=None` looks the
        run's workflow up in the `workflow_registry`.
        """
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        bad = find_unserializable(payload, "payload")
        if bad:
            raise NotJsonSerializableError(f"{bad} is not JSON-serializable")
        t = _Tick()
        with self._guard(run_id):
            run, workflow = self._load_waiting(run_id, workflow, "resumed")
            w = run.waiting
            assert w is not None
            if wait_key is not None and w.wait_key is not None and wait_key != w.wait_key:
                raise WaitKeyMismatchError(
                    f"run {run_id} waits on {w.wait_key!r}, not {wait_key!r}",
                    run_id=run_id,
                    expected=w.wait_key,
                    got=wait_key,
                )
            self._check_resume_target(workflow, run)
            _bind_version(workflow, run)
            self._apply_resume(run, payload, t)
            state = self._advance(workflow, run, max_steps, t)
        self._run_after(t)
        return state

    def _load_waiting(self, run_id: str, workflow: Optional[WorkflowSpec], verb: str) -> Tuple[RunState, WorkflowSpec]:
        """The run (which must be waiting) and its workflow; under the run's guard."""
        run = self.get_state(run_id)
        if workflow is None:  # hosts with a registry may let the run name its workflow
            workflow = self._workflow_for(run)
        _check_workflow(workflow, run)
        if run.status.is_terminal:
            raise RunFinishedError(
                f"run {run_id} already {run.status.value}; it cannot be {verb}",
                run_id=run_id,
                status=run.status.value,
            )
        if run.status != RunStatus.WAITING or run.waiting is None:
            raise RunNotWaitingError(f"run {run_id} is not waiting (status {run.status.value})", run_id=run_id)
        return run, workflow

    def cancel_run(self, run_id: str, reason: Optional[str] = None) -> RunState:
        """Cancel a run that has not finished; a run being ticked stops after its current step."""
        self._cancel_requests[run_id] = reason
        try:
            t = _Tick()
            with self._guard(run_id, timeout=60.0):
                run = self.get_state(run_id)
                if run.status == RunStatus.CANCELLED:
                    return run
                if run.status.is_terminal:
                    raise RunFinishedError(
                        f"run {run_id} already {run.status.value}; it cannot be cancelled",
                        run_id=run_id,
                        status=run.status.value,
                    )
                child = (run.waiting.details or {}).get("sub_run_id") if run.waiting else None
                self._finish_cancelled(run, reason, t)
            self._run_after(t)
            if child:
                try:
                    self.cancel_run(child, reason=f"parent run {run_id} was cancelled")
                except (RunFinishedError, RunNotFoundError):
                    pass
            return run
        finally:
            self._cancel_requests.pop(run_id, None)

    def migrate_run(
        self, run_id: str, *, to_node: Optional[str] = None, workflow: Optional[WorkflowSpec] = None
    ) -> RunState:
        """Move a waiting run on to the workflow's current version, resuming at `to_node`.

        For runs a code change stranded (their resume node is gone). Without `to_node` the run
        keeps its resume node if the current version has it, else goes back to the entry node;
        its vars and its wait are kept, and the ledger records the move.
        """
        t = _Tick()
        with self._guard(run_id):
            run, workflow = self._load_waiting(run_id, workflow, "migrated")
            w = run.waiting
            assert w is not None
            old_node = w.resume_to_node or run.current_node
            target = to_node or (old_node if old_node in workflow.nodes else workflow.entry_node)
            if target not in workflow.nodes:
                raise InvalidWorkflowError(
                    f"workflow {workflow.workflow_id!r} version {workflow.version or 'unversioned'} has no node "
                    f"{target!r} (nodes: {', '.join(workflow.nodes)})",
                    run_id=run_id,
                    node_id=target,
                )
            old_version = run.last_version or run.workflow_version
            w.resume_to_node = target
            _bind_version(workflow, run)
            rec = self._record(run, run.current_node, None)
            t.records.append(
                rec.finish_success(
                    {
                        "migrated": {
                            "from_node": old_node,
                            "to_node": target,
                            "from_version": old_version,
                            "to_version": workflow.version,
                        }
                    }
                )
            )
            state = self._commit(run, t)
        self._run_after(t)
        return state

    def emit_event(
        self,
        *,
        name: Optional[str] = None,
        payload: Any = None,
        scope: Optional[str] = None,
        session_id: Optional[str] = None,
        run_id: Optional[str] = None,
        wait_key: Optional[str] = None,
        workflow: Optional[WorkflowSpec] = None,
    ) -> List[str]:
        """Resume every run waiting on this event; returns the ids of the runs resumed."""
        key = wait_key or event_wait_key(str(name), scope, session_id=session_id, run_id=run_id)
        resumed = []
        body = payload if isinstance(payload, dict) else {"value": payload}
        for rid in self._run_store.find_waiting_on(key):
            try:
                run = self.get_state(rid)
                wf = self._workflow_for(run, workflow)
                self.resume(workflow=wf, run_id=rid, wait_key=key, payload=body)
                resumed.append(rid)
            except (RunNotWaitingError, WaitKeyMismatchError, RunNotFoundError):
                continue  # answered by someone else meanwhile
            except (WorkflowNotFoundError, RunStrandedError) as e:
                log.warning("event %s: cannot resume run %s: %s", key, rid, e)
        return resumed

    # ------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------

    @contextmanager
    def _guard(self, run_id: str, timeout: Optional[float] = None) -> Iterator[None]:
        with self._locks.hold(run_id, timeout):
            if not self._run_store.try_lease(run_id, self.owner_id, self.lease_s):
                raise RunBusyError(f"run {run_id} is leased by another runtime", run_id=run_id)
            try:
                yield
            finally:
                self._run_store.release_lease(run_id, self.owner_id)

    def _advance(self, workflow: WorkflowSpec, run: RunState, max_steps: int, t: _Tick) -> RunState:
        if run.status.is_terminal:
            return run
        _bind_version(workflow, run)
        if run.status == RunStatus.WAITING:
            if not self._unblock_if_ready(workflow, run, t):
                return run
            if run.status != RunStatus.RUNNING:
                return self._commit(run, t)
        steps = 0
        while True:
            if run.run_id in self._cancel_requests:
                return self._finish_cancelled(run, self._cancel_requests[run.run_id], t)
            if steps >= max_steps:
                return self._commit(run, t)
            steps += 1
            node_id = run.current_node
            handler = workflow.nodes.get(node_id)
            if handler is None:
                return self._fail(run, t, node_id, f"workflow {workflow.workflow_id!r} has no node {node_id!r}")
            run.steps += 1
            try:
                plan = handler(run, self._ctx)
            except (Exception, SystemExit) as e:  # isolation boundary: a node that raises (or exits) fails only its run
                return self._fail(
                    run, t, node_id, f"node {node_id!r} raised {type(e).__name__}: {e}", traceback=tb.format_exc()
                )
            if not isinstance(plan, StepPlan):
                return self._fail(run, t, node_id, f"node {node_id!r} returned {type(plan).__name__}, not a StepPlan")

            if plan.complete_output is not None:
                run.status = RunStatus.COMPLETED
                run.output = plan.complete_output
                rec = self._record(run, node_id, None).finish_success({"output": plan.complete_output})
                t.records.append(rec)
                return self._commit(run, t)

            nxt = plan.next_node
            if nxt is not None and nxt not in workflow.nodes:
                return self._fail(
                    run,
                    t,
                    node_id,
                    f"node {node_id!r} names next_node {nxt!r}, which is not in workflow {workflow.workflow_id!r}",
                )
            if plan.effect is None:
                if nxt is None:
                    return self._fail(
                        run, t, node_id, f"node {node_id!r} returned no effect, next_node or complete_output"
                    )
                t.records.append(self._record(run, node_id, None).finish_success({"next_node": nxt}))
                run.current_node = nxt
                continue

            outcome = self._execute(workflow, run, node_id, plan.effect, nxt, t)
            if outcome.status == "failed":
                return self._fail(run, t, node_id, outcome.error or "effect failed", recorded=True)
            if outcome.status == "waiting":
                assert outcome.wait is not None
                run.status = RunStatus.WAITING
                run.waiting = outcome.wait
                return self._commit(run, t)
            if plan.effect.result_key and outcome.result is not None:
                set_nested(run.vars, plan.effect.result_key, outcome.result)
            if nxt is None:
                return self._fail(run, t, node_id, f"node {node_id!r} requested an effect but named no next_node")
            run.current_node = nxt

    def _record(self, run: RunState, node_id: str, effect: Optional[Effect], **kw: Any) -> StepRecord:
        return StepRecord.start(run=run, node_id=node_id, effect=effect, **kw)

    def _execute(
        self, workflow: WorkflowSpec, run: RunState, node_id: str, effect: Effect, nxt: Optional[str], t: _Tick
    ) -> EffectOutcome:
        etype = _type_key(effect.type)
        if etype in self._external:
            return self._external_wait(run, node_id, effect, nxt, t)
        handler = self._handlers.get(etype)
        if handler is None:
            rec = self._record(run, node_id, effect).finish_failure(f"no handler registered for effect {etype!r}")
            t.records.append(rec)
            return EffectOutcome.failed(f"no handler registered for effect {etype!r}")
        if etype in _PURE_EFFECTS:
            # One record: nothing happens outside the run between "started" and its outcome,
            # so the outcome record (which carries the effect) says all there is to say.
            out = _safe_call(handler, run, effect, nxt)
            t.records.append(self._finish(self._record(run, node_id, effect), out))
            return out
        return self._execute_host_effect(workflow, run, node_id, effect, nxt, handler, t)

    def _execute_host_effect(
        self,
        workflow: WorkflowSpec,
        run: RunState,
        node_id: str,
        effect: Effect,
        nxt: Optional[str],
        handler: EffectHandler,
        t: _Tick,
    ) -> EffectOutcome:
        bad = find_unserializable(effect.payload, "payload")
        if bad:
            # The effect cannot be recorded as it is, so it is not run: the step fails, with a
            # record that names the key (and carries the effect without its payload).
            error = f"effect {_type_key(effect.type)!r} of node {node_id!r}: {bad} is not JSON-serializable"
            rec = self._record(run, node_id, None).finish_failure(error)
            rec.effect = {"type": _type_key(effect.type), "payload": None, "result_key": effect.result_key}
            t.records.append(rec)
            return EffectOutcome.failed(error)
        key = self.effect_policy.idempotency_key(run=run, node_id=node_id, effect=effect)
        # A result recorded before a crash is reused: the effect already happened once.
        done = self._ledger_store.find_completed(run.run_id, key)
        if done is not None:
            return EffectOutcome.completed(done.get("result"))
        policy = self.effect_policy.retry_for(effect)
        prev_tick, self._tls.tick = getattr(self._tls, "tick", None), t
        try:
            return self._attempts(run, node_id, effect, nxt, handler, key, policy, t)
        finally:
            self._tls.tick = prev_tick

    def _attempts(
        self,
        run: RunState,
        node_id: str,
        effect: Effect,
        nxt: Optional[str],
        handler: EffectHandler,
        key: str,
        policy: Any,
        t: _Tick,
    ) -> EffectOutcome:
        out = EffectOutcome.failed("effect not attempted")
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1:
                time.sleep(policy.delay_before(attempt))
            started = self._record(run, node_id, effect, attempt=attempt, idempotency_key=key)
            # Durable before the side effect: the ledger shows the attempt even if we die in it.
            self._append_now(run, t.records + [started], t)
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
                            f"effect {_type_key(effect.type)!r} returned {bad}, which is not JSON-serializable"
                        )
                retry = False
                trace = None
            except (Exception, SystemExit) as e:  # isolation boundary: a failing handler fails this attempt only
                out = EffectOutcome.failed(f"{type(e).__name__}: {e}")
                retry = True
                trace = tb.format_exc()
            rec = self._finish(self._record(run, node_id, effect, attempt=attempt, idempotency_key=key), out, trace)
            # Durable before the run moves on: after a crash this result is found by its key.
            self._append_now(run, [rec], t)
            if not (retry and attempt < policy.max_attempts):
                break
        if out.status == "failed" and attempt > 1:
            out = EffectOutcome.failed(f"{out.error} (after {attempt} attempts)")
        return out

    def _append_now(self, run: RunState, records: List[StepRecord], t: _Tick) -> None:
        try:
            self._ledger_store.append_many(run.run_id, records)
        except (TypeError, ValueError) as e:
            raise NotJsonSerializableError(_describe_unserializable(run, records, e)) from e

    def _finish(self, rec: StepRecord, out: EffectOutcome, trace: Optional[str] = None) -> StepRecord:
        if out.status == "completed":
            return rec.finish_success(out.result)
        if out.status == "waiting" and out.wait is not None:
            return rec.finish_waiting(out.wait)
        return rec.finish_failure(out.error or "effect failed", trace)

    def _external_wait(
        self, run: RunState, node_id: str, effect: Effect, nxt: Optional[str], t: _Tick
    ) -> EffectOutcome:
        key = self.effect_policy.idempotency_key(run=run, node_id=node_id, effect=effect)
        wait = WaitState(
            reason=WaitReason.JOB,
            wait_key=f"job:{run.run_id}:{key[:16]}",
            resume_to_node=effect.payload.get("resume_to_node") or nxt,
            result_key=effect.result_key,
            details={"effect": effect.to_dict(), "idempotency_key": key, "node_id": node_id, "external": True},
        )
        t.records.append(self._record(run, node_id, effect, idempotency_key=key))
        t.records.append(self._record(run, node_id, effect, idempotency_key=key).finish_waiting(wait))
        return EffectOutcome.waiting(wait)

    # ------------------------------------------------------------------------------------
    # Waits
    # ------------------------------------------------------------------------------------

    def _unblock_if_ready(self, workflow: WorkflowSpec, run: RunState, t: _Tick) -> bool:
        """Continue a wait that needs no answer from outside: a due timer, a finished child."""
        w = run.waiting
        if w is None:
            run.status = RunStatus.RUNNING
            return True
        if w.reason == WaitReason.UNTIL and w.until:
            try:
                due = iso_to_epoch(w.until) <= self.clock.time()
            except ValueError:
                due = True
            if due:
                self._check_resume_target(workflow, run)
                self._apply_resume(run, {"until": w.until, "resumed_at": utc_now_iso()}, t)
            return due
        if w.reason == WaitReason.SUBWORKFLOW:
            child_id = (w.details or {}).get("sub_run_id")
            child = self._run_store.load(child_id) if child_id else None
            if child is None or not child.status.is_terminal:
                return False
            if child.status == RunStatus.COMPLETED:
                self._check_resume_target(workflow, run)
                self._apply_resume(run, {"sub_run_id": child.run_id, "output": child.output}, t)
                return True
            self._fail(
                run,
                t,
                run.current_node,
                f"subworkflow run {child.run_id} ({child.workflow_id}) {child.status.value}: {child.error or 'no error given'}",
                commit=False,
            )
            return True
        return False

    def _check_resume_target(self, workflow: WorkflowSpec, run: RunState) -> None:
        w = run.waiting
        target = (w.resume_to_node if w else None) or run.current_node
        if target not in workflow.nodes:
            waited_under = run.last_version or run.workflow_version
            raise RunStrandedError(
                f"run {run.run_id} is stranded: it would resume at node {target!r}, which workflow "
                f"{workflow.workflow_id!r} version {workflow.version or 'unversioned'} does not have (the run "
                f"waits under version {waited_under or 'unversioned'}); restore the node, migrate the run "
                "to another node, or cancel it",
                run_id=run.run_id,
                workflow_id=workflow.workflow_id,
                node_id=target,
                workflow_version=workflow.version,
                run_version=waited_under,
            )

    def _apply_resume(self, run: RunState, payload: Dict[str, Any], t: _Tick) -> None:
        w = run.waiting
        assert w is not None
        if w.result_key:
            set_nested(run.vars, w.result_key, payload)
        rec = self._record(run, run.current_node, None)
        rec.finish_success({"resumed": {"wait_key": w.wait_key, "reason": w.reason.value, "payload": payload}})
        t.records.append(rec)
        run.status = RunStatus.RUNNING
        run.waiting = None
        if w.resume_to_node:
            run.current_node = w.resume_to_node

    # ------------------------------------------------------------------------------------
    # Endings and commits
    # ------------------------------------------------------------------------------------

    def _fail(
        self,
        run: RunState,
        t: _Tick,
        node_id: str,
        error: str,
        traceback: Optional[str] = None,
        recorded: bool = False,
        commit: bool = True,
    ) -> RunState:
        run.status = RunStatus.FAILED
        run.error = error
        run.waiting = None
        if not recorded:
            t.records.append(self._record(run, node_id, None).finish_failure(error, traceback))
        return self._commit(run, t) if commit else run

    def _finish_cancelled(self, run: RunState, reason: Optional[str], t: _Tick) -> RunState:
        run.status = RunStatus.CANCELLED
        run.waiting = None
        run.error = f"cancelled: {reason}" if reason else "cancelled"
        rec = self._record(run, run.current_node, None)
        rec.status = StepStatus.CANCELLED
        rec.result = {"reason": reason}
        rec.ended_at = utc_now_iso()
        t.records.append(rec)
        return self._commit(run, t)

    def _commit(self, run: RunState, t: _Tick) -> RunState:
        run.updated_at = utc_now_iso()
        records, t.records = t.records, []
        try:
            self._run_store.commit(run, records, self._ledger_store)
        except (TypeError, ValueError) as e:
            # Nothing was written (stores serialize before they write): keep the last
            # checkpoint, fail the run from there, and say which key could not be stored.
            msg = _describe_unserializable(run, records, e)
            last = self._run_store.load(run.run_id)
            if last is None:
                raise NotJsonSerializableError(msg) from e
            node_id = run.current_node
            last.status = RunStatus.FAILED
            last.error = msg
            last.waiting = None
            last.updated_at = utc_now_iso()
            last.steps = run.steps
            rec = StepRecord.start(run=last, node_id=node_id, effect=None).finish_failure(msg)
            self._run_store.commit(last, [rec], self._ledger_store)
            run = last
        if run.status.is_terminal and run.parent_run_id and t.notify_parent:
            finished = run
            t.after.append(lambda: self._notify_parent(finished))
        return run

    def _run_after(self, t: _Tick) -> None:
        while t.after:
            fn = t.after.pop(0)
            try:
                fn()
            except AbstractRuntimeError as e:
                log.warning("follow-up after tick failed: %s", e)

    # ------------------------------------------------------------------------------------
    # Composition: events and subworkflows
    # ------------------------------------------------------------------------------------

    def _workflow_for(self, run: RunState, hint: Optional[WorkflowSpec] = None) -> WorkflowSpec:
        if hint is not None and hint.workflow_id == run.workflow_id:
            return hint
        if self.workflow_registry is not None:
            wf = self.workflow_registry.get(run.workflow_id)
            if wf is not None:
                return wf
        raise WorkflowNotFoundError(
            f"workflow {run.workflow_id!r} of run {run.run_id} is not registered", workflow_id=run.workflow_id
        )

    def _handle_emit_event(self, run: RunState, effect: Effect, default_next_node: Optional[str]) -> EffectOutcome:
        p = effect.payload
        name = p.get("name")
        if not name and not p.get("wait_key"):
            return EffectOutcome.failed("emit_event needs payload.name")
        try:
            key = p.get("wait_key") or event_wait_key(
                str(name), p.get("scope"), session_id=p.get("session_id") or run.session_id, run_id=p.get("run_id")
            )
        except ValueError as e:
            return EffectOutcome.failed(f"emit_event: {e}")
        targets = [r for r in self._run_store.find_waiting_on(key) if r != run.run_id]
        body = p.get("payload")
        # The resumes happen after this run's tick has committed and released its lock, so
        # two runs that signal each other cannot deadlock.
        t = self._tls.tick
        t.after.append(lambda: self.emit_event(wait_key=key, payload=body))
        return EffectOutcome.completed({"name": name, "wait_key": key, "resumed": targets})

    def _handle_start_subworkflow(
        self, run: RunState, effect: Effect, default_next_node: Optional[str]
    ) -> EffectOutcome:
        p = effect.payload
        wf_id = p.get("workflow_id")
        if not wf_id:
            return EffectOutcome.failed("start_subworkflow needs payload.workflow_id")
        if self.workflow_registry is None:
            return EffectOutcome.failed("start_subworkflow needs a WorkflowRegistry (Runtime(workflow_registry=...))")
        child_wf = self.workflow_registry.get(wf_id)
        if child_wf is None:
            return EffectOutcome.failed(f"start_subworkflow: workflow {wf_id!r} is not registered")
        vars_ = p.get("vars") or {}
        if not isinstance(vars_, dict):
            return EffectOutcome.failed("start_subworkflow: payload.vars must be an object")
        # The child's id is derived from the parent's step, so a replay after a crash finds
        # the child it already started instead of starting a second one.
        key = self.effect_policy.idempotency_key(run=run, node_id=run.current_node, effect=effect)
        child_id = str(uuid.UUID(key[:32]))
        child = self._run_store.load(child_id)
        if child is None:
            self.start(
                workflow=child_wf,
                vars=vars_,
                actor_id=run.actor_id,
                session_id=run.session_id,
                parent_run_id=run.run_id,
                run_id=child_id,
            )
        is_async = bool(p.get("async"))
        # A sync parent handles its child's ending right here, so the child must not also
        # wake the parent (which is mid-tick and holds its own lock).
        child_t = _Tick(notify_parent=is_async)
        with self._guard(child_id):
            state = self._advance(child_wf, self.get_state(child_id), 100, child_t)
        self._tls.tick.after.extend(child_t.after)
        if is_async:
            return EffectOutcome.completed({"sub_run_id": child_id, "status": state.status.value})
        if state.status == RunStatus.COMPLETED:
            return EffectOutcome.completed({"sub_run_id": child_id, "output": state.output})
        if state.status.is_terminal:
            return EffectOutcome.failed(
                f"subworkflow run {child_id} ({wf_id}) {state.status.value}: {state.error or 'no error given'}"
            )
        return EffectOutcome.waiting(
            WaitState(
                reason=WaitReason.SUBWORKFLOW,
                wait_key=f"subworkflow:{child_id}",
                resume_to_node=p.get("resume_to_node") or default_next_node,
                result_key=effect.result_key,
                details={"sub_run_id": child_id, "workflow_id": wf_id},
            )
        )

    def _notify_parent(self, child: RunState) -> None:
        parent = self._run_store.load(child.parent_run_id) if child.parent_run_id else None
        if parent is None or parent.status != RunStatus.WAITING or parent.waiting is None:
            return
        if (parent.waiting.details or {}).get("sub_run_id") != child.run_id:
            return
        try:
            wf = self._workflow_for(parent)
        except WorkflowNotFoundError as e:
            log.warning("child %s finished but its parent cannot continue: %s", child.run_id, e)
            return
        self.tick(workflow=wf, run_id=parent.run_id)


def _safe_call(handler: EffectHandler, run: RunState, effect: Effect, nxt: Optional[str]) -> EffectOutcome:
    try:
        out = call_handler(handler, run, effect, nxt)
    except (Exception, SystemExit) as e:  # isolation boundary for built-in handlers
        return EffectOutcome.failed(f"{type(e).__name__}: {e}")
    if not isinstance(out, EffectOutcome):
        return EffectOutcome.failed(f"handler returned {type(out).__name__}, not an EffectOutcome")
    return out


def _type_key(t: Any) -> str:
    return t.value if isinstance(t, EffectType) else str(t)


def _bind_version(workflow: WorkflowSpec, run: RunState) -> None:
    # Steps record the version they ran under: the run's current code, not its first.
    if workflow.version is not None:
        run.last_version = workflow.version


def _check_workflow(workflow: WorkflowSpec, run: RunState) -> None:
    if workflow.workflow_id != run.workflow_id:
        raise WorkflowMismatchError(
            f"run {run.run_id} belongs to workflow {run.workflow_id!r}, not {workflow.workflow_id!r}",
            run_id=run.run_id,
        )


def _describe_unserializable(run: RunState, records: List[StepRecord], err: Exception) -> str:
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


def set_nested(target: Dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `target['a']['b'] = value` for `dotted_key='a.b'`, creating dicts on the way."""
    parts = dotted_key.split(".")
    cur = target
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[parts[-1]] = value
