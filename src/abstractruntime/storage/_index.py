"""The in-process run index shared by the in-memory and JSON-file stores.

It answers listings, wait-key lookups and due-timer claims from memory, so none of them
reads run files. Timers sit in a heap keyed by due time; entries are checked lazily when
popped (a run that moved on leaves a stale heap entry that is simply dropped).

Two kinds of listeners, for two purposes: run listeners hear a run's status or wait change
(the daemon's state events); timer listeners hear that a timer may now be due earlier than the
scheduler thinks (a new timer, or a timer whose lease was let go). A lease release announces
no state: the run did not change.
"""

from __future__ import annotations

import heapq
import threading
from typing import Callable, Dict, List, Optional, Set, Tuple

from ..core.clock import Clock
from ..core.leases import LeaseTable
from ..core.timeutil import iso_to_epoch
from .base import RunListener, RunStore, RunSummary, _reason_value, _status_value

TimerListener = Callable[[float], None]


def due_epoch(s: RunSummary) -> Optional[float]:
    """When a waiting run's timer is due (epoch seconds), or None for any other run. A timer is
    a `WAIT_UNTIL`, or the deadline of a wait for an answer or an event (its `until` too)."""
    if s.status == "waiting" and s.until:
        try:
            return iso_to_epoch(s.until)
        except ValueError:
            return 0.0  # an unparseable time is treated as due: the runtime reports it
    return None


