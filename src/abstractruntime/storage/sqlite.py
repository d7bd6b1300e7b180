"""SQLite stores: runs and ledger in one database file.

Durable by default: WAL with `synchronous=FULL`, so a commit is on disk (the WAL is fsync'd)
when it returns; `durable=False` uses `synchronous=NORMAL` (safe against a process crash, a
power loss may drop the newest commits). A step's ledger records and its checkpoint are
written in one transaction, so they can never disagree.

One connection, guarded by a lock: SQLite serializes writers anyway, and one connection lets
every thread see every commit at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..core.clock import Clock
from ..core.jsonutil import dumps, loads
from ..core.leases import LeaseTable
from ..core.models import RunState, StepRecord
from . import _fs
from ._cache import DEFAULT_BYTES, BoundedCache
from ._durable import Batcher, unavailable
from ._index import due_epoch
from ._listeners import Listeners
from .base import (
    LedgerListener,
    LedgerStore,
    RunListener,
    RunStore,
    RunSummary,
    _reason_value,
    _status_value,
)
from .ledger_chain import chain_records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    wait_reason TEXT,
    wait_key TEXT,
    due REAL,
    ord INTEGER NOT NULL,
    summary TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs(status, ord);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs(workflow_id, ord);
CREATE INDEX IF NOT EXISTS runs_by_wait_key ON runs(wait_key) WHERE wait_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_by_due ON runs(due) WHERE due IS NOT NULL;
CREATE TABLE IF NOT EXISTS ledger (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""

# Migrations, in order, each applied once (PRAGMA user_version counts them). 1: the columns
# that index host-effect records by step and by idempotency key (find_step, find_completed).
_MIGRATIONS = [
    """
    ALTER TABLE ledger ADD COLUMN step INTEGER;
    ALTER TABLE ledger ADD COLUMN idem_key TEXT;
    ALTER TABLE ledger ADD COLUMN status TEXT;
    CREATE INDEX IF NOT EXISTS ledger_by_step ON ledger(run_id, step) WHERE idem_key IS NOT NULL;
    CREATE INDEX IF NOT EXISTS ledger_by_key ON ledger(run_id, idem_key) WHERE idem_key IS NOT NULL;
    """,
]


class _Job:
    """One writer's part of a group commit."""

    __slots__ = (
        "run",
        "run_id",
        "records",
        "state_text",
        "summary",
        "chained",
        "changed",
        "due",
        "done",
        "error",
        "_wake",
        "_lead",
    )

    def __init__(
        self,
        run: Optional[RunState],
        run_id: str,
        records: List[StepRecord],
        state_text: Optional[str],
        summary: Optional[RunSummary],
    ) -> None:
        self.run, self.run_id, self.records, self.state_text, self.summary = run, run_id, records, state_text, summary
        self.chained: List[Tuple[Dict[str, Any], str]] = []
        self.changed = False  # its status or wait changed (run listeners hear only of those)
        self.due: Optional[float] = None  # the timer it now waits on
        self.done = False
        self.error: Optional[BaseException] = None


