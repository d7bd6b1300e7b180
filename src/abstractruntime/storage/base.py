"""The one store interface every backend implements, and the conformance suite tests.

`RunStore` keeps checkpoints and answers the queries a host and a scheduler need without
reading every run: runs by status/workflow, runs waiting on a key, due timers. Claiming due
timers and leasing a run while it is ticked are operations of the store, so a shared
database can back several daemons; in-process stores implement them with in-memory state.

`LedgerStore` keeps each run's append-only `StepRecord`s. Stores assign `seq`, `prev_hash`
and `record_hash` when records are appended (see `ledger_chain`).
"""

from __future__ import annotations

import heapq
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple, runtime_checkable

from ..core.ledger_hash import chain_records
from ..core.models import PAUSED, RunState, RunStatus, StepRecord, WaitReason
from ..core.timeutil import iso_to_epoch

RunListener = Callable[["RunSummary"], None]
LedgerListener = Callable[[str, List[Dict[str, Any]]], None]


class StoredRecords(List[Dict[str, Any]]):
    """The records a ledger listener is given: a list, plus `lines`, their canonical JSON as
    stored (a listener that keeps them, like the daemon's event log, keeps the text: a few
    times smaller than the dicts, and already encoded)."""

    lines: List[str] = []

    @classmethod
    def of(cls, chained: List[Any]) -> StoredRecords:
        out = cls(d for d, _ in chained)
        out.lines = [line for _, line in chained]
        return out


@dataclass
class RunSummary:
    """What listings show of a run, kept in store indexes so a listing loads no run file."""

    run_id: str
    workflow_id: str
    status: str
    current_node: str
    created_at: str
    updated_at: str
    wait_reason: Optional[str] = None
    wait_key: Optional[str] = None
    until: Optional[str] = None
    prompt: Optional[str] = None
    choices: Optional[List[str]] = None
    allow_free_text: bool = True
    parent_run_id: Optional[str] = None
    session_id: Optional[str] = None
    error: Optional[str] = None
    workflow_version: Optional[str] = None
    last_version: Optional[str] = None
    # Where an answer resumes a waiting run: a reload checks it against the new version.
    resume_node: Optional[str] = None
    # Held by Runtime.pause_run: no answer is taken and its timer (`until`) is not due.
    paused: bool = False

    @classmethod
    def from_state(cls, run: RunState) -> RunSummary:
        w = run.waiting
        waiting = run.status == RunStatus.WAITING and w is not None
        paused = waiting and w.details is not None and PAUSED in w.details  # type: ignore[union-attr]
        return cls(
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            status=run.status._value_,
            current_node=run.current_node,
            created_at=run.created_at,
            updated_at=run.updated_at,
            wait_reason=w.reason._value_ if waiting and w else None,
            wait_key=w.wait_key if waiting and w else None,
            until=w.until if waiting and w and not paused else None,
            prompt=w.prompt if waiting and w else None,
            choices=list(w.choices) if waiting and w and w.choices else None,
            allow_free_text=w.allow_free_text if waiting and w else True,
            parent_run_id=run.parent_run_id,
            session_id=run.session_id,
            error=(run.error[:500] if run.error else None),
            workflow_version=run.workflow_version,
            last_version=run.last_version,
            resume_node=((w.resume_to_node or run.current_node) if waiting and w else None),
            paused=paused,
        )

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> RunSummary:
        kw: Dict[str, Any] = {k: d[k] for k in _SUMMARY_FIELDS if k in d}
        return cls(**kw)


_SUMMARY_FIELDS = tuple(RunSummary.__dataclass_fields__)


def _updated(s: RunSummary) -> str:
    return s.updated_at or ""


def _status_value(status: Any) -> Optional[str]:
    if status is None:
        return None
    return status.value if isinstance(status, RunStatus) else RunStatus(status).value


def _reason_value(reason: Any) -> Optional[str]:
    if reason is None:
        return None
    return reason.value if isinstance(reason, WaitReason) else WaitReason(reason).value


