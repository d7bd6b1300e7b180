"""Named copies of a run's state at a moment (for debugging, demos, or starting over from a
known point): `Snapshot.from_run(run=..., name=...)`, kept in memory or as JSON files."""

from __future__ import annotations

import json
import os
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..core.models import RunState, utc_now_iso
from ._durable import atomic_write

__all__ = ["InMemorySnapshotStore", "JsonSnapshotStore", "Snapshot", "SnapshotStore"]


@dataclass
class Snapshot:
    snapshot_id: str
    run_id: str
    step_id: Optional[str] = None
    name: str = ""
    description: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    created_at: str = field(default_factory=utc_now_iso)
    updated_at: str = field(default_factory=utc_now_iso)
    run_state: Dict[str, Any] = field(default_factory=dict)  # RunState.to_dict() at the time

    @classmethod
    def from_run(
        cls,
        *,
        run: RunState,
        name: str,
        description: Optional[str] = None,
        tags: Optional[List[str]] = None,
        step_id: Optional[str] = None,
    ) -> Snapshot:
        return cls(
            snapshot_id=str(uuid.uuid4()),
            run_id=run.run_id,
            step_id=step_id,
            name=name,
            description=description,
            tags=list(tags or []),
            # A copy through JSON: later changes to the run do not reach the snapshot.
            run_state=json.loads(json.dumps(run.to_dict())),
        )

    def to_run(self) -> RunState:
        return RunState.from_dict(self.run_state)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Snapshot:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def matches(self, run_id: Optional[str], tag: Optional[str], query: Optional[str]) -> bool:
        if run_id is not None and self.run_id != run_id:
            return False
        if tag is not None and tag not in self.tags:
            return False
        if query:
            q = query.lower()
            return q in self.name.lower() or q in (self.description or "").lower()
        return True


class SnapshotStore(ABC):
    @abstractmethod
    def save(self, snapshot: Snapshot) -> None: ...

    @abstractmethod
    def load(self, snapshot_id: str) -> Optional[Snapshot]: ...

    @abstractmethod
    def delete(self, snapshot_id: str) -> bool: ...

    @abstractmethod
    def _all(self) -> List[Snapshot]: ...

    def list(
        self,
        *,
        run_id: Optional[str] = None,
        tag: Optional[str] = None,
        query: Optional[str] = None,
        limit: int = 100,
    ) -> List[Snapshot]:
        """Snapshots matching every filter (`query`: in the name or description, any case),
        newest first."""
        found = [s for s in self._all() if s.matches(run_id, tag, query)]
        found.sort(key=lambda s: s.created_at, reverse=True)
        return found[: max(0, int(limit))]


class InMemorySnapshotStore(SnapshotStore):
    def __init__(self) -> None:
        self._items: Dict[str, Dict[str, Any]] = {}
        self._lock = threading.Lock()

    def save(self, snapshot: Snapshot) -> None:
        snapshot.updated_at = utc_now_iso()
        with self._lock:
            self._items[snapshot.snapshot_id] = json.loads(json.dumps(snapshot.to_dict()))

    def load(self, snapshot_id: str) -> Optional[Snapshot]:
        d = self._items.get(snapshot_id)
        return Snapshot.from_dict(json.loads(json.dumps(d))) if d is not None else None

    def delete(self, snapshot_id: str) -> bool:
        with self._lock:
            return self._items.pop(snapshot_id, None) is not None

    def _all(self) -> List[Snapshot]:
        with self._lock:
            items = list(self._items.values())
        return [Snapshot.from_dict(d) for d in items]


class JsonSnapshotStore(SnapshotStore):
    """`snapshot_<id>.json` per snapshot in `base_dir`, each written atomically."""

    def __init__(self, base_dir: Union[str, Path]) -> None:
        self.base_dir = os.path.abspath(str(base_dir))
        os.makedirs(self.base_dir, exist_ok=True)

    def _path(self, snapshot_id: str) -> str:
        if not snapshot_id or "/" in snapshot_id or snapshot_id.startswith("."):
            raise ValueError(f"invalid snapshot id {snapshot_id!r}")
        return os.path.join(self.base_dir, f"snapshot_{snapshot_id}.json")

    def save(self, snapshot: Snapshot) -> None:
        snapshot.updated_at = utc_now_iso()
        atomic_write(self._path(snapshot.snapshot_id), json.dumps(snapshot.to_dict()).encode(), durable=True)

    def load(self, snapshot_id: str) -> Optional[Snapshot]:
        try:
            with open(self._path(snapshot_id), "rb") as f:
                return Snapshot.from_dict(json.loads(f.read()))
        except FileNotFoundError:
            return None

    def delete(self, snapshot_id: str) -> bool:
        try:
            os.unlink(self._path(snapshot_id))
            return True
        except FileNotFoundError:
            return False

    def _all(self) -> List[Snapshot]:
        out = []
        for name in os.listdir(self.base_dir):
            if name.startswith("snapshot_") and name.endswith(".json"):
                s = self.load(name[len("snapshot_") : -len(".json")])
                if s is not None:
                    out.append(s)
        return out
