"""The timer-driven scheduler: resumes due `WAIT_UNTIL` runs and recovers interrupted ones.

It sleeps until the earliest due time the store knows of, and the store wakes it whenever a
run starts waiting on an earlier time. When timers fall due it claims them all from the store
(a claim leases them, so two schedulers sharing a database never tick the same run) and ticks
them in a burst. `poll_interval_s` only caps how long it sleeps without looking, for timers
written by another process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..core.clock import Clock
from ..core.errors import AbstractRuntimeError, RunStrandedError, StorageUnavailableError
from ..core.models import RunState, RunStatus, WaitReason
from ..core.runtime import Runtime
from ..core.timeutil import epoch_to_iso
from ..storage.base import QueryableRunStore
from .registry import WorkflowRegistry

log = logging.getLogger("abstractruntime.scheduler")


@dataclass
class SchedulerStats:
    runs_resumed: int = 0
    runs_failed: int = 0
    poll_cycles: int = 0
    last_poll_at: Optional[str] = None  # ISO-8601, UTC
    errors: List[str] = field(default_factory=list)  # the newest `max_errors_kept`
    runs_recovered: int = 0
    wakeups: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "poll_cycles": self.poll_cycles,
            "last_poll_at": self.last_poll_at,
            "runs_resumed": self.runs_resumed,
            "runs_failed": self.runs_failed,
            "runs_recovered": self.runs_recovered,
            "wakeups": self.wakeups,
            "recent_errors": list(self.errors),
        }


class Scheduler:
    def __init__(
        self,
        *,
        runtime: Runtime,
        registry: WorkflowRegistry,
        poll_interval_s: float = 1.0,
        max_errors_kept: int = 100,
        on_run_resumed: Optional[Callable[[RunState], None]] = None,
        on_run_failed: Optional[Callable[[str, Exception], None]] = None,
        batch_size: int = 10000,
        lease_s: float = 300.0,
        clock: Optional[Clock] = None,
        commit_batch: int = 64,
    ) -> None:
        if not isinstance(runtime.run_store, QueryableRunStore):
            raise TypeError(
                f"Scheduler requires a QueryableRunStore (list_runs, list_due_wait_until, list_children), but "
                f"got {type(runtime.run_store).__name__}: use InMemoryRunStore, JsonFileRunStore or SqliteRunStore"
            )
        self.runtime = runtime
        self.max_errors_kept = max_errors_kept
        # The runtime's clock unless told otherwise: both must agree on when a timer is due.
        self.clock: Clock = clock or runtime.clock
        self.registry = registry
        if runtime.workflow_registry is None:
            runtime.workflow_registry = registry  # the runtime resolves every workflow id
        self.poll_interval_s = poll_interval_s
        self.on_run_resumed = on_run_resumed
        self.on_run_failed = on_run_failed
        self.batch_size = batch_size
        self.lease_s = lease_s
        # Due runs ticked together and committed with one write: the fsync, the store's locks
        # and the batch's bookkeeping are paid once per this many runs.
        self.commit_batch = max(1, commit_batch)

        self.stats = SchedulerStats()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._target = float("inf")  # the due time the loop sleeps towards
        # Due runs whose resume node a code change removed: they keep their claim (so the loop
        # does not spin on them) until `unpark` after the next reload, a migrate or a cancel.
        self.parked: Dict[str, str] = {}
        self._storage_failed = False
        add = getattr(runtime.run_store, "add_timer_listener", None)
        if add is not None:  # else it looks every poll_interval_s
            add(self._on_timer)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.is_running:
            raise RuntimeError("Scheduler is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="abstractruntime-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the loop ---------------------------------------------------------------------------

    def _on_timer(self, due: float) -> None:
        """The store's timer signal: a timer may be due before the one the loop sleeps towards."""
        if due < self._target:
            self._target = due
            self._wake.set()

    def _loop(self) -> None:
        self.recover()
        store = self.runtime.run_store
        backoff = 0.0
        while not self._stopping.is_set():
            self._storage_failed = False
            try:
                self.poll_once()
                nxt = store.next_due_at() if hasattr(store, "next_due_at") else None
            except Exception as e:  # isolation boundary: the loop outlives any one failure
                self._error(f"{type(e).__name__}: {e}")
                log.exception("scheduler cycle failed")
                nxt = None
            self._target = nxt if nxt is not None else float("inf")
            now = self.clock.time()
            # Sleep towards an absolute time: time that passes meanwhile (a test's manual clock
            # moved on) counts, so the loop never sleeps past a timer that fell due.
            wake_at = now + self.poll_interval_s if nxt is None else min(now + self.poll_interval_s, max(now, nxt))
            # The store could not write (a full disk): the due timers stay due, so without a
            # pause this loop would retry them back to back. Wait longer each time, up to 30 s.
            backoff = min(30.0, max(0.5, backoff * 2)) if self._storage_failed else 0.0
            wake_at = max(wake_at, now + backoff)
            if wake_at > now and self.clock.wait_until(self._wake, wake_at):
                self.stats.wakeups += 1
            self._wake.clear()

    def _error(self, text: str) -> None:
        errors = self.stats.errors
        errors.append(text)
        if len(errors) > self.max_errors_kept:
            del errors[: len(errors) - self.max_errors_kept]

    def poll_once(self) -> int:
        """Resume every run whose timer is due now; returns how many were ticked."""
        self.stats.poll_cycles += 1
        now = self.clock.time()
        self.stats.last_poll_at = epoch_to_iso(now)
        store = self.runtime.run_store
        if not hasattr(store, "claim_due_runs"):  # a queryable store of the host's own: no leases
            due = store.list_due_wait_until(now_iso=epoch_to_iso(now), limit=self.batch_size)
            return sum(1 for run in due if self._tick(run.run_id) is not None)
        ids = store.claim_due_runs(now=now, owner=self.runtime.owner_id, lease_s=self.lease_s, limit=self.batch_size)
        for start in range(0, len(ids), self.commit_batch):
            chunk = ids[start : start + self.commit_batch]
            # One commit (one write, one sync) for the chunk's steps: see Runtime.tick_many.
            outcomes = self.runtime.tick_many(chunk) if len(chunk) > 1 else [self._attempt(chunk[0])]
            for rid, outcome in zip(chunk, outcomes, strict=True):
                self._release(store, rid, outcome)
        return len(ids)

    def _release(self, store: Any, rid: str, outcome: Any) -> None:
        try:
            self._settle(rid, outcome)
        finally:
            if rid in self.parked:
                # The tick's own guard let go of the run; hold it again so its due timer
                # stays out of the heap until `unpark`.
                store.try_lease(rid, self.runtime.owner_id, self.lease_s)
            else:
                store.release_lease(rid, self.runtime.owner_id)

    def unpark(self) -> List[str]:
        """Give stranded timers another try (after a reload: their node may be back)."""
        ids, self.parked = list(self.parked), {}
        for rid in ids:
            self.runtime.run_store.release_lease(rid, self.runtime.owner_id)
        if ids:
            self._wake.set()
        return ids

    def _tick(self, run_id: str) -> Optional[RunState]:
        return self._settle(run_id, self._attempt(run_id))

    def _attempt(self, run_id: str) -> Any:
        """Tick one run: its new state, or the exception it raised (one load: the runtime finds
        the workflow from the run)."""
        try:
            return self.runtime.tick(workflow=None, run_id=run_id)
        except Exception as e:  # isolation boundary: one run's trouble never stops the others
            return e

    def _settle(self, run_id: str, outcome: Any) -> Optional[RunState]:
        """What a tick's outcome means for the scheduler: statistics, parked runs, callbacks."""
        if isinstance(outcome, RunStrandedError):
            if run_id not in self.parked:
                log.warning("%s", outcome)
            self.parked[run_id] = str(outcome)
            return None
        if isinstance(outcome, Exception):
            e = outcome
            if isinstance(e, StorageUnavailableError):
                self._storage_failed = True
            self.stats.runs_failed += 1
            self._error(f"{run_id}: {type(e).__name__}: {e}")
            if not isinstance(e, AbstractRuntimeError):
                log.error("scheduler could not tick run %s", run_id, exc_info=e)
            if self.on_run_failed:
                self.on_run_failed(run_id, e)
            return None
        state = outcome
        self.parked.pop(run_id, None)
        self.stats.runs_resumed += 1
        if self.on_run_resumed:
            self.on_run_resumed(state)
        return state

    def recover(self) -> int:
        """Tick runs a crash left mid-tick, and parents whose child finished meanwhile."""
        store = self.runtime.run_store
        if hasattr(store, "list_run_summaries"):
            running = [s.run_id for s in store.list_run_summaries(status=RunStatus.RUNNING, limit=None)]
            parents = store.list_run_summaries(status=RunStatus.WAITING, wait_reason=WaitReason.SUBWORKFLOW, limit=None)
            parent_ids = [s.run_id for s in parents]
        else:  # a queryable store of the host's own
            running = [r.run_id for r in store.list_runs(status=RunStatus.RUNNING, limit=None)]
            parent_ids = [
                r.run_id
                for r in store.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.SUBWORKFLOW, limit=None)
            ]
        n = 0
        for rid in running:
            if self._tick(rid) is not None:
                n += 1
        for rid in parent_ids:
            self._tick(rid)
        self.stats.runs_recovered += n
        return n

    # -- conveniences -----------------------------------------------------------------------

    def resume_event(self, *, run_id: str, wait_key: str, payload: Dict[str, Any]) -> RunState:
        run = self.runtime.get_state(run_id)
        return self.runtime.resume(
            workflow=self.runtime.workflow(run.workflow_id), run_id=run_id, wait_key=wait_key, payload=payload
        )

    def cancel_with_children(self, run_id: str, *, reason: Optional[str] = None) -> List[RunState]:
        """Cancel a run and every run it started, at any depth; returns the states, the
        run's own first (runs already finished are returned unchanged)."""
        out = [self.runtime.cancel_run(run_id, reason=reason)]
        todo = [run_id]
        while todo:
            parent = todo.pop(0)
            for child in self.runtime.run_store.list_children(parent_run_id=parent):
                out.append(self.runtime.cancel_run(child.run_id, reason=reason or f"parent run {run_id} was cancelled"))
                todo.append(child.run_id)
        return out

    def resume_subworkflow_parent(self, *, child_run_id: str, child_output: Dict[str, Any]) -> Optional[RunState]:
        """Continue the parent of a finished child with `child_output`; None when the child has
        no parent. (Ours wakes a waiting parent by itself when its child ends, so this usually
        finds the parent already moved on and returns it as it is.)"""
        child = self.runtime.get_state(child_run_id)
        if not child.parent_run_id:
            return None
        parent = self.runtime.get_state(child.parent_run_id)
        w = parent.waiting
        if parent.status != RunStatus.WAITING or w is None or (w.details or {}).get("sub_run_id") != child_run_id:
            return parent
        return self.runtime.resume(
            workflow=self.runtime.workflow(parent.workflow_id),
            run_id=parent.run_id,
            wait_key=w.wait_key,
            payload={"sub_run_id": child_run_id, "output": child_output},
        )

    def find_waiting_runs(
        self, *, wait_reason: Any = None, workflow_id: Optional[str] = None, limit: int = 100
    ) -> List[RunState]:
        return self.runtime.run_store.list_runs(
            status=RunStatus.WAITING, wait_reason=wait_reason, workflow_id=workflow_id, limit=limit
        )
