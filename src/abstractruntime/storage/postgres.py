"""PostgreSQL stores: runs, ledger and leases in one database that several daemons share.

`pip install 'abstractruntime[postgres]'` (psycopg 3 and its connection pool). A step is one
transaction: its ledger records (chained to the run's head, read inside the transaction) and
its checkpoint, so they never disagree, whichever daemon wrote them. Leases are rows with an
owner and an expiry (by the store's clock), so a run is ticked by one daemon at a time and a
daemon that stops renewing loses them; due timers are claimed with `FOR UPDATE SKIP LOCKED`.

The schema lives in its own PostgreSQL schema (default `abstractruntime`) and is created and
migrated at open, under an advisory lock: daemons starting together apply each migration once.
The DSN is handed to libpq as it is: its password comes from the DSN, `PGPASSWORD` or a pgpass
or service file, and the stores never log it.

Each step's transaction also writes its events (one row per ledger record, one per change of
the run's status or wait) under a cursor from one database sequence: `postgres_feed.py` reads
them back in cursor order for every daemon's subscribers, whichever daemon committed them.
The stores' listeners hear this process's commits only.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import RunBusyError, StorageUnavailableError
from ..core.jsonutil import dumps, loads
from ..core.ledger_hash import chain_records
from ..core.models import RunState, StepRecord
from ._durable import unavailable
from ._index import due_epoch
from ._listeners import Listeners
from .artifacts import ArtifactMetadata, ArtifactStore, _matches, check_artifact_id
from .base import (
    LedgerListener,
    LedgerStore,
    RunListener,
    RunStore,
    RunSummary,
    _reason_value,
    _status_value,
)

log = logging.getLogger("abstractruntime.storage")

DEFAULT_SCHEMA = "abstractruntime"

# Migrations, in order, each applied once; `meta.schema_version` counts them.
_MIGRATIONS = [
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        workflow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        wait_reason TEXT,
        wait_key TEXT,
        due DOUBLE PRECISION,
        ord BIGINT NOT NULL,
        summary TEXT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE SEQUENCE run_ord;
    CREATE INDEX runs_by_status ON runs (status, ord);
    CREATE INDEX runs_by_workflow ON runs (workflow_id, ord);
    CREATE INDEX runs_by_ord ON runs (ord);
    CREATE INDEX runs_by_wait_key ON runs (wait_key) WHERE wait_key IS NOT NULL;
    CREATE INDEX runs_by_due ON runs (due) WHERE due IS NOT NULL;
    CREATE TABLE ledger (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        record TEXT NOT NULL,
        hash TEXT NOT NULL,
        step INTEGER,
        idem_key TEXT,
        status TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE INDEX ledger_by_step ON ledger (run_id, step) WHERE idem_key IS NOT NULL;
    CREATE INDEX ledger_by_key ON ledger (run_id, idem_key) WHERE idem_key IS NOT NULL;
    CREATE TABLE leases (
        run_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL
    )
    """,
    # 2: the event feed every daemon reads (postgres_feed.py), and the daemons' heartbeats.
    """
    CREATE SEQUENCE event_cursor;
    CREATE TABLE events (
        cursor BIGINT PRIMARY KEY,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        first BOOLEAN NOT NULL,
        committed_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX events_by_run ON events (run_id, cursor);
    CREATE INDEX events_by_time ON events (committed_at);
    CREATE TABLE daemons (
        daemon_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        info TEXT NOT NULL
    );
    CREATE INDEX leases_by_owner ON leases (owner)
    """,
    # 3: artifacts (content-addressed blobs, and each artifact's metadata).
    """
    CREATE TABLE blobs (
        blob_id TEXT PRIMARY KEY,
        content BYTEA NOT NULL
    );
    CREATE TABLE artifacts (
        artifact_id TEXT PRIMARY KEY,
        blob_id TEXT NOT NULL REFERENCES blobs (blob_id),
        run_id TEXT,
        content_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        meta TEXT NOT NULL
    );
    CREATE INDEX artifacts_by_run ON artifacts (run_id, created_at);
    CREATE INDEX artifacts_by_blob ON artifacts (blob_id)
    """,
    # 4: each run's write count, which fences a daemon whose lease ran out mid-step.
    """
    ALTER TABLE runs ADD COLUMN ver BIGINT NOT NULL DEFAULT 0
    """,
]

# Every committed event row is announced on this channel (after the commit, coalesced), so the
# other daemons read the feed at once instead of at their next poll.
CHANNEL = "abstractruntime_events"