class RunStore(ABC):
    """Checkpoints, queries, due timers and run leases."""

    # The backend this store is a view of (a journal, a database): a run store and a ledger
    # store with the same unit commit a step together (see core.ports). None: a store of its own.
    unit: Any = None

    @abstractmethod
    def save(self, run: RunState) -> None:
        """Durably replace the run's checkpoint (atomic: the old or the new, never a mix)."""

    @abstractmethod
    def load(self, run_id: str) -> Optional[RunState]: ...

    @abstractmethod
    def list_run_summaries(
        self,
        *,
        status: Any = None,
        wait_reason: Any = None,
        workflow_id: Optional[str] = None,
        limit: Optional[int] = 100,
        after: Optional[str] = None,
    ) -> List[RunSummary]:
        """Summaries in a stable order; `after` is the last run_id of the previous page;
        `limit=None` for all of them."""

    @abstractmethod
    def count_by_status(self) -> Dict[str, int]: ...

    @abstractmethod
    def find_waiting_on(self, wait_key: str) -> List[str]:
        """Ids of runs waiting on exactly this wait key."""

    @abstractmethod
    def next_due_at(self) -> Optional[float]:
        """Epoch seconds of the earliest unclaimed `WAIT_UNTIL`, or None."""

    @abstractmethod
    def claim_due_runs(self, *, now: float, owner: str, lease_s: float, limit: int) -> List[str]:
        """Lease and return runs whose timer is due; a claimed run is not returned again
        until its lease is released or expires."""

    @abstractmethod
    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the run's lease for `owner`; False if another owner holds it."""

    @abstractmethod
    def release_lease(self, run_id: str, owner: str) -> None: ...

    @abstractmethod
    def add_listener(self, listener: RunListener) -> None:
        """Call `listener(summary)` after a save that changed a run's status or what it waits on
        (from the saving thread)."""

    def add_timer_listener(self, listener: Callable[[float], None]) -> None:  # noqa: B027 - optional
        """Call `listener(due_epoch)` when a timer may be due earlier than a scheduler last
        saw: a run starts waiting on one, or a timer's lease is let go. Stores that cannot
        tell leave this out: schedulers then look every `poll_interval_s`."""

    # Conveniences built on the primitives above ---------------------------------------

    def list_runs(
        self,
        *,
        status: Any = None,
        wait_reason: Any = None,
        workflow_id: Optional[str] = None,
        limit: Optional[int] = 100,
    ) -> List[RunState]:
        """Runs, the most recently updated first (as the published package lists them)."""
        out: List[RunState] = []
        want = _status_value(status)
        for s in self.newest_summaries(status=status, wait_reason=wait_reason, workflow_id=workflow_id, limit=limit):
            run = self.load(s.run_id)
            # The index may lead a checkpoint that a crash kept from landing; the file wins.
            if run is not None and (want is None or run.status.value == want):
                out.append(run)
        return out

    def newest_summaries(
        self,
        *,
        status: Any = None,
        wait_reason: Any = None,
        workflow_id: Optional[str] = None,
        limit: Optional[int] = 100,
    ) -> List[RunSummary]:
        """`list_run_summaries`, ordered by `updated_at`, newest first (stores with an index
        on it answer without reading every summary)."""
        found = self.list_run_summaries(status=status, wait_reason=wait_reason, workflow_id=workflow_id, limit=None)
        if limit is None:
            return sorted(found, key=_updated, reverse=True)
        return heapq.nlargest(int(limit), found, key=_updated)

    def list_children(self, *, parent_run_id: str, status: Any = None) -> List[RunState]:
        """The runs started by `parent_run_id` (START_SUBWORKFLOW), oldest first."""
        out = []
        for s in self.list_run_summaries(status=status, limit=None):
            if s.parent_run_id == parent_run_id:
                run = self.load(s.run_id)
                if run is not None:
                    out.append(run)
        return out

    def list_run_index(
        self,
        *,
        status: Any = None,
        workflow_id: Optional[str] = None,
        session_id: Optional[str] = None,
        root_only: bool = False,
        limit: int = 100,
        oldest_first: bool = False,
        automation_id: Any = None,
        role: Any = None,
        session_kind: Any = None,
    ) -> List[Dict[str, Any]]:
        """Run summaries as dicts, newest first (`oldest_first` reverses), without loading runs.

        `automation_id`, `role` and `session_kind` are the published package's filters on
        fields our runs do not carry: any value other than None matches no run."""
        if automation_id is not None or role is not None or session_kind is not None:
            return []
        found = [
            s
            for s in self.newest_summaries(status=status, workflow_id=workflow_id, limit=None)
            if (session_id is None or s.session_id == session_id) and not (root_only and s.parent_run_id)
        ]
        if oldest_first:
            found.reverse()
        return [s.to_dict() for s in found[: max(0, int(limit))]]

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> List[RunState]:
        """Runs whose `WAIT_UNTIL`, or wait deadline, is due at `now_iso`, the earliest due first
        (paused ones not)."""
        now = iso_to_epoch(now_iso)
        due: List[Tuple[float, str]] = []
        for s in self.list_run_summaries(status=RunStatus.WAITING, limit=None):
            if s.until:
                try:
                    at = iso_to_epoch(s.until)
                except ValueError:
                    at = float("-inf")  # unparseable: due, so that the runtime reports it
                if at <= now:
                    due.append((at, s.run_id))
        out = []
        for _, run_id in sorted(due)[: max(0, int(limit))]:
            run = self.load(run_id)
            if run is not None:
                out.append(run)
        return out

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        """Store a step's records and checkpoint together. Only a store whose `unit` holds a
        ledger too can; a Runtime commits a store of its own through `core.ports.SplitCommit`."""
        if records:
            raise NotImplementedError(
                f"{type(self).__name__} keeps no ledger: give the Runtime its ledger store, which commits the records"
            )
        self.save(run)
        return []

    def commit_many(self, items: List[Tuple[RunState, List[StepRecord]]]) -> List[Any]:
        """Several runs' steps at once (`commit` each, here; durable stores override it to
        write and sync them together). Per item: the records as stored, or the TypeError or
        ValueError that kept that run out; a storage failure raises."""
        out: List[Any] = []
        for run, records in items:
            try:
                out.append(self.commit(run, records))
            except (TypeError, ValueError) as e:
                out.append(e)
        return out

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to release
        """Release files and connections (idempotent)."""


