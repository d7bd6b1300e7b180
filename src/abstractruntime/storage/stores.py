"""A backend's stores, opened together: `open_stores(kind, path, **options)`.

    stores = open_stores("files", "./data")          # or "sqlite", "memory"
    rt = Runtime(stores=stores)
    ...
    stores.close()

The run store and the ledger store of a unit share one journal or one database, so a step's
checkpoint and its ledger records are committed together; artifacts live beside them. The
daemon, the tests' store fixture and anything else that picks a backend by name open it here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from ..core.clock import Clock
from .artifacts import ArtifactStore, FileArtifactStore, InMemoryArtifactStore
from .base import LedgerStore, RunStore

KINDS = ("memory", "files", "sqlite", "postgres")


@dataclass
class Stores:
    runs: RunStore
    ledger: LedgerStore
    artifacts: Optional[ArtifactStore]
    kind: str
    _closed: List[bool] = field(default_factory=lambda: [False], repr=False)

    def close(self) -> None:
        """Flush and close both stores (idempotent; never fails for want of disk: what cannot be
        written stays in the backend's journal for the next open)."""
        if self._closed[0]:
            return
        self._closed[0] = True
        self.runs.close()
        self.ledger.close()

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_stores(
    kind: str,
    path: Any = None,
    *,
    durable: bool = True,
    clock: Optional[Clock] = None,
    cache_bytes: Optional[int] = None,
    artifacts: bool = True,
    schema: Optional[str] = None,
) -> Stores:
    """Open the stores of a backend: "memory" (nothing survives the process), "files" (a folder
    of JSON files with a write-ahead journal) or "sqlite" (`path` is a folder holding
    runtime.sqlite3, or the database file itself), or "postgres" (`path` is the DSN, `schema`
    the PostgreSQL schema; `pip install 'abstractruntime[postgres]'`). Artifacts go to
    `path/artifacts` (the database's tables for postgres)."""
    cache = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
    if kind == "memory":
        from .in_memory import InMemoryLedgerStore, InMemoryRunStore, MemoryBackend

        backend = MemoryBackend()
        return Stores(
            InMemoryRunStore(clock=clock, backend=backend),
            InMemoryLedgerStore(backend=backend),
            InMemoryArtifactStore() if artifacts else None,
            kind,
        )
    if path is None:
        raise ValueError(f"the {kind!r} stores need a path")
    if kind == "postgres":
        # `path` is the DSN (a libpq connection string or URL); `schema` the PostgreSQL schema
        # the tables live in (artifacts too: every daemon on the database reads them).
        from .postgres import (
            DEFAULT_SCHEMA,
            PostgresArtifactStore,
            PostgresDatabase,
            PostgresLedgerStore,
            PostgresRunStore,
        )

        pg = PostgresDatabase(str(path), schema=schema or DEFAULT_SCHEMA, clock=clock)
        return Stores(
            PostgresRunStore(pg),
            PostgresLedgerStore(pg),
            PostgresArtifactStore(pg) if artifacts else None,
            kind,
        )
    path = os.path.abspath(str(path))
    if kind == "files":
        from .json_files import JsonFileRunStore, JsonlLedgerStore

        return Stores(
            JsonFileRunStore(path, durable=durable, clock=clock, **cache),
            JsonlLedgerStore(path, durable=durable),
            FileArtifactStore(os.path.join(path, "artifacts"), durable=durable) if artifacts else None,
            kind,
        )
    if kind == "sqlite":
        from .sqlite import SqliteDatabase, SqliteLedgerStore, SqliteRunStore

        folder, db_path = (
            (os.path.dirname(path), path)
            if path.endswith((".sqlite3", ".db"))
            else (
                path,
                os.path.join(path, "runtime.sqlite3"),
            )
        )
        os.makedirs(folder, exist_ok=True)
        db = SqliteDatabase(db_path, durable=durable, **cache)
        return Stores(
            SqliteRunStore(db, clock=clock),
            SqliteLedgerStore(db),
            FileArtifactStore(os.path.join(folder, "artifacts"), durable=durable) if artifacts else None,
            kind,
        )
    raise ValueError(f"unknown store {kind!r} (expected one of: {', '.join(KINDS)})")
