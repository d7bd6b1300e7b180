"""The hub: the one Runtime, Scheduler and set of stores a daemon owns, shared by every
connection, and the global event log that subscriptions read.

Every ledger append and every run status change becomes an event with a cursor that is
global and monotonic over all runs. Events are kept in a bounded in-memory log so a client
that reconnects with `after` gets each one it missed, in order, exactly once, then the live
ones. Cursors stay monotonic across restarts: blocks of cursors are reserved durably ahead of
use, so a daemon that restarts after a crash starts past anything it handed out.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .. import __version__
from ..core.models import EffectType, RunStatus
from ..core.policy import DefaultEffectPolicy
from ..core.runtime import Runtime
from ..integrations.abstractcore.factory import DEFAULT_LLM_RETRY
from ..integrations.abstractcore.llm import not_configured as llm_not_configured
from ..integrations.abstractcore.tools import ToolCallsHandler, ToolRegistry
from ..protocol import discovery
from ..protocol.errors import CursorExpiredError
from ..scheduler import Scheduler, WorkflowRegistry
from ..storage import (
    InMemoryLedgerStore,
    InMemoryRunStore,
    JsonFileRunStore,
    JsonlLedgerStore,
    SqliteDatabase,
    SqliteLedgerStore,
    SqliteRunStore,
)
from ..storage._durable import atomic_write, open_dir_fd
from ..storage.base import RunSummary
from .loader import ReloadResult, WorkflowCatalog
from .pool import TickPool

log = logging.getLogger("abstractruntime.daemon")

TERMINAL = frozenset(s.value for s in RunStatus if s.is_terminal)
EVENT_LOG_SIZE = 200_000  # events at most, whatever their size
EVENT_LOG_BYTES = 32 << 20  # and at most this much of them (their JSON text, kept as text)
EVENT_OVERHEAD = 120  # what an entry of the log costs beside its text (a tuple, its cursor)
CURSOR_BLOCK = 1_000_000

Event = Dict[str, Any]


@dataclass
class Subscription:
    subscription_id: str
    run_id: Optional[str]
    deliver: Callable[[Event], None]  # called under the hub's event lock; must only schedule


class Hub:
    def __init__(
        self,
        *,
        data_dir: str,
        workflow_dirs: List[str],
        store: str = "files",
        durable: bool = True,
        workers: int = 32,
        poll_interval_s: float = 1.0,
        llm: Optional[Dict[str, Any]] = None,
        external: Optional[List[str]] = None,
        project: Optional[Any] = None,
        event_log_bytes: int = EVENT_LOG_BYTES,
        cache_bytes: int = 32 << 20,
        max_subscriptions: int = 64,
    ) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.project = project  # the project.Project it was configured from, if any
        self.max_subscriptions = max_subscriptions  # per connection
        self.address: Dict[str, str] = {}  # {"socket": path} or {"tcp": "host:port"}, once listening
        discovery.ensure_data_dir(self.data_dir)  # ours and private, or the daemon refuses it
        self._lock_fd = _lock_data_dir(self.data_dir)
        self.store_kind = store
        self.started = time.time()
        if store == "files":
            runs_dir = os.path.join(self.data_dir, "runs")
            self.run_store: Any = JsonFileRunStore(runs_dir, durable=durable, cache_bytes=cache_bytes)
            self.ledger_store: Any = JsonlLedgerStore(runs_dir, durable=durable)
        elif store == "memory":  # for tests and benchmarks: nothing survives the process
            self.run_store, self.ledger_store = InMemoryRunStore(), InMemoryLedgerStore()
        elif store == "sqlite":
            db = SqliteDatabase(
                os.path.join(self.data_dir, "runtime.sqlite3"), durable=durable, cache_bytes=cache_bytes
            )
            self.run_store, self.ledger_store = SqliteRunStore(db), SqliteLedgerStore(db)
        else:
            raise ValueError(f"unknown store {store!r} (expected files, sqlite or memory)")
        self.registry = WorkflowRegistry()
        self.tools = ToolRegistry()  # the tools workflow modules define (hot-reloaded with them)
        self.catalog = WorkflowCatalog(workflow_dirs, self.registry, self.tools)
        self.workflow_dirs = self.catalog.dirs
        self._reload_listeners: List[Callable[[Dict[str, Any]], Any]] = []
        self._reload_lock = threading.Lock()
        self.llm = dict(llm) if llm else None
        self.runtime = Runtime(
            run_store=self.run_store,
            ledger_store=self.ledger_store,
            workflow_registry=self.registry,
            effect_handlers=self._effect_handlers(set(external or ())),
            external_effects=external or (),
            effect_policy=DefaultEffectPolicy(retries={EffectType.LLM_CALL: DEFAULT_LLM_RETRY}),
        )
        self.pool = TickPool(workers)
        self.scheduler = Scheduler(runtime=self.runtime, registry=self.registry, poll_interval_s=poll_interval_s)
        self.clients = 0
        self.stopping = False
        self._stop_callbacks: List[Callable[[], None]] = []
        self._dir_fd = open_dir_fd(self.data_dir)
        self._sub_ids = itertools.count(1)
        self._subs: Dict[str, Subscription] = {}
        self._lock = threading.Lock()
        # The event log: (cursor, event, size); bounded by count and by bytes (oldest out first).
        # (cursor, run id, whether it is the run's first ledger record, the event's JSON)
        self._events: Deque[Tuple[int, str, bool, str]] = deque()
        self._event_bytes = 0
        self.event_log_bytes = event_log_bytes
        self._cursor_file = os.path.join(self.data_dir, "cursor")
        self._cursor = self._reserve_first_block()
        self._first_cursor = self._cursor + 1
        # The last cursor the previous daemon handed out, if it stopped cleanly: a client that
        # saw up to it missed nothing across the restart. After a crash it is unknown.
        self._previous_last = self._take_previous_last()
        self._last_seen: Dict[str, Tuple[str, Optional[str]]] = {}
        self.ledger_store.add_listener(self._on_records)
        self.run_store.add_listener(self._on_summary)
        self.reload_workflows()

    @property
    def load_errors(self) -> List[Dict[str, Any]]:
        return self.catalog.errors()

    def _effect_handlers(self, external: set) -> Dict[Any, Any]:
        """LLM_CALL through AbstractCore when a model is configured (else a clear failure), and
        TOOL_CALLS over the workflow modules' tools unless a host executes them (--external)."""
        handlers: Dict[Any, Any] = {}
        if EffectType.TOOL_CALLS.value not in external:
            handlers[EffectType.TOOL_CALLS] = ToolCallsHandler(self.tools)
        if self.llm:
            from ..integrations.abstractcore.llm import LLMCallHandler  # the opt-in to AbstractCore

            handlers[EffectType.LLM_CALL] = LLMCallHandler(
                self.llm["provider"],
                self.llm["model"],
                tools=self.tools,
                provider_options=self.llm.get("options") or {},
                on_progress=self.publish_progress,
            )
        else:
            handlers[EffectType.LLM_CALL] = llm_not_configured
        return handlers

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.scheduler.start()  # also ticks runs a crash left mid-step

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._stop_callbacks.append(fn)

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM, `daemon/shutdown`): new requests are refused."""
        if not self.stopping:
            self.stopping = True
            for fn in self._stop_callbacks:
                fn()

    def drain(self) -> None:
        """Stop taking work and wait for in-flight steps to finish (they commit)."""
        self.stopping = True
        self.scheduler.stop()
        self.pool.shutdown()

    def close(self) -> None:
        """Drain, then flush and close the stores. Never fails: on a full disk what cannot be
        written stays in the stores' journals for the next start."""
        self.drain()
        llm: Any = self.runtime._handlers.get(EffectType.LLM_CALL.value)
        if hasattr(llm, "close"):
            llm.close()
        self.run_store.close()
        self.ledger_store.close()
        try:
            atomic_write(self._cursor_file + ".last", str(self._cursor).encode(), durable=True, dir_fd=self._dir_fd)
        except OSError as e:  # clients that reconnect after the restart re-read instead (cursor_expired)
            log.warning("could not record the last event cursor (%s)", e)
        os.close(self._dir_fd)
        os.close(self._lock_fd)  # releases the folder for the next daemon

    # -- workflows ------------------------------------------------------------------------------

    def on_reload(self, fn: Callable[[Dict[str, Any]], Any]) -> None:
        """`fn(report)` after each reload that changed something (a `workflows/changed`)."""
        self._reload_listeners.append(fn)

    def reload_workflows(self, *, grace_s: float = 0.0) -> Dict[str, Any]:
        """Re-import the workflow files whose source changed; returns the reload report.
        With `grace_s` (the watcher's), a save that would remove workflows is held back for
        that long (`report["retry_after"]`): an editor may be half-way through writing it.

        Blocking (it imports user modules): the daemon calls it off the event loop."""
        with self._reload_lock:
            t0 = time.monotonic()
            result = self.catalog.rescan(grace_s=grace_s)
            for e in result.new_errors:
                log.error("workflow load error: %s:%s: %s", e["file"], e.get("line"), e["message"])
            for path in result.cleared:
                log.info("workflow file loads again: %s", path)
            report = self._report(result)
            report["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 3)
            if result.retry_after is not None:
                report["retry_after"] = result.retry_after
            if result.changes:
                # A stranded timer may be runnable on the new code (its node came back).
                self.scheduler.unpark()
                for c in result.changes:
                    log.info("workflow %s: %s -> %s (%s)", c.workflow_id, c.old_version, c.new_version, c.file)
            if report["stranded"]:
                log.warning("%d waiting run(s) stranded by this reload", len(report["stranded"]))
        if result.anything:
            for fn in self._reload_listeners:
                fn(report)
        return report

    def _report(self, result: ReloadResult) -> Dict[str, Any]:
        ids = sorted({c.workflow_id for c in result.changes})
        return {
            "changed": [c.to_dict() for c in result.changes],
            "load_errors": self.catalog.errors(),
            "new_errors": result.new_errors,
            "stranded": self.find_stranded(ids),
            "reloaded_at": time.time(),
        }

    def find_stranded(self, workflow_ids: Optional[List[str]] = None) -> List[Dict[str, Any]]:
        """Waiting runs the served code can't resume: their resume node is missing from the
        workflow's current version, or their workflow is no longer served at all."""
        out: List[Dict[str, Any]] = []
        # One listing of all waiting runs, or one per workflow asked about.
        runs = self._waiting() if workflow_ids is None else [s for wid in workflow_ids for s in self._waiting(wid)]
        for s in runs:
            wf = self.registry.get(s.workflow_id)
            node = s.resume_node
            if node is None:  # a summary written before resume_node existed
                st = self.run_store.load(s.run_id)
                w = st.waiting if st is not None else None
                node = (w.resume_to_node if w else None) or s.current_node
            if wf is not None and node in wf.nodes:
                continue
            out.append(
                {
                    "run_id": s.run_id,
                    "workflow_id": s.workflow_id,
                    "node_id": node,
                    "reason": "workflow_removed" if wf is None else "node_missing",
                    "run_version": s.last_version or s.workflow_version,
                    "workflow_version": wf.version if wf is not None else None,
                }
            )
        return out

    def _waiting(self, workflow_id: Optional[str] = None) -> List[RunSummary]:
        return self.run_store.list_run_summaries(status=RunStatus.WAITING, workflow_id=workflow_id, limit=10**9)

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run blocking kernel work off the event loop, so a slow node or effect never
        delays another client's request."""
        return await self.pool.run(lambda: fn(*args, **kw))

    # -- cursors --------------------------------------------------------------------------------

    def _reserve_first_block(self) -> int:
        try:
            with open(self._cursor_file) as f:
                stored = int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            stored = 0
        # No daemon ever served this folder: there are no earlier events to have missed.
        self._fresh = stored == 0
        # Microseconds since the epoch are a floor that grows faster than events are handed
        # out (a million a second), so a daemon that could not write its reservation (a full
        # disk) still starts past every cursor used before; the file guards a clock set back.
        start = max(stored, time.time_ns() // 1000)
        self._block_end = start + CURSOR_BLOCK
        self._save_cursor_block(self._block_end)
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

    def _save_cursor_block(self, value: int) -> None:
        # Durable before any cursor of the block is handed out: after a crash the next
        # daemon starts at or past this value, so cursors never repeat.
        try:
            atomic_write(self._cursor_file, str(value).encode(), durable=True, dir_fd=self._dir_fd)
        except OSError as e:
            log.warning("could not reserve event cursors in %s (%s); the clock's floor applies", self._cursor_file, e)

    @property
    def cursor(self) -> int:
        return self._cursor

    # -- events ---------------------------------------------------------------------------------

    def _emit(self, run_id: str, kind: str, body: Dict[str, Any], body_json: str, first: bool = False) -> None:
        # Called with self._lock held. Live subscribers get the event as a dict; the log keeps
        # it as JSON text (its size is what the budget counts: a dict is several times larger).
        self._cursor += 1
        if self._cursor >= self._block_end:
            self._block_end += CURSOR_BLOCK
            self._save_cursor_block(self._block_end)
        now = time.time()
        event = {"cursor": self._cursor, "run_id": run_id, "kind": kind, kind: body, "committed_at": now}
        text = (
            f'{{"cursor":{self._cursor},"run_id":{json.dumps(run_id)},"kind":"{kind}",'
            f'"{kind}":{body_json},"committed_at":{now!r}}}'
        )
        events = self._events
        events.append((self._cursor, run_id, first, text))
        self._event_bytes += len(text) + EVENT_OVERHEAD
        while len(events) > EVENT_LOG_SIZE or (self._event_bytes > self.event_log_bytes and len(events) > 1):
            self._event_bytes -= len(events.popleft()[3]) + EVENT_OVERHEAD
        for sub in self._subs.values():
            if sub.run_id is None or sub.run_id == run_id:
                sub.deliver(event)

    def publish_progress(self, run_id: str, node_id: str, text: str) -> None:
        """A streamed piece of a model's answer: an event for subscribers, not a ledger record
        (the whole answer is one record when the call completes)."""
        body = {"node_id": node_id, "text": text}
        with self._lock:
            self._emit(run_id, "progress", body, json.dumps(body))

    def _on_records(self, run_id: str, records: List[Dict[str, Any]]) -> None:
        # The stores hand over each record's canonical JSON too (StoredRecords.lines).
        lines = getattr(records, "lines", None) or [json.dumps(r) for r in records]
        with self._lock:
            for rec, line in zip(records, lines, strict=True):
                self._emit(run_id, "record", rec, line, first=rec.get("seq") == 1)

    def _on_summary(self, s: RunSummary) -> None:
        key = (s.status, s.wait_key)
        with self._lock:
            if self._last_seen.get(s.run_id) == key:
                return  # the same state heard twice (a lease release re-announces timers)
            if s.status in TERMINAL:
                self._last_seen.pop(s.run_id, None)  # nothing re-announces a run that ended
            else:
                self._last_seen[s.run_id] = key
            body = s.to_dict()
            self._emit(s.run_id, "state", body, json.dumps(body))

    def subscribe(
        self, run_id: Optional[str], after: Optional[int], deliver: Callable[[Event], None]
    ) -> Tuple[str, int, List[Event]]:
        """Register a subscription; returns (id, current cursor, the events after `after`).

        The backlog is read and the subscription registered under one lock, so no event falls
        between them and none is delivered twice."""
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
            self._subs[sub_id] = Subscription(sub_id, run_id, deliver)
            return sub_id, self._cursor, backlog

    def _whole_history(self, run_id: str) -> bool:
        """Whether the event log still holds a run's first ledger record (and so every later
        event of the run). Called with self._lock held; scans the log (subscriptions are rare)."""
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

    def status(self) -> Dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "store": self.store_kind,
            "data_dir": self.data_dir,
            "socket": self.address.get("socket"),
            "tcp": self.address.get("tcp"),
            "project_root": self.project.root if self.project is not None else None,
            "config_file": self.project.config_file if self.project is not None else None,
            "workflow_dirs": self.workflow_dirs,
            "model": f"{self.llm['provider']}/{self.llm['model']}" if self.llm else None,
            "runs": self.run_store.count_by_status(),
            "clients": self.clients,
            "subscriptions": self.subscriptions,
            "scheduler": self.scheduler.stats.to_dict(),
            "cursor": self._cursor,
        }


class DataFolderInUse(RuntimeError):
    pass


def _lock_data_dir(data_dir: str) -> int:
    """One daemon per data folder: two writers would corrupt the stores' indexes."""
    fd = os.open(os.path.join(data_dir, "daemon.lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = discovery.read_discovery(data_dir) or {}
        where = info.get("socket") or info.get("tcp") or "unknown address"
        raise DataFolderInUse(
            f"{data_dir} is in use by another daemon (pid {info.get('pid', '?')}, at {where}); "
            "stop it first, or pass another --data folder"
        ) from None
    return fd