class SqliteDatabase:
    """The shared database of a `SqliteRunStore` and a `SqliteLedgerStore`."""

    def __init__(self, path: Any, *, durable: bool = True, cache_bytes: int = DEFAULT_BYTES) -> None:
        self.path = str(path)
        self.durable = durable
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.executescript(_SCHEMA)
        self._migrate()
        self.heads: Dict[str, Tuple[int, Optional[str]]] = {}
        row = self.conn.execute("SELECT COALESCE(MAX(ord), 0) FROM runs").fetchone()
        self.ord = int(row[0])
        self.listeners = Listeners()
        self._batcher = Batcher(self._commit_batch)
        # The newest checkpoints as committed. A tick reads back the state it committed
        # moments ago, and reading through the connection would wait behind the batch
        # leader's lock for a whole commit (its fsync); one daemon owns the database.
        self.recent: BoundedCache[str] = BoundedCache(cache_bytes)

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        for n, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(None, (x.strip() for x in script.split(";"))):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={n}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def find_one(self, sql: str, args: tuple) -> Optional[Dict[str, Any]]:
        with self.lock:
            row = self.conn.execute(sql, args).fetchone()
        return loads(row[0]) if row else None

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        h = self.heads.get(run_id)
        if h is None:
            with self.lock:
                row = self.conn.execute(
                    "SELECT seq, record FROM ledger WHERE run_id=? ORDER BY seq DESC LIMIT 1", (run_id,)
                ).fetchone()
                h = (int(row[0]), json.loads(row[1])["record_hash"]) if row else (0, None)
                self._remember_head(run_id, h)
        return h

    def _remember_head(self, run_id: str, head: Tuple[int, Optional[str]]) -> None:
        # A cache of each run's last ledger record: bounded (a miss is one indexed query).
        if len(self.heads) >= 65536 and run_id not in self.heads:
            self.heads.clear()
        self.heads[run_id] = head

    def write(self, run: Optional[RunState], run_id: str, records: List[StepRecord]) -> List[Dict[str, Any]]:
        """Insert records and upsert the checkpoint in one transaction.

        Group commit: concurrent writers join a batch that the first of them commits as one
        transaction, so one WAL fsync covers them all (each writer's part sits in a savepoint:
        one that fails leaves the others intact). A lone writer commits alone, at once.
        """
        state_text = dumps(run.to_dict()) if run is not None else None  # fails before anything is written
        job = _Job(run, run_id, list(records), state_text, RunSummary.from_state(run) if run is not None else None)
        self._batcher.submit(job)
        if job.error is not None:
            if isinstance(job.error, (OSError, sqlite3.OperationalError)):
                raise unavailable(job.error, f"committing to {self.path}") from job.error
            raise job.error
        return self._announce(job)

    def write_many(self, items: List[Tuple[RunState, List[StepRecord]]]) -> List[Any]:
        """`write` for several runs' steps, in one transaction with one sync. Per item: the
        records as stored, or the error that kept that run out (a checkpoint that cannot be
        encoded; a row that fails). A storage failure raises, and none is committed."""
        out: List[Any] = [None] * len(items)
        jobs: List[Tuple[int, _Job]] = []
        for i, (run, records) in enumerate(items):
            try:
                text = dumps(run.to_dict())
            except (TypeError, ValueError) as e:
                out[i] = e
                continue
            jobs.append((i, _Job(run, run.run_id, list(records), text, RunSummary.from_state(run))))
        if jobs:
            self._batcher.submit_many([job for _, job in jobs])
        failed = [job.error for _, job in jobs if isinstance(job.error, (OSError, sqlite3.OperationalError))]
        if failed:
            raise unavailable(failed[0], f"committing to {self.path}") from failed[0]
        for i, job in jobs:
            out[i] = job.error if job.error is not None else self._announce(job)
        return out

    def _announce(self, job: _Job) -> List[Dict[str, Any]]:
        """Tell the listeners of a committed job; returns its records as stored."""
        return self.listeners.announce(job.run_id, job.chained, job.summary if job.changed else None, job.due)

    def _commit_batch(self, batch: List[_Job]) -> None:
        with self.lock:
            c = self.conn
            ok: List[_Job] = []
            try:
                c.execute("BEGIN IMMEDIATE")
                for i, job in enumerate(batch):
                    try:
                        job.chained = chain_records(job.records, *self.head(job.run_id)) if job.records else []
                    except (TypeError, ValueError) as e:
                        job.error = e
                        continue
                    c.execute(f"SAVEPOINT j{i}")
                    try:
                        if job.chained:
                            c.executemany(
                                "INSERT INTO ledger (run_id, seq, record, step, idem_key, status) VALUES (?, ?, ?, ?, ?, ?)",
                                [
                                    (job.run_id, d["seq"], line, d.get("step"), d.get("idempotency_key"), d["status"])
                                    for d, line in job.chained
                                ],
                            )
                        if job.run is not None and job.summary is not None:
                            job.changed, job.due = self._upsert(job.run, job.summary, job.state_text or "")
                        c.execute(f"RELEASE j{i}")
                        ok.append(job)
                    except sqlite3.Error as e:
                        c.execute(f"ROLLBACK TO j{i}")
                        c.execute(f"RELEASE j{i}")
                        job.error = e
                _fs.check("sqlite_commit")
                c.execute("COMMIT")
                _fs.check("sqlite_committed")
            except BaseException as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                for job in batch:
                    if job.error is None:
                        job.error = e if isinstance(e, Exception) else RuntimeError(str(e))
                ok = []
            for job in ok:
                if job.chained:
                    self._remember_head(job.run_id, (job.chained[-1][0]["seq"], job.chained[-1][0]["record_hash"]))
                if job.state_text is not None:
                    self.recent.put(job.run_id, job.state_text)
        for job in batch:
            job.done = True

    def _upsert(self, run: RunState, s: RunSummary, state_text: str) -> Tuple[bool, Optional[float]]:
        due = due_epoch(s)
        row = self.conn.execute("SELECT status, wait_key, due FROM runs WHERE run_id=?", (run.run_id,)).fetchone()
        changed = row is None or row[0] != s.status or row[1] != s.wait_key
        new_timer = due is not None and (row is None or row[2] != due)
        if row is None or row[0] != s.status:
            self.ord += 1
            ord_sql, ord_arg = "?", self.ord
        else:
            ord_sql, ord_arg = "ord", None
        args: tuple = (run.workflow_id, s.status, s.wait_reason, s.wait_key, due, dumps(s.to_dict()), state_text)
        if row is None:
            self.conn.execute(
                "INSERT INTO runs (workflow_id, status, wait_reason, wait_key, due, summary, state, ord, run_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                args + (self.ord, run.run_id),
            )
        else:
            self.conn.execute(
                "UPDATE runs SET workflow_id=?, status=?, wait_reason=?, wait_key=?, due=?, summary=?, state=?, "
                f"ord={ord_sql} WHERE run_id=?",
                args + ((ord_arg,) if ord_arg is not None else ()) + (run.run_id,),
            )
        return changed, (due if new_timer else None)

    def close(self) -> None:
        with self.lock:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()