def _imports() -> Tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as e:  # the extra is not installed: say which
        raise ImportError(
            "the postgres store needs psycopg 3 and psycopg_pool: pip install 'abstractruntime[postgres]'"
        ) from e
    return psycopg, psycopg_pool


class _Write:
    """One run's part of a transaction, prepared before anything is sent."""

    __slots__ = ("run_id", "chained", "changed", "due", "ver", "row", "new", "bump", "events")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.chained: List[Tuple[Dict[str, Any], str]] = []
        self.changed = False
        self.due: Optional[float] = None
        self.ver: Optional[int] = None
        self.row: Optional[Tuple[Any, ...]] = None  # the run's columns, if its checkpoint is written
        self.new = False  # inserted, not updated
        self.bump = False  # its status changed: it moves to the end of the listing order
        self.events: List[Tuple[Any, ...]] = []


def _columns(rows: List[Tuple[Any, ...]], n: int) -> List[List[Any]]:
    """Rows as n column arrays (one parameter each, unnested by the server)."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(n)]


class PostgresDatabase:
    """The shared database of a `PostgresRunStore` and a `PostgresLedgerStore`."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = 16,
        clock: Optional[Clock] = None,
    ) -> None:
        psycopg, pool = _imports()
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"schema must be letters, digits and _, not {schema!r}")
        self.schema = schema
        self.clock = clock or SYSTEM_CLOCK
        self._errors = (psycopg.OperationalError, psycopg.InterfaceError, pool.PoolTimeout)
        self._integrity = psycopg.errors.UniqueViolation
        options = f"-c search_path={schema}"
        try:
            # One connection first, so that a wrong DSN or a server that is down is reported at
            # once, with libpq's own words (the pool would retry for its whole timeout).
            psycopg.connect(dsn, connect_timeout=10, options=options).close()
        except psycopg.Error as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise StorageUnavailableError(f"cannot connect to PostgreSQL: {reason}", errno=None, cause=reason) from None
        try:
            # Autocommit: a read is one round trip (a write opens its own transaction).
            self.pool = pool.ConnectionPool(
                dsn,
                min_size=1,
                max_size=max(1, pool_size),
                kwargs={"options": options, "autocommit": True},
                open=True,
                timeout=30,
            )
            self.pool.wait(timeout=30)
            # Leases, claims and heartbeats are not waited on to reach the disk: they only
            # matter while their daemon lives, and a server that crashes ends every session
            # (and so every tick) with them. Steps are always committed durably (`pool`).
            self.fast = pool.ConnectionPool(
                dsn,
                min_size=1,
                max_size=max(1, pool_size // 2),
                kwargs={"options": options + " -c synchronous_commit=off", "autocommit": True},
                open=True,
                timeout=30,
            )
        except self._errors as e:
            raise unavailable(e, "connecting to PostgreSQL") from e
        self._closed = False
        self.listeners = Listeners()
        # Told after each commit that wrote events (the feed reads them and tells the others).
        self.commit_listeners: List[Callable[[], None]] = []
        self.channel = f"{CHANNEL}_{schema}"
        # The write count of each run as this process last read or wrote it: a write over a
        # count that moved meanwhile is another daemon's step (this one's lease ran out: a
        # long pause, a frozen machine) and is refused, so no step is applied twice.
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._seen_lock = threading.Lock()
        self.dsn, self.options = dsn, options
        self._migrate()

    def _migrate(self) -> None:
        with self.pool.connection() as conn, conn.transaction():
            # One migrator at a time, across every process on this database.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"abstractruntime:{self.schema}",))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            for n, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(None, (x.strip() for x in script.split(";"))):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (str(n),),
                )

    # -- reads ------------------------------------------------------------------------------------

    def rows(self, sql: str, args: Any = ()) -> List[Tuple[Any, ...]]:
        try:
            with self.pool.connection() as conn:
                return conn.execute(sql, args).fetchall()
        except self._errors as e:
            raise unavailable(e, "reading from PostgreSQL") from e

    def fast_rows(self, sql: str, args: Any = ()) -> List[Tuple[Any, ...]]:
        """One statement on a lease connection (its commit not waited on to reach the disk)."""
        try:
            with self.fast.connection() as conn:
                cur = conn.execute(sql, args)
                return cur.fetchall() if cur.description else []
        except self._errors as e:
            raise unavailable(e, "writing a lease to PostgreSQL") from e

    def fast_one(self, sql: str, args: Any = ()) -> Optional[Tuple[Any, ...]]:
        got = self.fast_rows(sql, args)
        return got[0] if got else None

    def one(self, sql: str, args: Any = ()) -> Optional[Tuple[Any, ...]]:
        got = self.rows(sql, args)
        return got[0] if got else None

    # -- writes -----------------------------------------------------------------------------------

    def write(self, run: Optional[RunState], run_id: str, records: List[StepRecord]) -> List[Dict[str, Any]]:
        """A run's records and checkpoint in one transaction; returns the records as stored."""
        state_text = dumps(run.to_dict()) if run is not None else None  # fails before anything is written
        summary = RunSummary.from_state(run) if run is not None else None
        try:
            # Pipelined: the reads the writes depend on go in one round trip, then every write
            # and the commit in one more.
            with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
                # One run: plain statements (cheaper for the server than the batch's arrays).
                head_q = (
                    conn.execute("SELECT seq, hash FROM ledger WHERE run_id=%s ORDER BY seq DESC LIMIT 1", (run_id,))
                    if records
                    else None
                )
                row_q = (
                    conn.execute("SELECT status, wait_key, due, ver FROM runs WHERE run_id=%s FOR UPDATE", (run_id,))
                    if run is not None
                    else None
                )
                row = row_q.fetchone() if row_q is not None else None
                head = head_q.fetchone() if head_q is not None else None
                w = self._prepare(run, run_id, list(records), state_text, summary, head, row)
                self._execute_one(conn, w)
        except self._errors as e:
            raise unavailable(e, "committing to PostgreSQL") from e
        if w.ver is not None:
            self.saw(run_id, w.ver)
        return self._announce(run_id, w.chained, summary if w.changed else None, w.due)

    def write_many(self, items: List[Tuple[RunState, List[StepRecord]]]) -> List[Any]:
        """`write` for several runs in one transaction (a batch of due timers): their heads and
        rows read in one round trip, their writes and the commit in one more. Per item: the
        records as stored, or the error that kept it out (a checkpoint that cannot be encoded,
        a run another daemon changed meanwhile). A storage failure raises, and none is committed."""
        out: List[Any] = [None] * len(items)
        encoded: List[Tuple[int, RunState, List[StepRecord], str, RunSummary]] = []
        for i, (run, records) in enumerate(items):
            try:
                encoded.append((i, run, list(records), dumps(run.to_dict()), RunSummary.from_state(run)))
            except (TypeError, ValueError) as e:
                out[i] = e
        if len({run.run_id for _, run, _, _, _ in encoded}) != len(encoded):
            raise ValueError("write_many: a run appears twice in one batch")
        done: List[Tuple[int, RunSummary, _Write]] = []
        try:
            with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
                ids = [run.run_id for _, run, _, _, _ in encoded]
                heads, rows = self._fetch(conn, [run.run_id for _, run, recs, _, _ in encoded if recs], ids)
                for i, run, records, text, summary in encoded:
                    try:
                        w = self._prepare(
                            run, run.run_id, records, text, summary, heads.get(run.run_id), rows.get(run.run_id)
                        )
                    except RunBusyError as e:
                        out[i] = e
                        continue
                    done.append((i, summary, w))
                self._execute(conn, [w for _, _, w in done])
        except self._errors as e:
            raise unavailable(e, "committing to PostgreSQL") from e
        for i, summary, w in done:
            if w.ver is not None:
                self.saw(w.run_id, w.ver)
            out[i] = self._announce(w.run_id, w.chained, summary if w.changed else None, w.due)
        return out

    def _fetch(
        self, conn: Any, with_records: List[str], with_state: List[str]
    ) -> Tuple[Dict[str, Tuple[Any, ...]], Dict[str, Tuple[Any, ...]]]:
        """The ledger heads and the run rows (locked) of the runs a transaction writes, both
        asked before either answer is read: inside the transaction, since another daemon may
        have written since. Rows are locked in run id order, so two batches never deadlock."""
        head_q = (
            conn.execute(
                "SELECT u.id, l.seq, l.hash FROM unnest(%s::text[]) AS u(id) CROSS JOIN LATERAL "
                "(SELECT seq, hash FROM ledger WHERE run_id = u.id ORDER BY seq DESC LIMIT 1) l",
                (with_records,),
            )
            if with_records
            else None
        )
        row_q = (
            conn.execute(
                "SELECT run_id, status, wait_key, due, ver FROM runs WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE",
                (with_state,),
            )
            if with_state
            else None
        )
        rows = {r[0]: r[1:] for r in row_q.fetchall()} if row_q is not None else {}
        heads = {r[0]: r[1:] for r in head_q.fetchall()} if head_q is not None else {}
        return heads, rows

    def _prepare(
        self,
        run: Optional[RunState],
        run_id: str,
        records: List[StepRecord],
        state_text: Optional[str],
        summary: Optional[RunSummary],
        head: Optional[Tuple[Any, ...]],
        row: Optional[Tuple[Any, ...]],
    ) -> _Write:
        """What one run's write is, from its head and row as read in the transaction (nothing
        is written yet: a refused run leaves no trace in a batch)."""
        if row is not None:
            seen = self.seen(run_id)
            if seen is not None and seen != row[3]:
                # Left as it was: this process writes the run again only after reading it anew.
                raise RunBusyError(
                    f"run {run_id} was changed by another daemon while this one ran its step (its lease ran "
                    "out); the step is dropped: read the run again",
                    run_id=run_id,
                )
        w = _Write(run_id)
        if records:
            w.chained = chain_records(records, int(head[0]) if head else 0, head[1] if head else None)
        if run is not None and summary is not None and state_text is not None:
            due = due_epoch(summary)
            w.changed = row is None or row[0] != summary.status or row[1] != summary.wait_key
            w.due = due if due is not None and (row is None or row[2] != due) else None
            w.ver = (int(row[3]) if row is not None else 0) + 1
            w.row = (run_id, run.workflow_id, summary.status, summary.wait_reason, summary.wait_key, due)
            w.row += (dumps(summary.to_dict()), state_text)
            w.new = row is None
            # A run moves to the end of its status's order when its status changes (as listed).
            w.bump = row is not None and row[0] != summary.status
        w.events = [(run_id, "record", line, d["seq"] == 1) for d, line in w.chained]
        if w.changed and summary is not None:
            w.events.append((run_id, "state", dumps(summary.to_dict()), False))
        return w

    def _execute(self, conn: Any, writes: List[_Write]) -> None:
        """The writes, one statement per table whatever the number of runs (arrays unnested
        on the server: the same statement text each time, prepared once), queued in the
        pipeline with the commit (in binary: JSON text needs no escaping so). The events go last: by then the transaction has its id,
        which the feed's readers rely on to tell a cursor still being committed from a lost one."""
        ledger = [
            (w.run_id, d["seq"], line, d["record_hash"], d.get("step"), d.get("idempotency_key"), d["status"])
            for w in writes
            for d, line in w.chained
        ]
        if ledger:
            conn.execute(
                "INSERT INTO ledger (run_id, seq, record, hash, step, idem_key, status) SELECT * FROM "
                "unnest(%b::text[], %b::int[], %b::text[], %b::text[], %b::int[], %b::text[], %b::text[])",
                _columns(ledger, 7),
            )
        new = [w.row for w in writes if w.row is not None and w.new]
        if new:
            conn.execute(
                "INSERT INTO runs (run_id, workflow_id, status, wait_reason, wait_key, due, summary, state, ord, ver) "
                "SELECT u.a, u.b, u.c, u.d, u.e, u.f, u.g, u.h, nextval('run_ord'), 1 FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
                "%b::text[], %b::float8[], %b::text[], %b::text[]) WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, o) "
                "ORDER BY o",
                _columns(new, 8),
            )
        old = [w.row + (w.bump,) for w in writes if w.row is not None and not w.new]
        if old:
            conn.execute(
                "UPDATE runs SET workflow_id = u.wf, status = u.st, wait_reason = u.wr, wait_key = u.wk, "
                "due = u.due, summary = u.sm, state = u.state, ver = runs.ver + 1, "
                "ord = CASE WHEN u.bump THEN nextval('run_ord') ELSE runs.ord END "
                "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::text[], "
                "%b::text[], %b::bool[]) AS u(id, wf, st, wr, wk, due, sm, state, bump) WHERE runs.run_id = u.id",
                _columns(old, 9),
            )
        events = [e for w in writes for e in w.events]
        if events:
            # Cursors in the order of the rows.
            conn.execute(
                "INSERT INTO events (cursor, run_id, kind, body, first, committed_at) "
                "SELECT nextval('event_cursor'), u.r, u.k, u.b, u.f, %s FROM unnest(%b::text[], %b::text[], "
                "%b::text[], %b::bool[]) WITH ORDINALITY AS u(r, k, b, f, o) ORDER BY o",
                [self.clock.time(), *_columns(events, 4)],
            )

    def _execute_one(self, conn: Any, w: _Write) -> None:
        """`_execute` for one run, in plain statements (queued in the pipeline with the commit)."""
        if w.chained:
            conn.execute(
                "INSERT INTO ledger (run_id, seq, record, hash, step, idem_key, status) VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(w.chained)),
                [
                    x
                    for d, line in w.chained
                    for x in (
                        w.run_id,
                        d["seq"],
                        line,
                        d["record_hash"],
                        d.get("step"),
                        d.get("idempotency_key"),
                        d["status"],
                    )
                ],
            )
        if w.row is not None:
            if w.new:
                conn.execute(
                    "INSERT INTO runs (run_id, workflow_id, status, wait_reason, wait_key, due, summary, state, ord, "
                    "ver) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, nextval('run_ord'), 1)",
                    w.row,
                )
            else:
                conn.execute(
                    "UPDATE runs SET workflow_id=%s, status=%s, wait_reason=%s, wait_key=%s, due=%s, summary=%s, "
                    f"state=%s, ver=ver+1, ord={'nextval(%s)' if w.bump else 'ord'} WHERE run_id=%s",
                    (*w.row[1:], *(("run_ord",) if w.bump else ()), w.run_id),
                )
        if w.events:
            now = self.clock.time()
            conn.execute(  # cursors in the order of the rows (a multi-row VALUES is evaluated in order)
                "INSERT INTO events (cursor, run_id, kind, body, first, committed_at) VALUES "
                + ", ".join(["(nextval('event_cursor'), %s, %s, %s, %s, %s)"] * len(w.events)),
                [x for e in w.events for x in (*e, now)],
            )

    def seen(self, run_id: str) -> Optional[int]:
        with self._seen_lock:
            return self._seen.get(run_id)

    def saw(self, run_id: str, ver: int) -> None:
        with self._seen_lock:
            self._seen[run_id] = ver
            self._seen.move_to_end(run_id)
            if len(self._seen) > 100_000:  # the oldest are forgotten: their next write is not checked
                self._seen.popitem(last=False)

    def append_event(self, run_id: str, kind: str, body: Dict[str, Any]) -> None:
        """An event that is no step's (a model's streamed output): its own transaction, not
        waited on to reach the disk (it is shown live, never replayed as a run's history)."""
        try:
            with self.fast.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_current_xact_id()")  # the id first, as in a step (see _write_one)
                conn.execute(
                    "INSERT INTO events (cursor, run_id, kind, body, first, committed_at) "
                    "VALUES (nextval('event_cursor'), %s, %s, %s, false, %s)",
                    (run_id, kind, dumps(body), self.clock.time()),
                )
        except self._errors as e:
            raise unavailable(e, "committing to PostgreSQL") from e
        for fn in self.commit_listeners:
            fn()

    def _announce(
        self,
        run_id: str,
        chained: List[Tuple[Dict[str, Any], str]],
        summary: Optional[RunSummary],
        due: Optional[float],
    ) -> List[Dict[str, Any]]:
        if chained or summary is not None:
            for hook in self.commit_listeners:
                hook()
        return self.listeners.announce(run_id, chained, summary, due)

    # -- daemons --------------------------------------------------------------------------------

    def heartbeat(
        self, daemon_id: str, info: Dict[str, Any], *, started_at: float, lease_s: float, keep: Iterable[str] = ()
    ) -> None:
        """The daemon is alive: its row says so, and its leases are renewed (a long tick keeps
        its run). `keep` are run ids whose leases are not renewed (runs it parked: they expire
        and go to a daemon that can run them)."""
        import os
        import socket

        now = self.clock.time()
        try:
            with self.fast.connection() as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO daemons (daemon_id, host, pid, started_at, heartbeat_at, info) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (daemon_id) DO UPDATE SET "
                    "heartbeat_at = EXCLUDED.heartbeat_at, info = EXCLUDED.info",
                    (daemon_id, socket.gethostname(), os.getpid(), started_at, now, dumps(info)),
                )
                conn.execute(
                    "UPDATE leases SET until = %s WHERE owner = %s AND until > %s AND NOT (run_id = ANY(%s))",
                    (now + lease_s, daemon_id, now, list(keep)),
                )
                # Daemons not heard of for a day are gone for good.
                conn.execute("DELETE FROM daemons WHERE heartbeat_at < %s", (now - 86400,))
        except self._errors as e:
            raise unavailable(e, "writing a heartbeat to PostgreSQL") from e

    def peers(self) -> List[Dict[str, Any]]:
        now = self.clock.time()
        return [
            {
                "daemon_id": d,
                "host": h,
                "pid": int(p),
                "started_at": float(st),
                "heartbeat_age_s": round(max(0.0, now - float(hb)), 3),
                **loads(info),
            }
            for d, h, p, st, hb, info in self.rows(
                "SELECT daemon_id, host, pid, started_at, heartbeat_at, info FROM daemons ORDER BY started_at"
            )
        ]

    def forget(self, daemon_id: str) -> None:
        """A daemon stops: its row and its leases go (the others take its runs at once)."""
        try:
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("DELETE FROM daemons WHERE daemon_id = %s", (daemon_id,))
                conn.execute("DELETE FROM leases WHERE owner = %s", (daemon_id,))
        except self._errors as e:
            log.warning("could not remove daemon %s from PostgreSQL (%s)", daemon_id, e)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.fast.close()
            self.pool.close()