@runtime_checkable
class QueryableRunStore(Protocol):
    """A run store a `Scheduler` can work with (every store here is one)."""

    def list_runs(
        self, *, status: Any = None, wait_reason: Any = None, workflow_id: Optional[str] = None, limit: int = 100
    ) -> List[RunState]: ...

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> List[RunState]: ...

    def list_children(self, *, parent_run_id: str, status: Any = None) -> List[RunState]: ...


@runtime_checkable
class QueryableRunIndexStore(Protocol):
    """A run store that lists summaries without loading runs (every store here is one)."""

    def list_run_index(
        self,
        *,
        status: Any = None,
        workflow_id: Optional[str] = None,
        session_id: Optional[str] = None,
        root_only: bool = False,
        limit: int = 100,
        oldest_first: bool = False,
        automation_id: Any = None,
        role: Any = None,
        session_kind: Any = None,
    ) -> List[Dict[str, Any]]: ...


class LedgerStore(ABC):
    """Append-only journal of `StepRecord`s, hash-chained per run.

    The stores here implement `append_many`, `list`, `head` and `add_listener` themselves. A
    store of one's own, written for the published package, may implement just `append(record)`
    and `list(run_id)`: the defaults below chain its records before each `append`, and work out
    the rest from `list`."""

    unit: Any = None  # see RunStore.unit
    chains = True  # whether append_many assigns seq, prev_hash and record_hash itself

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        """Chain and durably append records of one run; returns them as stored."""
        if type(self).append is LedgerStore.append:
            raise NotImplementedError(f"{type(self).__name__} implements neither append() nor append_many()")
        seq, prev = self.head(run_id)
        stored = [d for d, _ in chain_records(list(records), seq, prev)]
        for d in stored:
            self.append(StepRecord.from_dict(d))
        if stored:
            for fn in getattr(self, "_default_listeners", ()):
                fn(run_id, stored)
        return stored

    @abstractmethod
    def list(self, run_id: str) -> List[Dict[str, Any]]: ...

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        """(last seq, last record_hash) of the run's ledger; (0, None) when empty."""
        recs = self.list(run_id)
        if not recs:
            return 0, None
        last = recs[-1]
        return int(last.get("seq") or len(recs)), last.get("record_hash")

    def add_listener(self, listener: LedgerListener) -> None:
        """Call `listener(run_id, records)` after records are durably appended."""
        self._default_listeners: List[LedgerListener] = [*getattr(self, "_default_listeners", ()), listener]

    def append(self, record: StepRecord) -> None:
        self.append_many(record.run_id, [record])

    def find_completed_result(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        """The result of the completed effect with this idempotency key, or None."""
        rec = self.find_completed(run_id, idempotency_key)
        return rec.get("result") if rec is not None else None

    def list_after(self, run_id: str, after: int = 0, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        recs = [r for r in self.list(run_id) if (r.get("seq") or 0) > after]
        return recs if limit is None else recs[:limit]

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        """The completed record of an effect with this idempotency key, if one was recorded.
        (The stores here answer from an index; this scan is for stores of one's own.)"""
        for r in reversed(self.list(run_id)):
            if r.get("idempotency_key") == idempotency_key and r.get("status") == "completed":
                return r
        return None

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        """The newest host-effect record (one with an idempotency key) made at node execution
        `step` of the run. (The stores here answer from an index; this scan is for stores of
        one's own.)"""
        for r in reversed(self.list(run_id)):
            if r.get("step") == step and r.get("idempotency_key"):
                return r
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to release
        """Release files and connections (idempotent)."""


class StepIndex:
    """Per run: the newest host-effect record at each step, and each completed idempotency key
    (what `find_step` and `find_completed` answer from). Kept for the runs seen lately: a run
    not held is rebuilt from its ledger on the next question about it."""

    def __init__(self, max_runs: int = 4096) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, Tuple[Dict[int, Dict[str, Any]], Dict[str, Dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, run_id: str, load: Callable[[], List[Dict[str, Any]]]):
        with self._lock:
            e = self._runs.get(run_id)
            if e is not None:
                self._runs.move_to_end(run_id)
                return e
        e = ({}, {})
        for r in load():
            _note(e, r)
        with self._lock:
            self._runs[run_id] = e
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        return e

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs  # a lookup, no lock: a miss costs a rebuild, later

    def add(self, run_id: str, records: Iterable[Dict[str, Any]]) -> None:
        """Records just appended; a run not held is left to be rebuilt when asked about."""
        with self._lock:
            e = self._runs.get(run_id)
            if e is None:
                return
            for r in records:
                _note(e, r)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def step(self, run_id: str, step: int, load: Callable[[], List[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
        return self._entry(run_id, load)[0].get(step)

    def completed(self, run_id: str, key: str, load: Callable[[], List[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
        return self._entry(run_id, load)[1].get(key)


def _note(entry: Tuple[Dict[int, Dict[str, Any]], Dict[str, Dict[str, Any]]], r: Dict[str, Any]) -> None:
    key = r.get("idempotency_key")
    if not key:
        return
    if r.get("step") is not None:
        entry[0][r["step"]] = r
    if r.get("status") == "completed":
        entry[1][key] = r