class SqliteRunStore(RunStore):
    def __init__(self, db: Any, *, clock: Optional[Clock] = None) -> None:
        self.db = self.unit = db if isinstance(db, SqliteDatabase) else SqliteDatabase(db)
        # Leases live in memory: one daemon owns a data folder (a shared database backend
        # keeps them in the database instead).
        self._leases = LeaseTable(clock=clock)

    def save(self, run: RunState) -> None:
        self.db.write(run, run.run_id, [])

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        return self.db.write(run, run.run_id, records)

    def commit_many(self, items: List[Tuple[RunState, List[StepRecord]]]) -> List[Any]:
        """Several runs' steps in one transaction (see `SqliteDatabase.write_many`)."""
        return self.db.write_many(items)

    def load(self, run_id: str) -> Optional[RunState]:
        cached = self.db.recent.get(run_id)
        if cached is not None:
            return RunState.from_dict(loads(cached))
        with self.db.lock:
            row = self.db.conn.execute("SELECT state FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return RunState.from_dict(loads(row[0])) if row else None

    def list_run_summaries(self, *, status=None, wait_reason=None, workflow_id=None, limit=100, after=None):
        where: List[str] = []
        args: List[Any] = []
        st, reason = _status_value(status), _reason_value(wait_reason)
        if st is not None:
            where.append("status=?")
            args.append(st)
        if reason is not None:
            where.append("wait_reason=?")
            args.append(reason)
        if workflow_id is not None:
            where.append("workflow_id=?")
            args.append(workflow_id)
        if after is not None:
            where.append("ord > COALESCE((SELECT ord FROM runs WHERE run_id=?), -1)")
            args.append(after)
        sql = "SELECT summary FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ord LIMIT ?"
        args.append(-1 if limit is None else int(limit))
        with self.db.lock:
            rows = self.db.conn.execute(sql, args).fetchall()
        return [RunSummary.from_dict(loads(r[0])) for r in rows]

    def newest_summaries(self, *, status=None, wait_reason=None, workflow_id=None, limit=100):
        where: List[str] = []
        args: List[Any] = []
        for column, value in (
            ("status", _status_value(status)),
            ("wait_reason", _reason_value(wait_reason)),
            ("workflow_id", workflow_id),
        ):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        sql = (
            "SELECT summary FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY json_extract(summary, '$.updated_at') DESC, ord DESC LIMIT ?"
        )
        args.append(-1 if limit is None else int(limit))
        with self.db.lock:
            rows = self.db.conn.execute(sql, args).fetchall()
        return [RunSummary.from_dict(loads(r[0])) for r in rows]

    def count_by_status(self) -> Dict[str, int]:
        with self.db.lock:
            rows = self.db.conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        return {s: n for s, n in rows}

    def find_waiting_on(self, wait_key: str) -> List[str]:
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT run_id FROM runs WHERE wait_key=? AND status='waiting'", (wait_key,)
            ).fetchall()
        return [r[0] for r in rows]

    def _due_rows(self, now: Optional[float], limit: int) -> List[Tuple[str, float]]:
        sql = "SELECT run_id, due FROM runs WHERE due IS NOT NULL AND status='waiting'"
        args: list = []
        if now is not None:
            sql += " AND due <= ?"
            args.append(now)
        sql += " ORDER BY due LIMIT ?"
        args.append(limit)
        with self.db.lock:
            return self.db.conn.execute(sql, args).fetchall()

    def next_due_at(self) -> Optional[float]:
        for rid, due in self._due_rows(None, 64 + len(self._leases)):
            if self._leases.is_free(rid):
                return float(due)
        return None

    def claim_due_runs(self, *, now: float, owner: str, lease_s: float, limit: int) -> List[str]:
        out: List[str] = []
        for rid, _ in self._due_rows(now, limit + len(self._leases)):
            if len(out) >= limit:
                break
            if self._leases.claim(rid, owner, lease_s):
                out.append(rid)
        return out

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        return self._leases.try_lease(run_id, owner, lease_s)

    def release_lease(self, run_id: str, owner: str) -> None:
        if not self._leases.release(run_id, owner):
            return
        # A timer hidden while its run was leased is due again: tell the timer listeners (a
        # scheduler that looked meanwhile skipped it). The run itself did not change.
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT due FROM runs WHERE run_id=? AND status='waiting' AND due IS NOT NULL", (run_id,)
            ).fetchone()
        if row is not None:
            self.db.listeners.timer_due(float(row[0]))

    def add_listener(self, listener: RunListener) -> None:
        self.db.listeners.add_run_listener(listener)

    def add_timer_listener(self, listener: Callable[[float], None]) -> None:
        self.db.listeners.add_timer_listener(listener)

    def close(self) -> None:
        self.db.close()


class SqliteLedgerStore(LedgerStore):
    def __init__(self, db: Any) -> None:
        self.db = self.unit = db if isinstance(db, SqliteDatabase) else SqliteDatabase(db)

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        return self.db.write(None, run_id, list(records))

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return self.list_after(run_id, 0)

    def list_after(self, run_id: str, after: int = 0, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT record FROM ledger WHERE run_id=? AND seq>? ORDER BY seq LIMIT ?",
                (run_id, after, -1 if limit is None else limit),
            ).fetchall()
        return [loads(r[0]) for r in rows]

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        return self.db.head(run_id)

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        return self.db.find_one(
            "SELECT record FROM ledger WHERE run_id=? AND step=? AND idem_key IS NOT NULL ORDER BY seq DESC LIMIT 1",
            (run_id, step),
        )

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        return self.db.find_one(
            "SELECT record FROM ledger WHERE run_id=? AND idem_key=? AND status='completed' ORDER BY seq DESC LIMIT 1",
            (run_id, idempotency_key),
        )

    def add_listener(self, listener: LedgerListener) -> None:
        self.db.listeners.add_ledger_listener(listener)

    def close(self) -> None:
        self.db.close()
