"""In-memory stores for tests and embedding. Nothing survives the process.

Checkpoints and records are kept as JSON text, not live objects: a caller that mutates a
loaded `RunState` or a listed record cannot change what the store holds, and every save is
checked for JSON-safety exactly as a durable store would check it.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.clock import Clock
from ..core.jsonutil import dumps
from ..core.models import RunState, StepRecord
from ._index import RunIndex
from .base import LedgerListener, LedgerStore, RunListener, RunStore, RunSummary, StoredRecords
from .ledger_chain import chain_records


class InMemoryRunStore(RunStore):
    def __init__(self, *, clock: Optional[Clock] = None) -> None:
        self._data: Dict[str, str] = {}
        self._index = RunIndex(clock=clock)

    def save(self, run: RunState) -> None:
        text = dumps(run.to_dict())
        self._data[run.run_id] = text
        self._index.put(RunSummary.from_state(run))

    def commit(self, run: RunState, records: List[StepRecord], ledger: LedgerStore) -> List[Dict[str, Any]]:
        text = dumps(run.to_dict())  # first: an unserializable run writes nothing at all
        stored = ledger.append_many(run.run_id, records) if records else []
        self._data[run.run_id] = text
        self._index.put(RunSummary.from_state(run))
        return stored

    def load(self, run_id: str) -> Optional[RunState]:
        text = self._data.get(run_id)
        return RunState.from_dict(json.loads(text)) if text is not None else None

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


class InMemoryLedgerStore(LedgerStore):
    def __init__(self) -> None:
        self._lines: Dict[str, List[str]] = {}
        self._heads: Dict[str, Tuple[int, Optional[str]]] = {}
        self._lock = threading.Lock()
        self._listeners: List[LedgerListener] = []

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        with self._lock:
            seq, prev = self._heads.get(run_id, (0, None))
            chained = chain_records(records, seq, prev)
            if not chained:
                return []
            self._lines.setdefault(run_id, []).extend(line for _, line in chained)
            self._heads[run_id] = (chained[-1][0]["seq"], chained[-1][0]["record_hash"])
        stored = StoredRecords.of(chained)
        for fn in self._listeners:
            fn(run_id, stored)
        return stored

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self._lines.get(run_id, ())]

    def list_after(self, run_id: str, after: int = 0, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        lines = self._lines.get(run_id, [])[max(0, after) :]  # seq n sits at index n-1
        if limit is not None:
            lines = lines[:limit]
        return [json.loads(line) for line in lines]

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        return self._heads.get(run_id, (0, None))

    def add_listener(self, listener: LedgerListener) -> None:
        self._listeners = self._listeners + [listener]
