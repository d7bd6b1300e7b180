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

import functools
import logging
import threading
import time
import traceback as tb
import uuid
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from .clock import SYSTEM_CLOCK, Clock
from .composition import Composition
from .effects import (
    DEADLINE,
    EffectHandler,
    ask_user_handler,
    event_wait_key,
    handle_answer_user,
    wait_event_handler,
    wait_until_handler,
)
from .effects import EffectOutcome as EffectOutcome  # its published path is this module
from .errors import (
    AbstractRuntimeError,
    InvalidParamsError,
    InvalidWorkflowError,
    NotJsonSerializableError,
    RunBusyError,
    RunFinishedError,
    RunNotFailedError,
    RunNotFoundError,
    RunNotWaitingError,
    RunPausedError,
    RunStrandedError,
    WaitKeyMismatchError,
    WorkflowMismatchError,
    WorkflowNotFoundError,
)
from .execution import EffectExecutor, describe_unserializable
from .jsonutil import find_unserializable
from .ledger_hash import verify_ledger_chain
from .lineage import copy_json, origin_of, replay, start_record
from .models import (
    PAUSED,
    RunState,
    RunStatus,
    StepPlan,
    StepRecord,
    StepStatus,
    WaitReason,
    WaitState,
    type_key,
    utc_now_iso,
)
from .policy import DefaultEffectPolicy, EffectPolicy
from .ports import HostRunStore, LedgerPort, RunPort, SplitCommit, same_unit
from .spec import WorkflowSpec
from .tick import Tick
from .timeutil import iso_to_epoch

log = logging.getLogger("abstractruntime.runtime")


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
        ent = self.acquire(run_id, timeout)
        try:
            yield
        finally:
            self.release(run_id, ent)

    def acquire(self, run_id: str, timeout: Optional[float] = None) -> List[Any]:
        """Take the run's lock (RunBusyError after `timeout`); returns what `release` needs."""
        with self._guard:
            ent = self._locks.get(run_id)
            if ent is None:
                ent = self._locks[run_id] = [threading.RLock(), 0]
            ent[1] += 1
        if not ent[0].acquire(timeout=-1 if timeout is None else timeout):
            self._drop(run_id, ent)
            raise RunBusyError(f"run {run_id} is busy in another tick", run_id=run_id)
        return ent

    def release(self, run_id: str, ent: List[Any]) -> None:
        ent[0].release()
        self._drop(run_id, ent)

    def _drop(self, run_id: str, ent: List[Any]) -> None:
        with self._guard:
            ent[1] -= 1
            if ent[1] == 0:
                self._locks.pop(run_id, None)


