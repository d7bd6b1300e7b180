"""Ledger hash chain (the math lives in `core.ledger_hash`) and a compatibility decorator."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.ledger_hash import chain_records, compute_record_hash, verify_ledger_chain
from ..core.models import StepRecord
from .base import LedgerListener, LedgerStore

__all__ = ["HashChainedLedgerStore", "chain_records", "compute_record_hash", "verify_ledger_chain"]


class HashChainedLedgerStore(LedgerStore):
    """Kept for code written against the published package. Every store here (and every
    subclass of `LedgerStore`) chains its records already, so over those this only delegates;
    over any other object with `append(record)` and `list(run_id)` it does the chaining."""

    def __init__(self, inner: Any):
        self._inner = inner

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        if isinstance(self._inner, LedgerStore):
            return self._inner.append_many(run_id, records)
        seq, prev = self.head(run_id)
        stored = [d for d, _ in chain_records(list(records), seq, prev)]
        for d in stored:
            self._inner.append(StepRecord.from_dict(d))
        return stored

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return self._inner.list(run_id)

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        if isinstance(self._inner, LedgerStore):
            return self._inner.head(run_id)
        return super().head(run_id)

    def add_listener(self, listener: LedgerListener) -> None:
        if isinstance(self._inner, LedgerStore):
            self._inner.add_listener(listener)
        else:
            super().add_listener(listener)

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        if isinstance(self._inner, LedgerStore):
            return self._inner.find_completed(run_id, idempotency_key)
        return super().find_completed(run_id, idempotency_key)

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        if isinstance(self._inner, LedgerStore):
            return self._inner.find_step(run_id, step)
        return super().find_step(run_id, step)

    @property
    def unit(self) -> Any:
        return getattr(self._inner, "unit", None)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()