class RunIndex:
    def __init__(self, *, clock: Optional[Clock] = None) -> None:
        self.leases = LeaseTable(clock=clock)
        self._lock = threading.RLock()
        self._entries: Dict[str, RunSummary] = {}
        # status -> run ids in the order they reached that status (dicts keep order).
        self._by_status: Dict[str, Dict[str, None]] = {}
        self._by_wait_key: Dict[str, Set[str]] = {}
        self._timers: List[Tuple[float, str]] = []
        self._due_epoch: Dict[str, float] = {}
        self._listeners: List[RunListener] = []
        self._timer_listeners: List[TimerListener] = []

    @property
    def clock(self) -> Clock:
        return self.leases.clock

    # writes -----------------------------------------------------------------------------

    def put(self, s: RunSummary, *, notify: bool = True) -> None:
        with self._lock:
            old = self._entries.get(s.run_id)
            if old is not None:
                if old.status != s.status:
                    self._by_status.get(old.status, {}).pop(s.run_id, None)
                if old.wait_key and old.wait_key != s.wait_key:
                    keyed = self._by_wait_key.get(old.wait_key)
                    if keyed is not None:
                        keyed.discard(s.run_id)
                        if not keyed:
                            del self._by_wait_key[old.wait_key]
            self._entries[s.run_id] = s
            self._by_status.setdefault(s.status, {})[s.run_id] = None
            if s.wait_key:
                self._by_wait_key.setdefault(s.wait_key, set()).add(s.run_id)
            due = due_epoch(s)
            new_timer = False
            if due is not None:
                if self._due_epoch.get(s.run_id) != due:
                    self._due_epoch[s.run_id] = due
                    heapq.heappush(self._timers, (due, s.run_id))
                    new_timer = True
            else:
                self._due_epoch.pop(s.run_id, None)
            changed = old is None or old.status != s.status or old.wait_key != s.wait_key
            listeners = self._listeners if notify and changed else ()
            timer_listeners = self._timer_listeners if notify and new_timer else ()
        for fn in listeners:
            fn(s)
        for tl in timer_listeners:
            tl(due)  # type: ignore[arg-type]

    def bulk_load(self, summaries: list[RunSummary]) -> None:
        """Fill an empty index at open: one pass, no per-entry locking or listeners."""
        with self._lock:
            assert not self._entries, "bulk_load is for an empty index"
            entries = self._entries
            by_status = self._by_status
            by_key = self._by_wait_key
            for s in summaries:
                entries[s.run_id] = s
                bucket = by_status.get(s.status)
                if bucket is None:
                    bucket = by_status[s.status] = {}
                bucket[s.run_id] = None
                if s.wait_key:
                    by_key.setdefault(s.wait_key, set()).add(s.run_id)
                due = due_epoch(s)
                if due is not None:
                    self._due_epoch[s.run_id] = due
                    self._timers.append((due, s.run_id))
            heapq.heapify(self._timers)

    def remove(self, run_id: str) -> None:
        """Forget a run (its checkpoint never landed)."""
        with self._lock:
            old = self._entries.pop(run_id, None)
            if old is None:
                return
            self._by_status.get(old.status, {}).pop(run_id, None)
            if old.wait_key:
                keyed = self._by_wait_key.get(old.wait_key)
                if keyed is not None:
                    keyed.discard(run_id)
            self._due_epoch.pop(run_id, None)

    def add_listener(self, fn: RunListener) -> None:
        with self._lock:
            self._listeners = self._listeners + [fn]

    def add_timer_listener(self, fn: TimerListener) -> None:
        with self._lock:
            self._timer_listeners = self._timer_listeners + [fn]

    # reads ------------------------------------------------------------------------------

    def get(self, run_id: str) -> Optional[RunSummary]:
        return self._entries.get(run_id)

    def __len__(self) -> int:
        return len(self._entries)

    def summaries(
        self,
        *,
        status=None,
        wait_reason=None,
        workflow_id: Optional[str] = None,
        limit: Optional[int] = 100,
        after: Optional[str] = None,
    ) -> List[RunSummary]:
        st = _status_value(status)
        reason = _reason_value(wait_reason)
        with self._lock:
            if st is not None:
                ids = list(self._by_status.get(st, {}))
            else:
                ids = list(self._entries)
            entries = self._entries
        if after is not None:
            try:
                ids = ids[ids.index(after) + 1 :]
            except ValueError:
                pass
        out: List[RunSummary] = []
        for rid in ids:
            s = entries.get(rid)
            if s is None:
                continue
            if reason is not None and s.wait_reason != reason:
                continue
            if workflow_id is not None and s.workflow_id != workflow_id:
                continue
            out.append(s)
            if limit is not None and len(out) >= limit:
                break
        return out

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self._by_status.items() if v}

    def waiting_on(self, wait_key: str) -> List[str]:
        with self._lock:
            return [r for r in self._by_wait_key.get(wait_key, ()) if self._entries[r].status == "waiting"]

    # timers and leases ----------------------------------------------------------------------

    def next_due_at(self) -> Optional[float]:
        with self._lock:
            timers = self._timers
            while timers:
                due, rid = timers[0]
                if self._due_epoch.get(rid) == due and self.leases.is_free(rid):
                    return due
                heapq.heappop(timers)  # stale, or hidden while leased (release puts it back)
            return None

    def claim_due(self, *, now: float, owner: str, lease_s: float, limit: int) -> List[str]:
        out: List[str] = []
        with self._lock:
            timers = self._timers
            while timers and len(out) < limit and timers[0][0] <= now:
                due, rid = heapq.heappop(timers)
                if self._due_epoch.get(rid) != due or not self.leases.claim(rid, owner, lease_s):
                    continue
                out.append(rid)
        return out

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        return self.leases.try_lease(run_id, owner, lease_s)

    def release_lease(self, run_id: str, owner: str) -> None:
        if not self.leases.release(run_id, owner) or run_id not in self._due_epoch:
            return  # (a dict lookup needs no lock: a timer set meanwhile announces itself)
        with self._lock:
            due = self._due_epoch.get(run_id)
            if due is None:
                return
            # A timer hidden while its run was leased goes back on the heap, and the timer
            # listeners hear of it: a scheduler that looked for the next due time meanwhile
            # missed it. (No state listener: the run did not change.)
            heapq.heappush(self._timers, (due, run_id))
            listeners = self._timer_listeners
        for fn in listeners:
            fn(due)


class IndexedRunStore(RunStore):
    """A run store whose listings, timers and leases are its in-process `RunIndex`
    (`self._index`): the in-memory and JSON-file stores."""

    _index: RunIndex

    def list_run_summaries(self, *, status=None, wait_reason=None, workflow_id=None, limit=100, after=None):
        return self._index.summaries(
            status=status, wait_reason=wait_reason, workflow_id=workflow_id, limit=limit, after=after
        )

    def count_by_status(self) -> Dict[str, int]:
        return self._index.counts()

    def find_waiting_on(self, wait_key: str) -> List[str]:
        return self._index.waiting_on(wait_key)

    def next_due_at(self) -> Optional[float]:
        return self._index.next_due_at()

    def claim_due_runs(self, *, now: float, owner: str, lease_s: float, limit: int) -> List[str]:
        return self._index.claim_due(now=now, owner=owner, lease_s=lease_s, limit=limit)

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        return self._index.try_lease(run_id, owner, lease_s)

    def release_lease(self, run_id: str, owner: str) -> None:
        self._index.release_lease(run_id, owner)

    def add_listener(self, listener: RunListener) -> None:
        self._index.add_listener(listener)

    def add_timer_listener(self, listener: TimerListener) -> None:
        self._index.add_timer_listener(listener)
