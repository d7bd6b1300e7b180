"""Ledger hash chain (the math lives in `core.ledger_hash`) and a compatibility decorator."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.ledger_hash import chain_records, compute_record_hash, verify_ledger_chain
from ..core.models import StepRecord
from .base import LedgerListener, LedgerStore

__all__ = ["HashChainedLedgerStore", "chain_records", "compute_record_hash", "verify_ledger_chain"]


class HashChainedLedgerStore(LedgerStore):
    """Kept for code written against the published package: every store here chains its
    records already, so this decorator only delegates."""

    def __init__(self, inner: LedgerStore):
        self._inner = inner

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        return self._inner.append_many(run_id, records)

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return self._inner.list(run_id)

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        return self._inner.head(run_id)

    def add_listener(self, listener: LedgerListener) -> None:
        self._inner.add_listener(listener)

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        return self._inner.find_completed(run_id, idempotency_key)

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        return self._inner.find_step(run_id, step)

    @property
    def unit(self) -> Any:
        return getattr(self._inner, "unit", None)

    def close(self) -> None:
        self._inner.close()