class PostgresRunStore(RunStore):
    # A run ticked elsewhere is waited for this long before RunBusyError (Runtime._guard):
    # another daemon's step on it takes milliseconds.
    lease_wait_s = 5.0

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = self.unit = db
        self._lease_lock = threading.Lock()
        # The leases this process holds (run id -> owner, expiry), as it last wrote them.
        self._held: Dict[str, Tuple[str, float]] = {}
        self._batch = threading.local()
        # What this process may claim, if it says: (the workflow ids it serves, run ids it
        # leaves alone). A daemon sets it, so it never takes a timer whose code it lacks.
        self.eligible: Optional[Callable[[], Tuple[Iterable[str], Iterable[str]]]] = None

    def _eligibility(self) -> Tuple[str, List[Any]]:
        if self.eligible is None:
            return "", []
        served, excluded = self.eligible()
        return " AND r.workflow_id = ANY(%s) AND NOT (r.run_id = ANY(%s))", [list(served), list(excluded)]

    def save(self, run: RunState) -> None:
        self.db.write(run, run.run_id, [])

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        return self.db.write(run, run.run_id, records)

    def commit_many(self, items: List[Tuple[RunState, List[StepRecord]]]) -> List[Any]:
        return self.db.write_many(items)

    def load_many(self, run_ids: List[str]) -> Dict[str, RunState]:
        """Several runs in one round trip (a batch of due timers); the missing are left out."""
        out: Dict[str, RunState] = {}
        for run_id, state, ver in self.db.rows(
            "SELECT run_id, state, ver FROM runs WHERE run_id = ANY(%s)", (run_ids,)
        ):
            self.db.saw(run_id, int(ver))
            out[run_id] = RunState.from_dict(loads(state))
        return out

    def load(self, run_id: str) -> Optional[RunState]:
        row = self.db.one("SELECT state, ver FROM runs WHERE run_id=%s", (run_id,))
        if row is None:
            return None
        self.db.saw(run_id, int(row[1]))
        return RunState.from_dict(loads(row[0]))

    def _where(self, status: Any, wait_reason: Any, workflow_id: Optional[str]) -> Tuple[List[str], List[Any]]:
        where: List[str] = []
        args: List[Any] = []
        for column, value in (
            ("status", _status_value(status)),
            ("wait_reason", _reason_value(wait_reason)),
            ("workflow_id", workflow_id),
        ):
            if value is not None:
                where.append(f"{column}=%s")
                args.append(value)
        return where, args

    def list_run_summaries(self, *, status=None, wait_reason=None, workflow_id=None, limit=100, after=None):
        where, args = self._where(status, wait_reason, workflow_id)
        if after is not None:
            where.append("ord > COALESCE((SELECT ord FROM runs WHERE run_id=%s), -1)")
            args.append(after)
        sql = "SELECT summary FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ord"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(int(limit))
        return [RunSummary.from_dict(loads(r[0])) for r in self.db.rows(sql, args)]

    def newest_summaries(self, *, status=None, wait_reason=None, workflow_id=None, limit=100):
        where, args = self._where(status, wait_reason, workflow_id)
        sql = (
            "SELECT summary FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY (summary::json ->> 'updated_at') DESC, ord DESC"
        )
        if limit is not None:
            sql += " LIMIT %s"
            args.append(int(limit))
        return [RunSummary.from_dict(loads(r[0])) for r in self.db.rows(sql, args)]

    def count_by_status(self) -> Dict[str, int]:
        return {s: int(n) for s, n in self.db.rows("SELECT status, COUNT(*) FROM runs GROUP BY status")}

    def find_waiting_on(self, wait_key: str) -> List[str]:
        return [
            r[0] for r in self.db.rows("SELECT run_id FROM runs WHERE wait_key=%s AND status='waiting'", (wait_key,))
        ]

    # -- timers and leases ---------------------------------------------------------------------

    def next_due_at(self) -> Optional[float]:
        only, only_args = self._eligibility()
        row = self.db.one(
            "SELECT MIN(r.due) FROM runs r WHERE r.status='waiting' AND r.due IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM leases l WHERE l.run_id=r.run_id AND l.until > %s)" + only,
            [self.db.clock.time(), *only_args],
        )
        return float(row[0]) if row and row[0] is not None else None

    def claim_due_runs(self, *, now: float, owner: str, lease_s: float, limit: int) -> List[str]:
        """Due runs not leased elsewhere, leased to `owner` in one transaction. `SKIP LOCKED`:
        daemons claiming at once take different runs instead of waiting on each other."""
        at = self.db.clock.time()
        only, only_args = self._eligibility()
        try:
            with self.db.fast.connection() as conn, conn.transaction():
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT r.run_id FROM runs r WHERE r.status='waiting' AND r.due IS NOT NULL AND r.due <= %s "
                        "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.run_id=r.run_id AND l.until > %s)"
                        + only
                        + " ORDER BY r.due LIMIT %s FOR UPDATE OF r SKIP LOCKED",
                        [now, at, *only_args, limit],
                    ).fetchall()
                ]
                if ids:
                    with conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO leases (run_id, owner, until) VALUES (%s, %s, %s) "
                            "ON CONFLICT (run_id) DO UPDATE SET owner=EXCLUDED.owner, until=EXCLUDED.until",
                            [(rid, owner, at + lease_s) for rid in ids],
                        )
        except self.db._errors as e:
            raise unavailable(e, "claiming due runs in PostgreSQL") from e
        with self._lease_lock:
            for rid in ids:
                self._held[rid] = (owner, at + lease_s)
        return ids

    def orphans(self, limit: int = 1000) -> List[Tuple[str, int]]:
        """Running runs nobody holds a lease on, with their write counts: the daemon ticking
        them died (its lease expired), or the run was just stored and its first tick has not
        taken the lease yet (the caller tells them apart by asking twice)."""
        only, only_args = self._eligibility()
        return [
            (r[0], int(r[1]))
            for r in self.db.rows(
                "SELECT r.run_id, r.ver FROM runs r WHERE r.status='running' "
                "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.run_id=r.run_id AND l.until > %s)"
                + only
                + " ORDER BY r.ord LIMIT %s",
                [self.db.clock.time(), *only_args, limit],
            )
        ]

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        at = self.db.clock.time()
        with self._lease_lock:
            held = self._held.get(run_id)
        if held is not None and held[0] == owner and held[1] - at > lease_s / 2:
            return True  # ours, and for a while yet (a claim just took it): no round trip
        row = self.db.fast_one(
            "INSERT INTO leases (run_id, owner, until) VALUES (%s, %s, %s) "
            "ON CONFLICT (run_id) DO UPDATE SET owner=EXCLUDED.owner, until=EXCLUDED.until "
            "WHERE leases.owner=EXCLUDED.owner OR leases.until <= %s RETURNING owner",
            (run_id, owner, at + lease_s, at),
        )
        if row is None:
            return False
        with self._lease_lock:
            self._held[run_id] = (owner, at + lease_s)
        return True

    def release_lease(self, run_id: str, owner: str) -> None:
        with self._lease_lock:
            held = self._held.get(run_id)
            if held is None or held[0] != owner:
                return  # not held by this owner (let go already): nothing to delete
            del self._held[run_id]
        batch = getattr(self._batch, "ids", None)
        if batch is not None:
            batch.append(run_id)  # deleted with the others at the end (releasing_together)
            return
        self._delete_leases([run_id], owner)

    @contextmanager
    def releasing_together(self, owner: str) -> Iterator[None]:
        """The leases this thread lets go of meanwhile are deleted in one statement at the end
        (a batch of due timers: one round trip instead of one per run)."""
        self._batch.ids = []
        try:
            yield
        finally:
            ids, self._batch.ids = self._batch.ids, None
            with self._lease_lock:  # taken again meanwhile (a resume in this process): kept
                ids = [i for i in ids if i not in self._held]
            if ids:
                self._delete_leases(ids, owner)

    def _delete_leases(self, run_ids: List[str], owner: str) -> None:
        gone = self.db.fast_rows(
            "DELETE FROM leases l WHERE l.run_id = ANY(%s) AND l.owner = %s RETURNING "
            "(SELECT due FROM runs r WHERE r.run_id = l.run_id AND r.status = 'waiting' AND r.due IS NOT NULL)",
            (run_ids, owner),
        )
        # A timer hidden while its run was leased is due again: tell the timer listeners. The
        # run itself did not change: no state is announced.
        dues = [float(g[0]) for g in gone if g[0] is not None]
        if dues:
            self.db.listeners.timer_due(min(dues))

    def add_listener(self, listener: RunListener) -> None:
        self.db.listeners.add_run_listener(listener)

    def add_timer_listener(self, listener: Callable[[float], None]) -> None:
        self.db.listeners.add_timer_listener(listener)

    def close(self) -> None:
        self.db.close()


