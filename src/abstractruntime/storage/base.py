"""The one store interface every backend implements, and the conformance suite tests.

`RunStore` keeps checkpoints and answers the queries a host and a scheduler need without
reading every run: runs by status/workflow, runs waiting on a key, due timers. Claiming due
timers and leasing a run while it is ticked are operations of the store, so a shared
database can back several daemons; in-process stores implement them with in-memory state.

`LedgerStore` keeps each run's append-only `StepRecord`s. Stores assign `seq`, `prev_hash`
and `record_hash` when records are appended (see `ledger_chain`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple, runtime_checkable

from ..core.jsonutil import dumps
from ..core.models import RunState, RunStatus, StepRecord, WaitReason
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

    @classmethod
    def from_state(cls, run: RunState) -> RunSummary:
        w = run.waiting
        waiting = run.status == RunStatus.WAITING and w is not None
        return cls(
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            status=run.status.value,
            current_node=run.current_node,
            created_at=run.created_at,
            updated_at=run.updated_at,
            wait_reason=w.reason.value if waiting and w else None,
            wait_key=w.wait_key if waiting and w else None,
            until=w.until if waiting and w else None,
            prompt=w.prompt if waiting and w else None,
            choices=list(w.choices) if waiting and w and w.choices else None,
            allow_free_text=w.allow_free_text if waiting and w else True,
            parent_run_id=run.parent_run_id,
            session_id=run.session_id,
            error=(run.error[:500] if run.error else None),
            workflow_version=run.workflow_version,
            last_version=run.last_version,
            resume_node=((w.resume_to_node or run.current_node) if waiting and w else None),
        )

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> RunSummary:
        kw: Dict[str, Any] = {k: d[k] for k in _SUMMARY_FIELDS if k in d}
        return cls(**kw)


_SUMMARY_FIELDS = tuple(RunSummary.__dataclass_fields__)


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
        limit: int = 100,
        after: Optional[str] = None,
    ) -> List[RunSummary]:
        """Summaries in a stable order; `after` is the last run_id of the previous page."""

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
        """Call `listener(summary)` after every save (from the saving thread)."""

    # Conveniences built on the primitives above ---------------------------------------

    def list_runs(
        self,
        *,
        status: Any = None,
        wait_reason: Any = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
    ) -> List[RunState]:
        out: List[RunState] = []
        want = _status_value(status)
        for s in self.list_run_summaries(status=status, wait_reason=wait_reason, workflow_id=workflow_id, limit=limit):
            run = self.load(s.run_id)
            # The index may lead a checkpoint that a crash kept from landing; the file wins.
            if run is not None and (want is None or run.status.value == want):
                out.append(run)
        return out

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> List[RunState]:
        now = iso_to_epoch(now_iso)
        out = []
        for run in self.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.UNTIL, limit=10**9):
            if run.waiting and run.waiting.until and iso_to_epoch(run.waiting.until) <= now:
                out.append(run)
                if len(out) >= limit:
                    break
        return out

    def commit(self, run: RunState, records: List[StepRecord], ledger: LedgerStore) -> List[Dict[str, Any]]:
        """Append a step's records, then save its checkpoint.

        This generic order (ledger first) can leave records beyond the checkpoint if the
        process dies in between; the runtime's idempotency keys make the replayed step reuse
        recorded effect results. Backends that can write both atomically override this.
        """
        dumps(run.to_dict())  # an unserializable run must fail before anything is written
        stored = ledger.append_many(run.run_id, records) if records else []
        self.save(run)
        return stored

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to release
        """Release files and connections (idempotent)."""


@runtime_checkable
class QueryableRunStore(Protocol):
    def list_runs(
        self, *, status: Any = None, wait_reason: Any = None, workflow_id: Optional[str] = None, limit: int = 100
    ) -> List[RunState]: ...

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> List[RunState]: ...


class LedgerStore(ABC):
    """Append-only journal of `StepRecord`s, hash-chained per run."""

    @abstractmethod
    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        """Chain and durably append records of one run; returns them as stored."""

    @abstractmethod
    def list(self, run_id: str) -> List[Dict[str, Any]]: ...

    @abstractmethod
    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        """(last seq, last record_hash) of the run's ledger; (0, None) when empty."""

    @abstractmethod
    def add_listener(self, listener: LedgerListener) -> None:
        """Call `listener(run_id, records)` after records are durably appended."""

    def append(self, record: StepRecord) -> None:
        self.append_many(record.run_id, [record])

    def list_after(self, run_id: str, after: int = 0, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        recs = [r for r in self.list(run_id) if (r.get("seq") or 0) > after]
        return recs if limit is None else recs[:limit]

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        """The completed record of an effect with this idempotency key, if one was recorded."""
        for r in reversed(self.list(run_id)):
            if r.get("idempotency_key") == idempotency_key and r.get("status") == "completed":
                return r
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to release
        """Release files and connections (idempotent)."""
