"""In-memory stores for tests and embedding. Nothing survives the process.

Checkpoints and records are kept as JSON text, not live objects: a caller that mutates a
loaded `RunState` or a listed record cannot change what the store holds, and every save is
checked for JSON-safety exactly as a durable store would check it.

`InMemoryRunStore()` and `InMemoryLedgerStore()` made separately are stores of their own (a
Runtime commits them one after the other); `open_stores("memory")` makes a pair on one
`MemoryBackend`, whose run store commits a step's records and checkpoint together.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.clock import Clock
from ..core.jsonutil import dumps, loads
from ..core.models import RunState, StepRecord
from ._index import IndexedRunStore, RunIndex
from .base import LedgerListener, LedgerStore, RunSummary, StepIndex, StoredRecords
from .ledger_chain import chain_records


class MemoryBackend:
    """The ledger side of an in-memory pair: lines, heads, listeners, the step index."""

    def __init__(self) -> None:
        self.lines: Dict[str, List[str]] = {}
        self.heads: Dict[str, Tuple[int, Optional[str]]] = {}
        self.lock = threading.Lock()
        self.listeners: List[LedgerListener] = []
        self.steps = StepIndex(max_runs=1 << 30)  # in memory everything is held anyway

    def append(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        """Chain, keep and announce a step's records; returns them as stored. (One method on
        the path of every step: the kernel's in-memory workload is mostly this and JSON.)"""
        with self.lock:
            seq, prev = self.heads.get(run_id, (0, None))
            chained = chain_records(records, seq, prev)
            if not chained:
                return []
            lines = self.lines.get(run_id)
            if lines is None:
                lines = self.lines[run_id] = []
            lines.extend([line for _, line in chained])
            last = chained[-1][0]
            self.heads[run_id] = (last["seq"], last["record_hash"])
            if run_id in self.steps:  # the index holds only runs it was asked about
                self.steps.add(run_id, [d for d, _ in chained])
        stored = StoredRecords.of(chained)
        for fn in self.listeners:
            fn(run_id, stored)
        return stored

    def records(self, run_id: str) -> List[Dict[str, Any]]:
        return [loads(line) for line in self.lines.get(run_id, ())]


class InMemoryRunStore(IndexedRunStore):
    def __init__(self, *, clock: Optional[Clock] = None, backend: Optional[MemoryBackend] = None) -> None:
        self._data: Dict[str, str] = {}
        self._index = RunIndex(clock=clock)
        self.unit = backend

    def save(self, run: RunState) -> None:
        self.save_encoded(run, dumps(run.to_dict()))

    def save_encoded(self, run: RunState, text: str) -> None:
        """`save`, given `dumps(run.to_dict())` already (see `core.ports.SplitCommit`)."""
        self._data[run.run_id] = text
        self._index.put(RunSummary.from_state(run))

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        b = self.unit
        if b is None:
            return super().commit(run, records)
        text = dumps(run.to_dict())  # first: an unserializable run writes nothing at all
        stored = b.append(run.run_id, records) if records else []
        self._data[run.run_id] = text
        self._index.put(RunSummary.from_state(run))
        return stored

    def load(self, run_id: str) -> Optional[RunState]:
        text = self._data.get(run_id)
        return RunState.from_dict(loads(text)) if text is not None else None


class InMemoryLedgerStore(LedgerStore):
    def __init__(self, *, backend: Optional[MemoryBackend] = None) -> None:
        self.unit = self._b = backend or MemoryBackend()

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        return self._b.append(run_id, records)

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return self._b.records(run_id)

    def list_after(self, run_id: str, after: int = 0, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        lines = self._b.lines.get(run_id, [])[max(0, after) :]  # seq n sits at index n-1
        if limit is not None:
            lines = lines[:limit]
        return [loads(line) for line in lines]

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        return self._b.heads.get(run_id, (0, None))

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        return self._b.steps.step(run_id, step, lambda: self._b.records(run_id))

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        return self._b.steps.completed(run_id, idempotency_key, lambda: self._b.records(run_id))

    def add_listener(self, listener: LedgerListener) -> None:
        self._b.listeners = self._b.listeners + [listener]
