"""Shared fixtures: every store backend, built the same way for every test that takes one."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple  # noqa: F401

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from abstractruntime import (  # noqa: E402
    InMemoryLedgerStore,
    InMemoryRunStore,
    JsonFileRunStore,
    JsonlLedgerStore,
    SqliteDatabase,
    SqliteLedgerStore,
    SqliteRunStore,
)
from abstractruntime.storage import open_stores  # noqa: E402

STORE_KINDS = ["memory", "jsonfile", "sqlite", "postgres"]
KIND = {"memory": "memory", "jsonfile": "files", "sqlite": "sqlite", "postgres": "postgres"}


class StoreFactory:
    """Opens (and re-opens) one backend's run + ledger store pair on one folder."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self._mem = None
        self.opened: list = []
        # The time the run stores' indexes go by (leases, due timers); None: the system clock.
        self.clock = None

    @property
    def durable_across_reopen(self) -> bool:
        return self.kind != "memory"

    def open(self):
        if self.kind == "memory":
            if self._mem is None:  # memory has nothing to re-open: the same pair again
                self._mem = open_stores("memory", clock=self.clock)
            return self._mem.runs, self._mem.ledger
        if self.kind == "postgres":  # a schema of its own on the session's server
            stores = open_stores("postgres", self.dsn, schema=self.schema, clock=self.clock)
            self.opened.append(stores)
            return stores.runs, stores.ledger
        stores = open_stores(KIND[self.kind], self.root, clock=self.clock)
        self.opened.append(stores)
        return stores.runs, stores.ledger

    def close_all(self) -> None:
        for stores in self.opened:
            stores.close()
        self.opened.clear()


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for this test session (see tests/pg_server.py)."""
    from pg_server import PgServer, bindir

    found = bindir()
    if found is None:
        message = "postgres tier skipped: initdb not found; install PostgreSQL (Debian: apt-get install postgresql)"
        if IN_CI:
            pytest.fail(f"{message} (in CI, make test installs it)", pytrace=False)
        pytest.skip(message)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("postgres tier skipped: psycopg not installed; pip install 'abstractruntime[postgres]'")
    server = PgServer(found).start()
    yield server
    server.stop()


@pytest.fixture(params=STORE_KINDS)
def stores(request, tmp_path) -> Iterator[StoreFactory]:
    f = StoreFactory(request.param, tmp_path / "data")
    os.makedirs(f.root, exist_ok=True)
    if request.param == "postgres":
        import uuid

        f.dsn = request.getfixturevalue("pg_server").dsn
        f.schema = "t_" + uuid.uuid4().hex[:16]
    yield f
    f.close_all()


@pytest.fixture
def seed_path() -> Path:
    # The seed lives beside the checkout in CI only; a clone on its own has nothing beside it.
    p = ROOT.parent / "shared" / "seed" / "getting-started.md"
    if not p.exists():
        pytest.skip(f"the seed document is not beside this checkout ({p}); CI provides it")
    return p


IN_CI = os.environ.get("CI") == "true"


def require_tool(command: str, install: str, tier: str) -> str:
    """The path of `command`, or skip the calling module with one line naming what to install.

    In CI (`CI=true`) `make test` installs every tool, so a missing one fails instead."""
    path = shutil.which(command)
    if path is not None:
        return path
    message = f"{tier} tier skipped: {command} not found; install {install}"
    if IN_CI:
        pytest.fail(f"{message} (in CI, make test installs it)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


Factory = Callable[[], Tuple[object, object]]


# -- the compatibility tier (tests/compat): stores built as a user of the published package
# builds them, with the public constructors rather than open_stores.


class PublishedStores:
    """A run store and a ledger store of one kind, opened (and re-opened) on one folder."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root = kind, root
        self.opened: List[Any] = []
        self._mem: Any = None

    def open(self) -> Tuple[Any, Any]:
        if self.kind == "memory":
            if self._mem is None:
                self._mem = InMemoryRunStore(), InMemoryLedgerStore()
            return self._mem
        if self.kind == "jsonfile":
            pair: Tuple[Any, Any] = JsonFileRunStore(self.root), JsonlLedgerStore(self.root)
        else:
            db = SqliteDatabase(self.root / "runs.sqlite3")
            pair = SqliteRunStore(db), SqliteLedgerStore(db)
        self.opened.append(pair)
        return pair

    def close(self) -> None:
        for runs, ledger in self.opened:
            for store in (runs, ledger):
                getattr(store, "close", lambda: None)()  # the published stores have no close()
        self.opened.clear()


@pytest.fixture(params=["memory", "jsonfile", "sqlite"])
def published(request, tmp_path):
    s = PublishedStores(request.param, tmp_path / "data")
    s.root.mkdir()
    yield s
    s.close()
