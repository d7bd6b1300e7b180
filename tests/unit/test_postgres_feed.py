"""The shared database's guarantees: the event feed (storage/postgres_feed.py) hands on every
committed event in cursor order, once, even when commits finish out of order or a cursor is
rolled back; and a write over a run another process changed meanwhile is refused."""

from __future__ import annotations

import json
import queue
import threading
import uuid

import pytest

from abstractruntime import RunState, RunStatus
from abstractruntime.core.models import StepRecord, StepStatus
from abstractruntime.storage import open_stores


@pytest.fixture
def pg(pg_server):
    stores = open_stores("postgres", pg_server.dsn, schema="t_" + uuid.uuid4().hex[:16])
    yield stores
    stores.close()


def _feed(stores, got):
    from abstractruntime.storage.postgres_feed import PostgresFeed

    return PostgresFeed(stores.runs.db, got.put, poll_s=0.2)


def _run(n: int) -> RunState:
    return RunState(run_id=f"r{n}", workflow_id="wf", status=RunStatus.RUNNING, current_node="a", vars={})


def _record(run_id: str, node: str) -> StepRecord:
    return StepRecord(run_id=run_id, step_id=node, node_id=node, status=StepStatus.COMPLETED)


def _held_cursor(stores):
    """A transaction that has taken an event cursor and not committed: (connection, cursor)."""
    import psycopg

    db = stores.runs.db
    conn = psycopg.connect(db.dsn, options=db.options)
    conn.execute("SELECT pg_current_xact_id()")
    row = conn.execute(
        "INSERT INTO events (cursor, run_id, kind, body, first, committed_at) "
        "VALUES (nextval('event_cursor'), 'held', 'progress', '{}', false, 0) RETURNING cursor"
    ).fetchone()
    return conn, row[0]


def _take(got, n):
    return [got.get(timeout=10) for _ in range(n)]


def test_events_committed_out_of_order_are_delivered_in_cursor_order_once(pg):
    got: queue.Queue = queue.Queue()
    feed = _feed(pg, got)
    try:
        pg.runs.save(_run(1))  # one state event
        first = _take(got, 1)[0]
        assert (first[1], first[2]) == ("r1", "state")
        conn, held = _held_cursor(pg)
        pg.ledger.append_many("r1", [_record("r1", "a"), _record("r1", "b")])  # two cursors after `held`
        # Nothing past the hole while the transaction holding it may still commit.
        with pytest.raises(queue.Empty):
            got.get(timeout=0.5)
        conn.commit()
        conn.close()
        rows = _take(got, 3)
        assert [r[0] for r in rows] == [held, held + 1, held + 2]
        assert [r[1] for r in rows] == ["held", "r1", "r1"]
        assert got.empty()
    finally:
        feed.close()


def test_a_rolled_back_cursor_is_skipped_once_its_transaction_ended(pg):
    got: queue.Queue = queue.Queue()
    feed = _feed(pg, got)
    try:
        conn, held = _held_cursor(pg)
        pg.runs.save(_run(2))
        with pytest.raises(queue.Empty):
            got.get(timeout=0.5)
        conn.rollback()
        conn.close()
        row = got.get(timeout=10)
        assert (row[0], row[1], row[2]) == (held + 1, "r2", "state")
    finally:
        feed.close()


def test_concurrent_writers_every_event_once_in_order(pg):
    got: queue.Queue = queue.Queue()
    feed = _feed(pg, got)
    try:

        def writer(w: int) -> None:
            for i in range(25):
                run = _run(w * 100 + i)
                pg.runs.commit(run, [_record(run.run_id, "a")])

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows: list = []
        try:
            for _ in range(8 * 25 * 2):  # a record and a state event per commit
                rows.append(got.get(timeout=30))
        except queue.Empty:  # say where the feed stands (a stall must be explainable)
            db = pg.runs.db
            raise AssertionError(
                f"{len(rows)} of 400 events, then 30 s without one: feed at {feed.cursor}, gap {feed._gap}, "
                f"table {db.rows('SELECT min(cursor), max(cursor), count(*) FROM events')}, snapshot "
                f"{db.rows('SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text FROM pg_current_snapshot() s')}, "
                f"holders {db.rows('SELECT pid, backend_xid::text, state, left(query, 80) FROM pg_stat_activity WHERE backend_xid IS NOT NULL')}"
            ) from None
        cursors = [r[0] for r in rows]
        assert cursors == sorted(set(cursors))
        db_rows = pg.runs.db.rows("SELECT cursor FROM events ORDER BY cursor")
        assert cursors == [r[0] for r in db_rows]
    finally:
        feed.close()


