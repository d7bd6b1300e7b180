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
from .leases import LeaseTable
from .models import RunState, RunStatus, StepRecord


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
        # A run store that keeps the encoded text (the in-memory one) takes it as is: the
        # checkpoint is encoded once per step, not twice.
        self._save_encoded = getattr(runs, "save_encoded", None)

    def __getattr__(self, name: str) -> Any:  # everything else is the run store's
        return getattr(self.runs, name)

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        text = dumps(run.to_dict())  # an unserializable run fails before anything is written
        stored = self.ledger.append_many(run.run_id, records) if records else []
        if self._save_encoded is not None:
            self._save_encoded(run, text)
        else:
            self.runs.save(run)
        return stored


class HostRunStore:
    """A run store of the host's own that offers only `save` and `load` (which the published
    package accepted): the leases the runtime takes on its runs live in this process, and the
    runs waiting on an event are found through the store's `list_runs` if it has one."""

    PORT = ("load", "try_lease", "release_lease", "find_waiting_on")

    @classmethod
    def is_complete(cls, store: Any) -> bool:
        return all(callable(getattr(store, name, None)) for name in cls.PORT)

    def __init__(self, store: Any) -> None:
        self.store = store
        self._leases = LeaseTable()

    def __getattr__(self, name: str) -> Any:  # anything else is the store's own
        return getattr(self.store, name)

    def load(self, run_id: str) -> Optional[RunState]:
        return self.store.load(run_id)

    def save(self, run: RunState) -> None:
        self.store.save(run)

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        if records:
            raise NotImplementedError(f"{type(self.store).__name__} keeps no ledger")
        self.store.save(run)
        return []

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        return self._leases.try_lease(run_id, owner, lease_s)

    def release_lease(self, run_id: str, owner: str) -> None:
        self._leases.release(run_id, owner)

    def find_waiting_on(self, wait_key: str) -> List[str]:
        list_runs = getattr(self.store, "list_runs", None)
        if list_runs is None:
            return []  # it cannot be asked: EMIT_EVENT resumes no run of it
        return [
            r.run_id
            for r in list_runs(status=RunStatus.WAITING, limit=100_000)
            if r.waiting is not None and r.waiting.wait_key == wait_key
        ]


def same_unit(runs: Any, ledger: Any) -> bool:
    """Whether two stores are views of one backend (their `unit`), so that the run store's
    commit writes the ledger's records too."""
    unit = getattr(runs, "unit", None)
    return unit is not None and unit is getattr(ledger, "unit", None)