class Runtime:
    """Durable graph runner. Thread-safe: one tick per run at a time, any number of runs."""

    def __init__(
        self,
        *,
        run_store: Any = None,
        ledger_store: Any = None,
        effect_handlers: Optional[Dict[Any, EffectHandler]] = None,
        context: Optional[Any] = None,
        workflow_registry: Optional[Any] = None,
        artifact_store: Optional[Any] = None,
        effect_policy: Optional[EffectPolicy] = None,
        external_effects: Optional[Iterable[Any]] = None,
        owner_id: Optional[str] = None,
        lease_s: float = 300.0,
        clock: Optional[Clock] = None,
        stores: Optional[Any] = None,
        record_origin: bool = False,
    ) -> None:
        """`stores` is a unit from `storage.open_stores` (runs, ledger, artifacts); or give
        `run_store` and `ledger_store` (two views of one backend commit atomically, others
        through `SplitCommit`).

        `record_origin`: open each new run's ledger with a `started` record of its initial
        state, which `fork_run` replays from (the daemon does). Off by default, so that a
        ledger holds what the published package's does."""
        if stores is not None:
            run_store, ledger_store = stores.runs, stores.ledger
            if artifact_store is None:
                artifact_store = getattr(stores, "artifacts", None)
        if run_store is None or ledger_store is None:
            raise TypeError("Runtime needs stores=open_stores(...), or both run_store= and ledger_store=")
        self._run_store = run_store
        # What the runtime calls; a host's store with only save and load gets an adapter.
        self._runs: RunPort = run_store if HostRunStore.is_complete(run_store) else HostRunStore(run_store)
        self._ledger_store: LedgerPort = ledger_store
        # How a step is committed: by the run store itself when the two are one unit.
        self._commit_to: RunPort = (
            run_store if same_unit(run_store, ledger_store) else SplitCommit(self._runs, ledger_store)
        )
        # Several runs' commits in one write (`tick_many`), where the unit offers it.
        self._commit_many = getattr(run_store, "commit_many", None) if self._commit_to is run_store else None
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._ctx = context or DefaultRunContext()
        self.workflow_registry = workflow_registry
        self.artifact_store = artifact_store
        self.effect_policy: EffectPolicy = effect_policy or DefaultEffectPolicy()
        self.owner_id = owner_id or f"runtime-{uuid.uuid4().hex[:12]}"
        self.lease_s = lease_s
        self.record_origin = record_origin
        self._locks = _RunLocks()
        self._cancel_requests: Dict[str, Optional[str]] = {}
        self._handlers: Dict[str, EffectHandler] = {
            "ask_user": ask_user_handler(self.clock),
            "wait_event": wait_event_handler(self.clock),
            "wait_until": wait_until_handler(self.clock),
            "answer_user": handle_answer_user,
        }
        for t, h in (effect_handlers or {}).items():
            self.register_effect_handler(t, h)
        self._external: Set[str] = {type_key(t) for t in (external_effects or ())}
        self._effects = EffectExecutor(self._ledger_store, self.effect_policy, self._handlers, self._external)
        self._composition = Composition(self)

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
        self._handlers[type_key(effect_type)] = handler

    def declare_external(self, effect_type: Any) -> None:
        """Effects of this type are executed outside the process: the run waits (reason
        job) with the effect in the wait's details until a host resumes it with the result."""
        self._external.add(type_key(effect_type))

    def workflow(self, workflow_id: str) -> WorkflowSpec:
        """The registered workflow with this id, or WorkflowNotFoundError (1002) naming the ones
        there are. The one place a workflow id is resolved: the daemon, the editor features and
        the scheduler all ask here."""
        if self.workflow_registry is None:
            raise WorkflowNotFoundError(
                f"workflow {workflow_id!r} is not registered (this runtime has no workflow registry)",
                workflow_id=workflow_id,
            )
        return self.workflow_registry.get_or_raise(workflow_id)

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
        self._commit_to.commit(run, [start_record(run)] if self.record_origin else [])
        return run.run_id

    def start_and_tick(
        self,
        *,
        workflow: WorkflowSpec,
        vars: Optional[Dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        session_id: Optional[str] = None,
        max_steps: int = 100,
        store_first: bool = False,
    ) -> RunState:
        """`start` then `tick`, with one commit instead of two: the run is stored when it first
        waits or ends. A crash before that leaves no run at all (the caller got no id).

        `store_first` (what the daemon does): store the run before its first node runs, as
        `start` does, then tick it from memory (no second load): it is listed from its first
        instant, and a crash during its first step leaves a running run to recover."""
        run = self._new_run(workflow, vars, actor_id, session_id, None, None)
        t = Tick(records=[start_record(run)] if self.record_origin else [])
        with self._guard(run.run_id):
            if store_first:
                self._commit_to.commit(run, t.records)
                t.records = []
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
        run = self._runs.load(run_id)
        if run is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        return run

    def get_ledger(self, run_id: str) -> List[Dict[str, Any]]:
        return self._ledger_store.list(run_id)

    def verify_ledger(self, run_id: str) -> Dict[str, Any]:
        """Check the run's hash chain: {ok, count, errors, first_bad_index, head_hash}; for a
        fork also `origin`: the source run, seq and record hash its first record names, and
        whether the source's ledger holds that record (`verified`)."""
        records = self._ledger_store.list(run_id)
        report = verify_ledger_chain(records)
        origin = origin_of(records)
        if origin is not None and origin[0] == "forked":
            src = origin[1]
            found = [r for r in self._ledger_store.list(str(src.get("run_id"))) if r.get("seq") == src.get("seq")]
            verified = bool(found) and found[0].get("record_hash") == src.get("record_hash")
            report["origin"] = {
                "run_id": src.get("run_id"),
                "seq": src.get("seq"),
                "record_hash": src.get("record_hash"),
                "verified": verified,
            }
            if not verified:
                report["ok"] = False
                report.setdefault("errors", []).append(
                    f"the fork's origin, record {src.get('seq')} of run {src.get('run_id')}, is not in that run's "
                    "ledger with the hash the fork names"
                )
        return report

    def list_runs(
        self, *, status: Any = None, workflow_id: Optional[str] = None, wait_reason: Any = None, limit: int = 100
    ) -> List[RunState]:
        return self._run_store.list_runs(status=status, workflow_id=workflow_id, wait_reason=wait_reason, limit=limit)

    def tick(self, *, workflow: Optional[WorkflowSpec], run_id: str, max_steps: int = 100) -> RunState:
        """Run nodes until the run waits, completes, fails, is cancelled or `max_steps` pass.
        `workflow=None` looks the run's workflow up in the `workflow_registry` (one load of
        the run, not two: the scheduler ticks due runs this way)."""
        t = Tick()
        with self._guard(run_id):
            run, workflow = self._load_with(run_id, workflow)
            state = self._advance(workflow, run, max_steps, t)
        self._run_after(t)
        return state

    def _load_with(self, run_id: str, workflow: Optional[WorkflowSpec]) -> Tuple[RunState, WorkflowSpec]:
        """The run and its workflow (the given one, which must be the run's, else the registered)."""
        run = self.get_state(run_id)
        if workflow is None:
            workflow = self.workflow(run.workflow_id)
        _check_workflow(workflow, run)
        return run, workflow

    def tick_many(self, run_ids: List[str], *, max_steps: int = 100) -> List[Any]:
        """`tick` several runs (by their registered workflows) with one commit for all: their
        steps are computed one after the other and written together, one write and one sync
        on a durable store. Each run is held (its lock and lease) until the batch is written.
        Returns, per run id, its new state or the exception its tick raised; a run busy in
        another tick is reported busy, not waited for. The scheduler ticks due timers so."""
        out: List[Any] = [None] * len(run_ids)
        ticks: List[Tuple[int, Tick]] = []
        seen: Set[str] = set()
        # A store that reads many runs at once (one round trip to a database) does so here:
        # the scheduler's claim has leased them already.
        load_many = getattr(self._runs, "load_many", None)
        loaded: Dict[str, RunState] = load_many(list(dict.fromkeys(run_ids))) if load_many is not None else {}
        together = getattr(self._runs, "releasing_together", None)  # and lets their leases go at once
        with together(self.owner_id) if together is not None else nullcontext(), ExitStack() as held:
            for i, run_id in enumerate(run_ids):
                t = Tick(defer=[])
                try:
                    if run_id in seen:  # its step in this batch is not written yet
                        raise RunBusyError(f"run {run_id} is already in this batch", run_id=run_id)
                    seen.add(run_id)
                    held.enter_context(self._guard(run_id, timeout=0))
                    run = loaded.pop(run_id, None) or self.get_state(run_id)
                    workflow = self.workflow(run.workflow_id)
                    _check_workflow(workflow, run)
                    out[i] = self._advance(workflow, run, max_steps, t)
                except Exception as e:  # isolation boundary: one run's trouble is its own
                    out[i] = e
                    continue
                ticks.append((i, t))
            pending = [(i, t, run, records) for i, t in ticks for run, records in (t.defer or ())]
            if pending:
                items = [(run, records) for _, _, run, records in pending]
                try:
                    if self._commit_many is not None:
                        results = self._commit_many(items)
                    else:
                        results = [self._commit_one(run, records) for run, records in items]
                except Exception as e:  # the store could not write (a full disk): none committed
                    results = [e] * len(pending)
                for (i, t, run, records), res in zip(pending, results, strict=True):
                    if isinstance(res, Exception) and not isinstance(res, (TypeError, ValueError)):
                        out[i] = res  # not written: the run keeps its last checkpoint
                        t.after.clear()
                    elif isinstance(res, (TypeError, ValueError)):
                        # Not written: commit it alone, where an unserializable run fails
                        # from its last checkpoint with a message naming the key.
                        t.defer = None
                        t.records = records
                        out[i] = self._commit(run, t)
                    elif run.status.is_terminal and run.parent_run_id and t.notify_parent:
                        t.after.append(functools.partial(self._composition.notify_parent, run))
        for _, t in ticks:
            self._run_after(t)
        return out

    def _commit_one(self, run: RunState, records: List[StepRecord]) -> Any:
        try:
            return self._commit_to.commit(run, records)
        except Exception as e:  # reported for this run alone (see tick_many)
            return e

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
        t = Tick()
        with self._guard(run_id):
            run, workflow = self._load_waiting(run_id, workflow, "resumed")
            w = run.waiting
            assert w is not None
            if wait_key is not None and w.wait_key is not None and wait_key != w.wait_key:
                raise WaitKeyMismatchError(
                    f"wait_key mismatch: run {run_id} waits on {w.wait_key!r}, not {wait_key!r}",
                    run_id=run_id,
                    expected=w.wait_key,
                    got=wait_key,
                )
            late = _deadline_passed(w, self.clock.time())
            if late:
                # Past its deadline: the wait is over, whatever the scheduler has done yet.
                self._apply_timeout(workflow, run, t)
            else:
                _check_answer(run_id, w, payload)
                self._check_resume_target(workflow, run)
                _bind_version(workflow, run)
                self._apply_resume(run, payload, t)
            state = self._commit(run, t) if run.status.is_terminal else self._advance(workflow, run, max_steps, t)
        self._run_after(t)
        if late:
            raise RunNotWaitingError(
                f"run {run_id} is not waiting: its deadline passed at {w.until}, so it went on without an answer",
                run_id=run_id,
                deadline=w.until,
            )
        return state

    def _load_waiting(self, run_id: str, workflow: Optional[WorkflowSpec], verb: str) -> Tuple[RunState, WorkflowSpec]:
        """The run (which must be waiting) and its workflow; under the run's guard."""
        run, workflow = self._load_with(run_id, workflow)
        if run.status.is_terminal:
            raise RunFinishedError(
                f"run {run_id} is not waiting: it already {run.status.value}, so it cannot be {verb}",
                run_id=run_id,
                status=run.status.value,
            )
        if run.status != RunStatus.WAITING or run.waiting is None:
            raise RunNotWaitingError(f"run {run_id} is not waiting (status {run.status.value})", run_id=run_id)
        if run.paused:
            raise RunPausedError(f"run {run_id} is paused: resume_run({run_id!r}) first, then answer it", run_id=run_id)
        return run, workflow

    def cancel_run(self, run_id: str, reason: Optional[str] = None) -> RunState:
        """Cancel a run that has not finished (and the child it waits on); a run being ticked
        stops after its current step. A finished run is returned unchanged."""
        self._cancel_requests[run_id] = reason
        try:
            t = Tick()
            with self._guard(run_id, timeout=60.0):
                run = self.get_state(run_id)
                if run.status.is_terminal:
                    return run
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

    def pause_run(self, run_id: str, *, reason: Optional[str] = None) -> RunState:
        """Hold a run until `resume_run`: ticks leave it as it is, `resume` refuses it
        (`RunPausedError`, a ValueError) and a due `WAIT_UNTIL` does not fire.

        A running run waits on `pause:<run_id>` (reason `user`) at the node it would run next;
        a waiting run keeps its wait. A finished or already paused run is returned unchanged."""
        t = Tick()
        with self._guard(run_id, timeout=60.0):
            run = self.get_state(run_id)
            if run.status.is_terminal or run.paused:
                return run
            mark = {"reason": reason, "paused_at": utc_now_iso()}
            if run.status == RunStatus.WAITING and run.waiting is not None:
                run.waiting.details = {**(run.waiting.details or {}), PAUSED: mark}
            else:
                run.status = RunStatus.WAITING
                run.waiting = WaitState(
                    reason=WaitReason.USER,
                    wait_key=f"pause:{run_id}",
                    resume_to_node=run.current_node,
                    prompt=reason,
                    details={PAUSED: {**mark, "was_running": True}},
                )
            t.records.append(
                self._record(run, run.current_node, None).finish_success({"paused": {"reason": reason}}, instant=True)
            )
            state = self._commit(run, t)
        self._run_after(t)
        return state

    def resume_run(self, run_id: str) -> RunState:
        """Undo `pause_run`: a run paused while running runs again at its next tick; a run paused
        while waiting waits as before (a timer that came due meanwhile fires at the next poll). A
        run that is not paused is returned unchanged."""
        t = Tick()
        with self._guard(run_id, timeout=60.0):
            run = self.get_state(run_id)
            w = run.waiting
            if not run.paused or w is None:
                return run
            details = dict(w.details or {})
            mark = details.pop(PAUSED)
            if isinstance(mark, dict) and mark.get("was_running"):
                run.status = RunStatus.RUNNING
                run.waiting = None
            else:
                w.details = details or None
            t.records.append(self._record(run, run.current_node, None).finish_success({"unpaused": True}, instant=True))
            state = self._commit(run, t)
            if w.reason == WaitReason.SUBWORKFLOW and run.status == RunStatus.WAITING:
                # Its child may have ended while it was paused: look again once the lock is free.
                t.after.append(partial(self._wake_if_child_done, run_id))
        self._run_after(t)
        return state

    def _wake_if_child_done(self, run_id: str) -> None:
        run = self.get_state(run_id)
        child_id = (run.waiting.details or {}).get("sub_run_id") if run.waiting else None
        child = self._runs.load(child_id) if child_id else None
        if child is not None and child.status.is_terminal:
            self._composition.notify_parent(child)

    def migrate_run(
        self, run_id: str, *, to_node: Optional[str] = None, workflow: Optional[WorkflowSpec] = None
    ) -> RunState:
        """Move a waiting run on to the workflow's current version, resuming at `to_node`.

        For runs a code change stranded (their resume node is gone). Without `to_node` the run
        keeps its resume node if the current version has it, else goes back to the entry node;
        its vars and its wait are kept, and the ledger records the move.
        """
        t = Tick()
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

    def retry_run(
        self, run_id: str, *, workflow: Optional[WorkflowSpec] = None, max_steps: int = 100, tick: bool = True
    ) -> RunState:
        """Run a failed run again from the node that failed, under the code loaded now (fix the
        node, reload, retry). Its vars are those it failed with; effects it recorded before are
        not run again, and the failed step's effect is tried afresh. Ticks it like `tick`
        (`tick=False`: only stores it as running again, for the caller to tick)."""
        t = Tick()
        with self._guard(run_id):
            run, workflow = self._load_with(run_id, workflow)
            if run.status != RunStatus.FAILED:
                raise RunNotFailedError(
                    f"run {run_id} is {run.status.value}, not failed: only a failed run can be retried "
                    "(fork it to run it again from one of its steps)",
                    run_id=run_id,
                    status=run.status.value,
                )
            if run.current_node not in workflow.nodes:
                raise InvalidWorkflowError(
                    f"run {run_id} failed at node {run.current_node!r}, which workflow {workflow.workflow_id!r} "
                    f"version {workflow.version or 'unversioned'} no longer has (nodes: {', '.join(workflow.nodes)})",
                    run_id=run_id,
                    node_id=run.current_node,
                )
            error, run.error = run.error, None
            run.status, run.waiting, run.output = RunStatus.RUNNING, None, None
            _bind_version(workflow, run)
            rec = self._record(run, run.current_node, None)
            t.records.append(rec.finish_success({"retried": {"node": run.current_node, "error": error}}, instant=True))
            state = self._advance(workflow, run, max_steps, t) if tick else self._commit(run, t)
        self._run_after(t)
        return state

    def fork_run(
        self,
        run_id: str,
        *,
        seq: Optional[int] = None,
        vars: Optional[Dict[str, Any]] = None,
        workflow: Optional[WorkflowSpec] = None,
        new_run_id: Optional[str] = None,
    ) -> RunState:
        """A new run whose state is run `run_id`'s after its ledger record `seq` (default: its
        last), with `vars` merged over its vars, continuing under the code loaded now.

        The state is rebuilt by replaying the run's steps with their recorded results (see
        `lineage.py`): no effect recorded before the fork point runs again. The new run's ledger
        opens with a `forked` record naming the source run, the seq and that record's hash
        (`verify_ledger` checks it). Returns the new run, stored but not ticked: tick it."""
        if vars is not None and not isinstance(vars, dict):
            raise TypeError(f"vars must be a dict, got {type(vars).__name__}")
        bad = find_unserializable(vars or {}, "vars")
        if bad:
            raise NotJsonSerializableError(f"cannot fork run {run_id}: {bad} is not JSON-serializable")
        source = self.get_state(run_id)
        if workflow is None:
            workflow = self.workflow(source.workflow_id)
        _check_workflow(workflow, source)
        records = self._ledger_store.list(run_id)
        last = records[-1]["seq"] if records else 0
        if seq is None:
            seq = last
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= last:
            raise InvalidParamsError(
                f"run {run_id} has ledger records 1 to {last}; cannot fork after record {seq!r}",
                run_id=run_id,
                seq=seq,
            )
        at = next(r for r in records if r["seq"] == seq)
        run, replayed = replay(workflow, source, records[:seq], seq, self._ctx, new_run_id or str(uuid.uuid4()))
        if vars:
            run.vars.update(copy_json(vars))
        state = {"node": run.current_node, "steps": run.steps, "vars": copy_json(run.vars)}
        origin = {"run_id": run_id, "seq": seq, "record_hash": at.get("record_hash"), "replayed_steps": replayed}
        if vars:
            origin["changed_vars"] = copy_json(vars)
        rec = self._record(run, run.current_node, None)
        rec.status = StepStatus.STARTED
        rec.result = {"forked": {**origin, **state}}
        rec.ended_at = rec.started_at
        run.updated_at = utc_now_iso()
        with self._guard(run.run_id):
            self._commit_to.commit(run, [rec])
        return run

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
        try:
            key = wait_key or event_wait_key(str(name), scope, session_id=session_id, run_id=run_id)
        except ValueError as e:
            raise InvalidParamsError(str(e), name=name, scope=scope) from None
        resumed = []
        body = payload if isinstance(payload, dict) else {"value": payload}
        for rid in self._runs.find_waiting_on(key):
            try:
                run = self.get_state(rid)
                wf = workflow if workflow is not None and workflow.workflow_id == run.workflow_id else None
                wf = wf or self.workflow(run.workflow_id)
                self.resume(workflow=wf, run_id=rid, wait_key=key, payload=body)
                resumed.append(rid)
            except (RunNotWaitingError, WaitKeyMismatchError, RunNotFoundError):
                continue  # answered by someone else meanwhile, or paused
            except InvalidParamsError as e:  # the payload is not one of the wait's choices
                log.warning("event %s: run %s refused it: %s", key, rid, e)
            except (WorkflowNotFoundError, RunStrandedError) as e:
                log.warning("event %s: cannot resume run %s: %s", key, rid, e)
        return resumed

    # ------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------

    @contextmanager
    def _guard(self, run_id: str, timeout: Optional[float] = None) -> Iterator[None]:
        # The lock and the lease in one context (not two nested ones): this is on every tick.
        ent = self._locks.acquire(run_id, timeout)
        try:
            # timeout=0 (a batch of timers): a run busy elsewhere is reported, not waited for.
            if not self._runs.try_lease(run_id, self.owner_id, self.lease_s) and (
                timeout == 0 or not self._await_lease(run_id)
            ):
                raise RunBusyError(f"run {run_id} is leased by another runtime", run_id=run_id)
            try:
                yield
            finally:
                self._runs.release_lease(run_id, self.owner_id)
        finally:
            self._locks.release(run_id, ent)

    def _await_lease(self, run_id: str) -> bool:
        """Another process ticks the run (a store several daemons share says how long to wait
        for it: its steps take milliseconds). Real time: the wait is on another process."""
        wait_s = getattr(self._runs, "lease_wait_s", 0.0)
        deadline, pause = time.monotonic() + wait_s, 0.002
        while time.monotonic() < deadline:
            time.sleep(pause)
            if self._runs.try_lease(run_id, self.owner_id, self.lease_s):
                return True
            pause = min(0.05, pause * 2)
        return False

    def _advance(self, workflow: WorkflowSpec, run: RunState, max_steps: int, t: Tick) -> RunState:
        if run.status.is_terminal:
            return run
        if run.status == RunStatus.WAITING:
            # The wait is checked against the version the run waited under (a stranded run's
            # message names it), and the run takes the served version once it goes on.
            details = run.waiting.details if run.waiting is not None else None
            if (details is not None and PAUSED in details) or not self._unblock_if_ready(workflow, run, t):
                return run
            _bind_version(workflow, run)
            if run.status != RunStatus.RUNNING:
                return self._commit(run, t)
        _bind_version(workflow, run)
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
                rec = self._record(run, node_id, None).finish_success({"output": plan.complete_output}, instant=True)
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
                t.records.append(self._record(run, node_id, None).finish_success({"next_node": nxt}, instant=True))
                run.current_node = nxt
                continue

            outcome = self._effects.execute(run, node_id, plan.effect, nxt, t, self._composition.handler)
            if outcome.status == "failed":
                return self._fail(run, t, node_id, outcome.error or "effect failed", recorded=True)
            if outcome.status == "waiting":
                assert outcome.wait is not None
                run.status = RunStatus.WAITING
                run.waiting = outcome.wait
                if run.waiting.resume_to_node is None:  # a host's handler may leave it to the node
                    run.waiting.resume_to_node = nxt
                on_timeout = ((run.waiting.details or {}).get(DEADLINE) or {}).get("on_timeout")
                if on_timeout is not None and on_timeout not in workflow.nodes:
                    return self._fail(
                        run,
                        t,
                        node_id,
                        f"node {node_id!r}: on_timeout names {on_timeout!r}, which is not in workflow "
                        f"{workflow.workflow_id!r} (nodes: {', '.join(workflow.nodes)})",
                    )
                return self._commit(run, t)
            if plan.effect.result_key and outcome.result is not None:
                set_nested(run.vars, plan.effect.result_key, outcome.result)
            if nxt is None:
                # An effect with nowhere to go next ends the run with the effect's result (as the
                # published package does): `StepPlan(effect=Effect(ANSWER_USER, ...))` as a last node.
                run.status = RunStatus.COMPLETED
                run.output = {"success": True, "result": outcome.result}
                t.records.append(self._record(run, node_id, None).finish_success({"output": run.output}, instant=True))
                return self._commit(run, t)
            run.current_node = nxt

    def _record(self, run: RunState, node_id: str, effect: Any, **kw: Any) -> StepRecord:
        return StepRecord.start(run=run, node_id=node_id, effect=effect, **kw)

    # ------------------------------------------------------------------------------------
    # Waits
    # ------------------------------------------------------------------------------------

    def _unblock_if_ready(self, workflow: WorkflowSpec, run: RunState, t: Tick) -> bool:
        """Continue a wait that needs no answer from outside: a due timer, a finished child."""
        w = run.waiting
        if w is None:
            run.status = RunStatus.RUNNING
            return True
        if w.reason != WaitReason.UNTIL and w.until and (w.details or {}).get(DEADLINE) is not None:
            if not _deadline_passed(w, self.clock.time()):
                return False
            self._apply_timeout(workflow, run, t)
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
            child = self._runs.load(child_id) if child_id else None
            if child is None or not child.status.is_terminal:
                return False
            if child.status == RunStatus.COMPLETED:
                self._check_resume_target(workflow, run)
                self._apply_resume(run, {"sub_run_id": child.run_id, "output": child.output}, t)
                return True
            _bind_version(workflow, run)
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
        _bind_version(workflow, run)  # it goes on under the served version (its records say so)

    def _apply_timeout(self, workflow: WorkflowSpec, run: RunState, t: Tick) -> None:
        """The wait's deadline passed: go on at its `on_timeout` node (else where an answer would
        have gone) with `{"timed_out": true}` at its result_key."""
        w = run.waiting
        assert w is not None
        on_timeout = ((w.details or {}).get(DEADLINE) or {}).get("on_timeout")
        if on_timeout:
            w.resume_to_node = on_timeout
        self._check_resume_target(workflow, run)
        _bind_version(workflow, run)
        payload = {"timed_out": True, "deadline": w.until}
        record = {"wait_key": w.wait_key, "deadline": w.until, "to_node": w.resume_to_node, "payload": payload}
        self._apply_resume(run, payload, t, ("timed_out", record))

    def _apply_resume(
        self, run: RunState, payload: Dict[str, Any], t: Tick, recorded: Optional[Tuple[str, Any]] = None
    ) -> None:
        w = run.waiting
        assert w is not None
        if w.result_key:
            set_nested(run.vars, w.result_key, payload)
        rec = self._record(run, run.current_node, None)
        if recorded is None:
            recorded = ("resumed", {"wait_key": w.wait_key, "reason": w.reason._value_, "payload": payload})
        rec.finish_success({recorded[0]: recorded[1]})
        t.records.append(rec)
        run.status = RunStatus.RUNNING
        run.waiting = None
        if w.resume_to_node:
            run.current_node = w.resume_to_node
        else:
            # The effect that waited was its node's last word (no next_node): the answer ends the
            # run, as an effect without a next node does (the published package's behaviour).
            run.status = RunStatus.COMPLETED
            run.output = {"success": True, "result": payload}
            t.records.append(
                self._record(run, run.current_node, None).finish_success({"output": run.output}, instant=True)
            )

    # ------------------------------------------------------------------------------------
    # Endings and commits
    # ------------------------------------------------------------------------------------

    def _fail(
        self,
        run: RunState,
        t: Tick,
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

    def _finish_cancelled(self, run: RunState, reason: Optional[str], t: Tick) -> RunState:
        run.status = RunStatus.CANCELLED
        run.waiting = None
        run.error = f"cancelled: {reason}" if reason else "cancelled"
        rec = self._record(run, run.current_node, None)
        rec.status = StepStatus.CANCELLED
        rec.result = {"reason": reason}
        rec.ended_at = utc_now_iso()
        t.records.append(rec)
        return self._commit(run, t)

    def _commit(self, run: RunState, t: Tick) -> RunState:
        run.updated_at = utc_now_iso()
        records, t.records = t.records, []
        if t.defer is not None:  # written with the batch (tick_many), which then notifies a parent
            t.defer.append((run, records))
            return run
        try:
            self._commit_to.commit(run, records)
        except (TypeError, ValueError) as e:
            # Nothing was written (stores serialize before they write): keep the last
            # checkpoint, fail the run from there, and say which key could not be stored.
            msg = describe_unserializable(run, records, e)
            last = self._runs.load(run.run_id)
            if last is None:
                raise NotJsonSerializableError(msg) from e
            node_id = run.current_node
            last.status = RunStatus.FAILED
            last.error = msg
            last.waiting = None
            last.updated_at = utc_now_iso()
            last.steps = run.steps
            rec = StepRecord.start(run=last, node_id=node_id, effect=None).finish_failure(msg)
            self._commit_to.commit(last, [rec])
            run = last
        if run.status.is_terminal and run.parent_run_id and t.notify_parent:
            finished = run
            t.after.append(lambda: self._composition.notify_parent(finished))
        return run

    def _run_after(self, t: Tick) -> None:
        while t.after:
            fn = t.after.pop(0)
            try:
                fn()
            except AbstractRuntimeError as e:
                log.warning("follow-up after tick failed: %s", e)


def _deadline_passed(w: WaitState, now: float) -> bool:
    """Whether a wait for an answer or an event has a deadline, and it has passed."""
    if w.reason == WaitReason.UNTIL or not w.until or (w.details or {}).get(DEADLINE) is None:
        return False
    try:
        return iso_to_epoch(w.until) <= now
    except ValueError:
        return True  # an unreadable deadline is treated as passed (the timer index does the same)


def _check_answer(run_id: str, w: WaitState, payload: Dict[str, Any]) -> None:
    """With choices and no free text, the answer (`payload["text"]`) must be one of the choices."""
    if not w.choices or w.allow_free_text:
        return
    got = payload.get("text")
    if got not in w.choices:
        raise InvalidParamsError(
            f"run {run_id} takes one of {', '.join(repr(c) for c in w.choices)} as its answer "
            f'({{"text": ...}}), not {got!r}; it is still waiting',
            run_id=run_id,
            choices=list(w.choices),
            got=got,
        )


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