def test_replay_reads_the_table_and_respects_retention(pg):
    got: queue.Queue = queue.Queue()
    feed = _feed(pg, got)
    try:
        pg.runs.commit(_run(3), [_record("r3", "a")])
        rows = _take(got, 2)
        assert [r[0] for r in feed.history(0, feed.cursor, None, 100)] == [r[0] for r in rows]
        assert [r[2] for r in feed.history(0, feed.cursor, "r3", 100)] == ["record", "state"]
        with pytest.raises(ValueError):
            feed.history(0, feed.cursor, None, 1)
        assert feed.floor() == 0 and feed.holds_start_of("r3")
        feed.retention_s = -1.0  # everything is older than that
        feed.prune()
        assert feed.floor() >= rows[-1][0] and not feed.holds_start_of("r3")
    finally:
        feed.close()


def test_a_write_over_a_run_another_process_changed_meanwhile_is_refused(pg, pg_server):
    from abstractruntime.core.errors import RunBusyError

    other = open_stores("postgres", pg_server.dsn, schema=pg.runs.db.schema)  # a second daemon
    try:
        pg.runs.save(_run(5))
        mine = pg.runs.load("r5")
        theirs = other.runs.load("r5")
        theirs.vars["by"] = "other"
        other.runs.commit(theirs, [_record("r5", "a")])
        mine.vars["by"] = "me"
        with pytest.raises(RunBusyError, match="changed by another daemon"):
            pg.runs.commit(mine, [_record("r5", "a")])
        assert pg.runs.load("r5").vars == {"by": "other"} and len(pg.ledger.list("r5")) == 1
        again = pg.runs.load("r5")  # read anew: its write goes through
        again.vars["by"] = "me"
        pg.runs.commit(again, [_record("r5", "b")])
        assert other.runs.load("r5").vars == {"by": "me"} and len(other.ledger.list("r5")) == 2
    finally:
        other.close()


def test_daemons_opening_a_new_schema_at_once_migrate_it_once(pg_server):
    from abstractruntime.storage.postgres import _MIGRATIONS, PostgresDatabase

    schema = "t_" + uuid.uuid4().hex[:16]
    opened, errors = [], []

    def open_one():
        try:
            opened.append(PostgresDatabase(pg_server.dsn, schema=schema, pool_size=2))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors and len(opened) == 6
        assert opened[0].one("SELECT value FROM meta WHERE key='schema_version'") == (str(len(_MIGRATIONS)),)
        assert opened[0].one("SELECT count(*) FROM information_schema.columns WHERE table_schema=%s AND "
                             "table_name='runs' AND column_name='ver'", (schema,)) == (1,)
    finally:
        for db in opened:
            db.close()


def test_a_models_streamed_output_goes_through_the_feed(pg):
    got: queue.Queue = queue.Queue()
    feed = _feed(pg, got)
    try:
        pg.runs.db.append_event("r6", "progress", {"node_id": "llm", "text": "Hel"})
        pg.runs.db.append_event("r6", "progress", {"node_id": "llm", "text": "lo"})
        rows = _take(got, 2)
        assert [(r[1], r[2], json.loads(r[3])["text"]) for r in rows] == [("r6", "progress", "Hel"), ("r6", "progress", "lo")]
    finally:
        feed.close()


def test_the_daemons_event_log_replays_from_the_database_and_expires_what_retention_removed(pg, tmp_path):
    from abstractruntime.daemon.events import EventLog
    from abstractruntime.protocol.errors import CursorExpiredError
    from abstractruntime.storage.postgres_feed import PostgresFeed

    log = EventLog(str(tmp_path), shared=True, max_events=2)  # keeps two events in memory
    feed = PostgresFeed(pg.runs.db, log.deliver_row, poll_s=0.2)
    log.attach_feed(feed)
    try:
        start = log.cursor
        for n in range(7, 10):
            pg.runs.commit(_run(n), [_record(f"r{n}", "a")])  # a record and a state event each
        db_rows = lambda: pg.runs.db.rows("SELECT cursor FROM events WHERE cursor > %s ORDER BY cursor", (start,))  # noqa: E731
        import time

        deadline = time.time() + 10
        while log.cursor < db_rows()[-1][0] and time.time() < deadline:
            time.sleep(0.02)
        _, cursor, backlog = log.subscribe(None, start, lambda e: None)
        assert [e["cursor"] for e in backlog] == [r[0] for r in db_rows()] and cursor == db_rows()[-1][0]
        assert len(log) == 2  # most of that backlog came from the database
        _, _, one = log.subscribe("r8", start, lambda e: None)
        assert [e["kind"] for e in one] == ["record", "state"] and one[0]["record"]["run_id"] == "r8"
        # A cursor from a daemon further on: nothing at or below it is delivered again.
        got: list = []
        log.subscribe(None, cursor + 1000, got.append)
        pg.runs.commit(_run(10), [_record("r10", "a")])
        deadline = time.time() + 10
        while log.cursor <= cursor and time.time() < deadline:
            time.sleep(0.02)
        assert got == []
        feed.retention_s = -1.0
        feed.prune()
        with pytest.raises(CursorExpiredError):
            log.subscribe(None, start, lambda e: None)
    finally:
        feed.close()
        log.close()
