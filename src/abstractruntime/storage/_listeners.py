"""The listeners of a database both stores of a pair share (SQLite, PostgreSQL): who hears of a
committed step. A run store adds run and timer listeners, a ledger store ledger listeners; the
database tells them all after each commit, in one order: the records, the run's new status or
wait, a new due time."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .base import LedgerListener, RunListener, RunSummary, StoredRecords


class Listeners:
    def __init__(self) -> None:
        # Replaced, never mutated: a commit iterates the list it read without a lock.
        self.run_listeners: List[RunListener] = []
        self.timer_listeners: List[Callable[[float], None]] = []
        self.ledger_listeners: List[LedgerListener] = []

    def add_run_listener(self, listener: RunListener) -> None:
        self.run_listeners = self.run_listeners + [listener]

    def add_timer_listener(self, listener: Callable[[float], None]) -> None:
        self.timer_listeners = self.timer_listeners + [listener]

    def add_ledger_listener(self, listener: LedgerListener) -> None:
        self.ledger_listeners = self.ledger_listeners + [listener]

    def announce(
        self,
        run_id: str,
        chained: List[Tuple[Dict[str, Any], str]],
        changed: Optional[RunSummary],
        due: Optional[float],
    ) -> List[Dict[str, Any]]:
        """Tell the listeners of a committed write: its records, the run's summary if its status
        or wait `changed`, its new `due` time. Returns the records as stored."""
        stored = StoredRecords.of(chained)
        if stored:
            for fn in self.ledger_listeners:
                fn(run_id, stored)
        if changed is not None:
            for rl in self.run_listeners:
                rl(changed)
        if due is not None:
            self.timer_due(due)
        return stored

    def timer_due(self, due: float) -> None:
        """A timer is due at `due` (a new one, or one a lease hid until now)."""
        for fn in self.timer_listeners:
            fn(due)
