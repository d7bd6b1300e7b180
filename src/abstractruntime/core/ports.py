"""What the kernel needs from storage: two ports, named after exactly what `Runtime` calls.

A backend implements both as one unit (its run store and ledger store share one journal or one
database): `RunPort.commit(run, records)` then writes a step's checkpoint and its ledger records
together, atomically where the backend can. No store inspects another: a `Runtime` given two
stores asks each for its `unit` once, and if they are not two views of one backend it commits
through `SplitCommit` (records first, then the checkpoint; the idempotency keys make a replay
after a crash in between reuse the recorded results).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Protocol, runtime_checkable

from .jsonutil import dumps
from .models import RunState, StepRecord


@runtime_checkable
class RunPort(Protocol):
    """Checkpoints, as the runtime uses them."""

    def load(self, run_id: str) -> Optional[RunState]: ...

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        """Store a step: its ledger records and its checkpoint, together; returns the records
        as stored. Nothing is written if the run is not JSON-serializable."""

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool: ...

    def release_lease(self, run_id: str, owner: str) -> None: ...

    def find_waiting_on(self, wait_key: str) -> List[str]: ...


@runtime_checkable
class LedgerPort(Protocol):
    """Ledger records, as the runtime uses them."""

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]: ...

    def list(self, run_id: str) -> List[Dict[str, Any]]: ...

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        """The newest record of a host effect (one with an idempotency key) made at node
        execution `step` of the run, or None: what a replay of that step must match."""


class SplitCommit:
    """The commit of a run store and a ledger store that are not one unit: the records go to
    the ledger, then the checkpoint to the run store. (A crash in between leaves records beyond
    the checkpoint: the replayed step finds its recorded effect results by their keys.)"""

    def __init__(self, runs: Any, ledger: Any) -> None:
        self.runs, self.ledger = runs, ledger

    def __getattr__(self, name: str) -> Any:  # everything else is the run store's
        return getattr(self.runs, name)

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        text = dumps(run.to_dict())  # an unserializable run fails before anything is written
        stored = self.ledger.append_many(run.run_id, records) if records else []
        # A run store that keeps the encoded text (the in-memory one) takes it as is: the
        # checkpoint is encoded once per step, not twice.
        save_encoded = getattr(self.runs, "save_encoded", None)
        if save_encoded is not None:
            save_encoded(run, text)
        else:
            self.runs.save(run)
        return stored


def same_unit(runs: Any, ledger: Any) -> bool:
    """Whether two stores are views of one backend (their `unit`), so that the run store's
    commit writes the ledger's records too."""
    unit = getattr(runs, "unit", None)
    return unit is not None and unit is getattr(ledger, "unit", None)
