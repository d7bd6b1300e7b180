"""The daemon's event log: a global, monotonic cursor over every run's events, a bounded log to
replay from, and the live subscriptions. It knows nothing of stores or the runtime; the hub
feeds it (ledger appends, status changes, streamed model output) and subscribers read it.

Every event gets the next cursor and lands in the log before fan-out, under one lock, so a
subscriber replaying `after` and then receiving live events gets each event exactly once, in
order. The log keeps events as JSON text (a dict costs several times its JSON), at most
`max_events` of them and `max_bytes` of text, the oldest going first.

Cursors never repeat across restarts: they start at the larger of a durable reservation (in
`DATA/cursor`, a million at a time, written before use) and the clock in microseconds, which
grows faster than events are handed out, so even a daemon that could not write its reservation
(a full disk) starts past every cursor used before. A clean stop records the last cursor
(`cursor.last`), so a client that saw it continues seamlessly after the restart.

On a database several daemons share, the cursors are the database's instead (`shared=True`):
the stores write each step's events in its transaction, and the feed (`storage/
postgres_feed.py`) hands every committed event to `deliver_row` in cursor order, whichever
daemon committed it. The log then keeps the recent ones for fast replays; older ones are read
back from the database, up to its retention.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..core.jsonutil import wire
from ..protocol.errors import CursorExpiredError
from ..storage._durable import atomic_write, open_dir_fd

log = logging.getLogger("abstractruntime.daemon")

Event = Dict[str, Any]
CURSOR_BLOCK = 1_000_000
MAX_EVENTS = 200_000  # events at most, whatever their size
MAX_BYTES = 32 << 20  # and at most this much of them (their JSON text)
ENTRY_OVERHEAD = 120  # what an entry costs beside its text (a tuple, its cursor)


@dataclass
class Subscription:
    subscription_id: str
    run_id: Optional[str]
    deliver: Callable[[Event], None]  # called under the log's lock; must only schedule
    after: int = 0  # events at or below it are not delivered (a cursor seen on another daemon)


class EventLog:
    def __init__(
        self, data_dir: str, *, max_bytes: int = MAX_BYTES, max_events: int = MAX_EVENTS, shared: bool = False
    ) -> None:
        self.max_bytes, self.max_events = max_bytes, max_events
        self._lock = threading.Lock()
        self._dir_fd = open_dir_fd(data_dir)
        # (cursor, run id, whether it is the run's first ledger record, the event's JSON)
        self._events: Deque[Tuple[int, str, bool, str]] = deque()
        self._bytes = 0
        self._subs: Dict[str, Subscription] = {}
        self._sub_ids = itertools.count(1)
        self._cursor_file = os.path.join(data_dir, "cursor")
        self._feed: Any = None  # the database's feed, when shared
        self.shared = shared
        if shared:
            self._cursor, self._fresh, self._previous_last = 0, False, None
        else:
            self._cursor = self._reserve_first_block()
            # The last cursor the previous daemon handed out, if it stopped cleanly: a client
            # that saw up to it missed nothing across the restart. After a crash it is unknown.
            self._previous_last = self._take_previous_last()
        self._first_cursor = self._cursor + 1
        # Every event after this cursor is in the log (a shared log reads older ones back).
        self._log_floor = self._cursor

    def attach_feed(self, feed: Any) -> None:
        """The database's feed (shared logs): it delivers rows, and replays what the log lost."""
        with self._lock:
            self._feed = feed
            if feed.cursor > self._cursor:
                self._cursor = self._log_floor = feed.cursor

    # -- cursors --------------------------------------------------------------------------------

    def _reserve_first_block(self) -> int:
        try:
            with open(self._cursor_file) as f:
                stored = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            stored = 0
        # No daemon ever served this folder: there are no earlier events to have missed.
        self._fresh = stored == 0
        start = max(stored, time.time_ns() // 1000)
        self._block_end = start + CURSOR_BLOCK
        self._save_block(self._block_end)
        return start

    def _take_previous_last(self) -> Optional[int]:
        path = self._cursor_file + ".last"
        try:
            with open(path) as f:
                value = int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None
        os.unlink(path)  # only the next start may use it: after a later crash it would lie
        return value

    def _save_block(self, value: int) -> None:
        # Durable before any cursor of the block is handed out: after a crash the next
        # daemon starts at or past this value, so cursors never repeat.
        try:
            atomic_write(self._cursor_file, str(value).encode(), durable=True, dir_fd=self._dir_fd)
        except OSError as e:
            log.warning("could not reserve event cursors in %s (%s); the clock's floor applies", self._cursor_file, e)

    @property
    def cursor(self) -> int:
        return self._cursor

    def close(self) -> None:
        """Record the last cursor for the next daemon (best-effort) and let go of the folder."""
        if self.shared:  # the database keeps the cursors
            os.close(self._dir_fd)
            return
        try:
            atomic_write(self._cursor_file + ".last", str(self._cursor).encode(), durable=True, dir_fd=self._dir_fd)
        except OSError as e:  # clients that reconnect after the restart re-read instead (cursor_expired)
            log.warning("could not record the last event cursor (%s)", e)
        os.close(self._dir_fd)

    # -- events ---------------------------------------------------------------------------------

    def emit(self, run_id: str, kind: str, body: Dict[str, Any], body_json: Optional[str] = None) -> None:
        """One event: `body` under `kind`; `body_json` is its JSON if the caller has it."""
        with self._lock:
            self._emit(run_id, kind, body, body_json or wire(body).decode(), False)

    def emit_records(self, run_id: str, records: List[Dict[str, Any]], lines: Optional[List[str]] = None) -> None:
        """A run's ledger records, each an event of kind `record` (their canonical JSON lines, if
        the store handed them over, are kept as they are)."""
        lines = lines or [json.dumps(r) for r in records]
        with self._lock:
            for rec, line in zip(records, lines, strict=True):
                self._emit(run_id, "record", rec, line, rec.get("seq") == 1)

    def _emit(self, run_id: str, kind: str, body: Dict[str, Any], body_json: str, first: bool) -> None:
        # Called with self._lock held. Live subscribers get the event as a dict.
        self._cursor += 1
        if self._cursor >= self._block_end:
            self._block_end += CURSOR_BLOCK
            self._save_block(self._block_end)
        now = time.time()
        event = {"cursor": self._cursor, "run_id": run_id, "kind": kind, kind: body, "committed_at": now}
        self._keep(self._cursor, run_id, first, _event_text(self._cursor, run_id, kind, body_json, now))
        for sub in self._subs.values():
            if (sub.run_id is None or sub.run_id == run_id) and self._cursor > sub.after:
                sub.deliver(event)

    def _keep(self, cursor: int, run_id: str, first: bool, text: str) -> None:
        # Called with self._lock held.
        events = self._events
        events.append((cursor, run_id, first, text))
        self._bytes += len(text) + ENTRY_OVERHEAD
        while len(events) > self.max_events or (self._bytes > self.max_bytes and len(events) > 1):
            gone = events.popleft()
            self._log_floor = gone[0]
            self._bytes -= len(gone[3]) + ENTRY_OVERHEAD

    def deliver_row(self, row: Tuple[int, str, str, str, bool, float]) -> None:
        """An event the shared feed read (cursor order): kept, and handed to the subscribers."""
        cursor, run_id, kind, body_json, first, at = row
        text = _event_text(cursor, run_id, kind, body_json, at)
        with self._lock:
            self._cursor = cursor
            self._keep(cursor, run_id, first, text)
            event: Optional[Event] = None
            for sub in self._subs.values():
                if (sub.run_id is None or sub.run_id == run_id) and cursor > sub.after:
                    event = event or json.loads(text)
                    sub.deliver(event)

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(
        self, run_id: Optional[str], after: Optional[int], deliver: Callable[[Event], None]
    ) -> Tuple[str, int, List[Event]]:
        """Register a subscription; returns (id, current cursor, the events after `after`).

        The backlog is read and the subscription registered under one lock, so no event falls
        between them and none is delivered twice. An `after` older than the log raises
        CursorExpiredError unless nothing can have been missed: no daemon served the folder
        before, or the subscription is for one run whose first ledger record the log holds."""
        if self._feed is not None:
            # The cursors at or below the feed's start are final once the commits in flight
            # when it started have ended (milliseconds): a replay must not miss one of them.
            self._feed.wait_ready(10.0)
            with self._lock:
                return self._subscribe_shared(run_id, after, deliver)
        with self._lock:
            backlog: List[Event] = []
            if after is not None and after < self._cursor:
                oldest = self._events[0][0] if self._events else self._cursor + 1
                caught_up = (
                    after < self._first_cursor and self._previous_last is not None and after >= self._previous_last
                )
                gap = after + 1 < oldest and not (caught_up and oldest == self._first_cursor)
                if gap and self._fresh and oldest == self._first_cursor:
                    gap = False  # the log still holds every event this folder ever had
                if gap and run_id is not None and self._whole_history(run_id):
                    gap = False  # the log holds every event of that run, from its first record
                if gap:
                    raise CursorExpiredError(
                        f"events after cursor {after} are no longer kept (oldest kept: {oldest}); "
                        "re-read the runs you follow, then subscribe without `after`",
                        oldest=oldest,
                        requested=after,
                    )
                backlog = [
                    json.loads(text)
                    for c, rid, _, text in self._events
                    if c > after and (run_id is None or rid == run_id)
                ]
            sub_id = f"s-{next(self._sub_ids)}"
            self._subs[sub_id] = Subscription(sub_id, run_id, deliver, after or 0)
            return sub_id, self._cursor, backlog

    def _subscribe_shared(
        self, run_id: Optional[str], after: Optional[int], deliver: Callable[[Event], None]
    ) -> Tuple[str, int, List[Event]]:
        # Called with self._lock held: no event is delivered between the backlog and the
        # registration. Events the log no longer holds are read back from the database.
        backlog: List[Event] = []
        if after is not None and after < self._cursor:
            if after < self._log_floor:
                floor = self._feed.floor()
                if after < floor and not (run_id is not None and self._feed.holds_start_of(run_id)):
                    raise CursorExpiredError(
                        f"events after cursor {after} are no longer kept (the database keeps events after {floor}); "
                        "re-read the runs you follow, then subscribe without `after`",
                        oldest=floor + 1,
                        requested=after,
                    )
                try:
                    rows = self._feed.history(after, self._log_floor, run_id, MAX_EVENTS)
                except ValueError:
                    raise CursorExpiredError(
                        f"more than {MAX_EVENTS} events happened after cursor {after}; "
                        "re-read the runs you follow, then subscribe without `after`",
                        oldest=self._log_floor + 1,
                        requested=after,
                    ) from None
                for cursor, rid, kind, body_json, _, at in rows:
                    backlog.append(
                        {"cursor": cursor, "run_id": rid, "kind": kind, kind: json.loads(body_json), "committed_at": at}
                    )
            backlog.extend(
                json.loads(text) for c, rid, _, text in self._events if c > after and (run_id is None or rid == run_id)
            )
        sub_id = f"s-{next(self._sub_ids)}"
        self._subs[sub_id] = Subscription(sub_id, run_id, deliver, after or 0)
        return sub_id, self._cursor, backlog

    def _whole_history(self, run_id: str) -> bool:
        # Called with self._lock held; scans the log (subscriptions are rare).
        for _, rid, first, _ in self._events:
            if rid == run_id:
                return first
        return False

    def unsubscribe(self, sub_id: str) -> bool:
        with self._lock:
            return self._subs.pop(sub_id, None) is not None

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    @property
    def bytes(self) -> int:
        """The text the log holds, with each entry's overhead (what the budget counts)."""
        return self._bytes

    def oldest(self) -> Optional[int]:
        with self._lock:
            return self._events[0][0] if self._events else None

    def __len__(self) -> int:
        return len(self._events)


def _event_text(cursor: int, run_id: str, kind: str, body_json: str, at: float) -> str:
    """An event as the log keeps it (JSON text, built around its body's JSON as it is)."""
    return (
        f'{{"cursor":{cursor},"run_id":{_quoted(run_id)},"kind":"{kind}","{kind}":{body_json},"committed_at":{at!r}}}'
    )


def _quoted(run_id: str) -> str:
    # Run ids are hex or uuid text: quoted as they are; anything else goes through the encoder.
    return f'"{run_id}"' if _PLAIN_ID.fullmatch(run_id) else json.dumps(run_id)


_PLAIN_ID = re.compile(r"[0-9A-Za-z_.:-]*")