class PostgresLedgerStore(LedgerStore):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = self.unit = db

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        return self.db.write(None, run_id, list(records))

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return self.list_after(run_id, 0)

    def list_after(self, run_id: str, after: int = 0, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        sql = "SELECT record FROM ledger WHERE run_id=%s AND seq>%s ORDER BY seq"
        args: List[Any] = [run_id, after]
        if limit is not None:
            sql += " LIMIT %s"
            args.append(int(limit))
        return [loads(r[0]) for r in self.db.rows(sql, args)]

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        row = self.db.one("SELECT seq, hash FROM ledger WHERE run_id=%s ORDER BY seq DESC LIMIT 1", (run_id,))
        return (int(row[0]), row[1]) if row else (0, None)

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        row = self.db.one(
            "SELECT record FROM ledger WHERE run_id=%s AND step=%s AND idem_key IS NOT NULL ORDER BY seq DESC LIMIT 1",
            (run_id, step),
        )
        return loads(row[0]) if row else None

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        row = self.db.one(
            "SELECT record FROM ledger WHERE run_id=%s AND idem_key=%s AND status='completed' "
            "ORDER BY seq DESC LIMIT 1",
            (run_id, idempotency_key),
        )
        return loads(row[0]) if row else None

    def add_listener(self, listener: LedgerListener) -> None:
        self.db.listeners.add_ledger_listener(listener)

    def close(self) -> None:
        self.db.close()


class PostgresArtifactStore(ArtifactStore):
    """Artifacts in the shared database: each distinct content once (`blobs`, by its SHA-256),
    each artifact's metadata a row (`artifacts`), so every daemon reads what any stored."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def _put(self, meta: ArtifactMetadata, content: bytes) -> None:
        try:
            with self.db.pool.connection() as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO blobs (blob_id, content) VALUES (%s, %s) ON CONFLICT (blob_id) DO NOTHING",
                    (meta.blob_id, content),
                )
                conn.execute(
                    "INSERT INTO artifacts (artifact_id, blob_id, run_id, content_type, created_at, meta) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (artifact_id) DO UPDATE SET blob_id = "
                    "EXCLUDED.blob_id, run_id = EXCLUDED.run_id, content_type = EXCLUDED.content_type, "
                    "created_at = EXCLUDED.created_at, meta = EXCLUDED.meta",
                    (
                        meta.artifact_id,
                        meta.blob_id,
                        meta.run_id,
                        meta.content_type,
                        meta.created_at,
                        dumps(meta.to_dict()),
                    ),
                )
        except self.db._errors as e:
            raise unavailable(e, "storing an artifact in PostgreSQL") from e

    def _content(self, meta: ArtifactMetadata) -> Optional[bytes]:
        row = self.db.one("SELECT content FROM blobs WHERE blob_id = %s", (meta.blob_id,))
        return bytes(row[0]) if row else None

    def get_metadata(self, artifact_id: str) -> Optional[ArtifactMetadata]:
        row = self.db.one("SELECT meta FROM artifacts WHERE artifact_id = %s", (check_artifact_id(artifact_id),))
        return ArtifactMetadata.from_dict(loads(row[0])) if row else None

    def _all(self) -> Iterable[ArtifactMetadata]:
        return [ArtifactMetadata.from_dict(loads(r[0])) for r in self.db.rows("SELECT meta FROM artifacts")]

    def search(
        self,
        *,
        run_id: Optional[str] = None,
        content_type: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
        limit: Optional[int] = 1000,
    ) -> List[ArtifactMetadata]:
        where, args = [], []
        for column, value in (("run_id", run_id), ("content_type", content_type)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        sql = "SELECT meta FROM artifacts" + (" WHERE " + " AND ".join(where) if where else "")
        found = [ArtifactMetadata.from_dict(loads(r[0])) for r in self.db.rows(sql + " ORDER BY created_at DESC", args)]
        found = [m for m in found if _matches(m, run_id, content_type, tags)]
        return found if limit is None else found[: max(0, int(limit))]

    def _drop(self, meta: ArtifactMetadata) -> None:
        try:
            with self.db.pool.connection() as conn, conn.transaction():
                conn.execute("DELETE FROM artifacts WHERE artifact_id = %s", (meta.artifact_id,))
                conn.execute(
                    "DELETE FROM blobs b WHERE b.blob_id = %s AND NOT EXISTS "
                    "(SELECT 1 FROM artifacts a WHERE a.blob_id = b.blob_id)",
                    (meta.blob_id,),
                )
        except self.db._errors as e:
            raise unavailable(e, "deleting an artifact in PostgreSQL") from e
