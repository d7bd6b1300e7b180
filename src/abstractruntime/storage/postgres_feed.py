"""The event feed across daemons, read from PostgreSQL: every committed event, in cursor order,
exactly once, whichever daemon committed it.

Each step's transaction writes its event rows (`postgres.py`) under cursors from one database
sequence. Cursors are handed out when a transaction writes, not when it commits, so a reader
may see cursor 11 committed while 10 is still being committed, or was rolled back and never
will be. The reader delivers cursors in order and stops at such a hole; it knows the hole is
for good once every transaction that could fill it has ended:

- a step's transaction has its id before it takes a cursor (its other writes come first);
- so a transaction holding a cursor below the highest one a read sees had its id before that
  read; right after the read, the reader takes a transaction id of its own (the *bound*: ids
  are handed out in order, so every such holder's is below it);
- once a later snapshot's `xmin` (the oldest transaction still running) reaches the bound,
  all of them have ended, and a hole that is still empty is a rolled-back cursor: skipped.

(Not the read's own snapshot `xmax`: that is one past the newest *completed* transaction, and
a holder that began after it is running unseen above it. A test that writes from eight
threads caught that.) The bound costs one round trip per hole, committed without waiting
for the disk.

Holes are rare and short (a rolled-back write, or two commits finishing out of order); a
transaction left open elsewhere on the server delays the feed past a rolled-back cursor until
it ends. After each commit that wrote events, a daemon sends one NOTIFY (coalesced), and every
daemon's reader LISTENs for it, so events reach the other daemons' subscribers at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from ._durable import unavailable

log = logging.getLogger("abstractruntime.storage")

# (cursor, run id, kind, body as JSON text, whether it is the run's first ledger record, committed at)
Row = Tuple[int, str, str, str, bool, float]

DEFAULT_RETENTION_S = 7 * 86400.0
_READ_BATCH = 2000
_GAP_POLL_S = 0.02  # how often to look again while a hole may still fill
_GAP_WARN_S = 10.0  # a hole open this long is worth a warning (it names what holds it)
_PRUNE_EVERY_S = 60.0


class PostgresFeed:
    """One daemon's reader of the shared events table.

    `deliver(row)` is called from the reader's thread, in cursor order, once per event that
    commits after the feed started; `cursor` is the last delivered (every event at or below it
    is final: `history` reads them)."""

    def __init__(
        self,
        db: Any,
        deliver: Callable[[Row], None],
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        poll_s: float = 1.0,
    ) -> None:
        import psycopg

        self.db = db
        self.deliver = deliver
        self.retention_s = retention_s
        self.poll_s = poll_s
        self._stopping = threading.Event()
        self._notify = threading.Event()
        self._ready = threading.Event()
        self._gap: Optional[Tuple[int, int]] = None  # (highest cursor seen past a hole, the bound after it)
        self._gap_since, self._gap_warned = 0.0, False
        self._pruned_at = 0.0
        try:
            self._listen = psycopg.connect(db.dsn, autocommit=True, options=db.options)
            self._listen.execute(f"LISTEN {db.channel}")
        except db._errors as e:
            raise unavailable(e, "listening to PostgreSQL") from e
        # Where the feed starts: after everything committed now. Cursors at or below it that are
        # still being committed become final once the transactions running now have ended.
        xmin, last = self._snapshot_and_last()
        self.cursor = last
        self._start_bound = self._bound()
        if xmin >= self._start_bound:
            self._ready.set()
        db.commit_listeners = db.commit_listeners + [self._notify.set]
        self._reader = threading.Thread(target=self._read_loop, name="abstractruntime-feed", daemon=True)
        self._notifier = threading.Thread(target=self._notify_loop, name="abstractruntime-feed-notify", daemon=True)
        self._reader.start()
        self._notifier.start()

    # -- reading ----------------------------------------------------------------------------------

    def _snapshot_and_last(self) -> Tuple[int, int]:
        row = self.db.one(
            "SELECT pg_snapshot_xmin(s)::text::bigint, (SELECT COALESCE(MAX(cursor), 0) FROM events) "
            "FROM pg_current_snapshot() s"
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def _bound(self) -> int:
        """A new transaction id: above every id handed out before this call (see the module)."""
        row = self.db.fast_one("SELECT pg_current_xact_id()::text::bigint")
        assert row is not None
        return int(row[0])

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                more = self.read_once()
                wait = (
                    0.0 if more else (_GAP_POLL_S if self._gap is not None or not self._ready.is_set() else self.poll_s)
                )
                if wait:
                    for _ in self._listen.notifies(timeout=wait, stop_after=1):
                        pass
                    # Drain what else arrived: one read covers them all.
                    for _ in self._listen.notifies(timeout=0.0):
                        pass
            except Exception as e:  # isolation boundary: the feed outlives a lost connection
                if self._stopping.is_set():
                    return
                log.warning("event feed: %s; reading again in 1 s", e)
                self._stopping.wait(1.0)
                self._reconnect()

    def _reconnect(self) -> None:
        import psycopg

        try:
            self._listen.close()
            self._listen = psycopg.connect(self.db.dsn, autocommit=True, options=self.db.options)
            self._listen.execute(f"LISTEN {self.db.channel}")
        except Exception as e:  # the next pass retries
            log.warning("event feed: could not listen again (%s)", e)

    def read_once(self) -> bool:
        """Deliver what committed since the last read; True if there may be more to read now."""
        rows = self.db.rows(
            "SELECT pg_snapshot_xmin(s)::text::bigint, e.cursor, e.run_id, e.kind, e.body, e.first, e.committed_at "
            "FROM pg_current_snapshot() s LEFT JOIN LATERAL "
            "(SELECT * FROM events WHERE cursor > %s ORDER BY cursor LIMIT %s) e ON true",
            (self.cursor, _READ_BATCH),
        )
        xmin = int(rows[0][0])
        if not self._ready.is_set() and xmin >= self._start_bound:
            self._ready.set()
        events = [r[1:] for r in rows if r[1] is not None]
        gap_top, gap_bound = self._gap or (0, 0)
        settled = self._gap is not None and xmin >= gap_bound  # the holes up to gap_top are for good
        hole = False
        for cursor, run_id, kind, body, first, at in events:
            if cursor != self.cursor + 1 and not (settled and cursor <= gap_top + 1):
                hole = True
                break
            self.deliver((int(cursor), run_id, kind, body, bool(first), float(at)))
            self.cursor = int(cursor)
        if hole:
            if self._gap is None or settled:
                self._gap = (int(events[-1][0]), self._bound())  # the bound after the read that saw it
                self._gap_since, self._gap_warned = time.monotonic(), False
            elif not self._gap_warned and time.monotonic() - self._gap_since > _GAP_WARN_S:
                self._gap_warned = True
                self._warn_held_back(xmin)
        elif self._gap is not None and self.cursor >= gap_top:
            self._gap = None
        self._maybe_prune()
        return not hole and len(events) == _READ_BATCH

    def _warn_held_back(self, xmin: int) -> None:
        """Events wait behind a cursor that may still commit, for longer than a step takes:
        name the oldest transaction on the server, which is what they wait for."""
        rows = self.db.rows(
            "SELECT pid, datname, state, now() - xact_start, left(query, 120) FROM pg_stat_activity "
            "WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1"
        )
        held = (
            f"pid {rows[0][0]} on {rows[0][1]} ({rows[0][2]}, open {rows[0][3]}): {rows[0][4]!r}" if rows else "unknown"
        )
        log.warning(
            "event feed: events after cursor %d wait for transaction %d to end; the oldest open transaction is %s",
            self.cursor,
            xmin,
            held,
        )

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """True once every cursor at or below the start is final (the transactions that were
        committing when the feed started have ended)."""
        return self._ready.wait(timeout)

    # -- history --------------------------------------------------------------------------------

    def history(self, after: int, upto: int, run_id: Optional[str], limit: int) -> List[Row]:
        """Committed events after `after` up to `upto` (at most `limit`, else ValueError)."""
        sql = "SELECT cursor, run_id, kind, body, first, committed_at FROM events WHERE cursor > %s AND cursor <= %s"
        args: List[Any] = [after, upto]
        if run_id is not None:
            sql += " AND run_id = %s"
            args.append(run_id)
        sql += " ORDER BY cursor LIMIT %s"
        args.append(limit + 1)
        rows = self.db.rows(sql, args)
        if len(rows) > limit:
            raise ValueError(f"more than {limit} events to replay")
        return [(int(c), r, k, b, bool(f), float(t)) for c, r, k, b, f, t in rows]

    def floor(self) -> int:
        """The highest cursor removed by retention: events after it can be replayed."""
        row = self.db.one("SELECT value FROM meta WHERE key='events_pruned_through'")
        return int(row[0]) if row else 0

    def holds_start_of(self, run_id: str) -> bool:
        """The table still holds the run's first ledger record (so all of its events)."""
        return self.db.one("SELECT 1 FROM events WHERE run_id=%s AND first LIMIT 1", (run_id,)) is not None

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at >= _PRUNE_EVERY_S:
            self._pruned_at = now
            self.prune()

    def prune(self) -> None:
        """Remove the events older than the retention (one daemon at a time does it)."""
        try:
            with self.db.pool.connection() as conn, conn.transaction():
                got = conn.execute(
                    "SELECT pg_try_advisory_xact_lock(hashtext(%s))", (f"abstractruntime-prune:{self.db.schema}",)
                ).fetchone()
                if not got or not got[0]:
                    return  # another daemon is pruning
                row = conn.execute(
                    "WITH gone AS (DELETE FROM events WHERE committed_at < %s AND cursor <= %s RETURNING cursor) "
                    "SELECT MAX(cursor) FROM gone",
                    (self.db.clock.time() - self.retention_s, self.cursor),
                ).fetchone()
                if row and row[0] is not None:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('events_pruned_through', %s) ON CONFLICT (key) "
                        "DO UPDATE SET value = GREATEST(meta.value::bigint, EXCLUDED.value::bigint)::text",
                        (str(row[0]),),
                    )
        except self.db._errors as e:
            log.warning("event feed: could not remove old events (%s)", e)

    # -- telling the others -----------------------------------------------------------------------

    def _notify_loop(self) -> None:
        # One NOTIFY per burst of commits, after they committed, from outside the step's
        # transaction (a NOTIFY inside it would serialize every commit on the server's lock).
        while not self._stopping.is_set():
            self._notify.wait()
            if self._stopping.is_set():
                return
            self._notify.clear()
            try:
                with self.db.fast.connection() as conn:
                    conn.execute(f"NOTIFY {self.db.channel}")
            except Exception as e:  # the readers' poll picks the events up instead
                log.warning("event feed: could not notify (%s)", e)

    def close(self) -> None:
        self._stopping.set()
        self._notify.set()
        try:
            with self.db.pool.connection() as conn:
                conn.execute(f"NOTIFY {self.db.channel}")  # wakes our own reader
        except Exception:  # noqa: BLE001 - closing anyway; the reader times out within poll_s
            pass
        self._reader.join(self.poll_s + 2)
        self._notifier.join(2)
        try:
            self._listen.close()
        except Exception:  # noqa: BLE001 - already gone
            pass
