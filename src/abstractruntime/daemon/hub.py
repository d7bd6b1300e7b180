"""The hub: what a daemon owns and every connection shares, and the wiring between them.

It opens the stores (one unit), builds the Runtime with its effect handlers, the Scheduler,
the workflow catalog (loading and hot reload) and the event log (`events.py`), and connects
the stores' listeners to the event log. Sessions reach all of it through the hub; none of
these parts knows of the others beyond what the hub hands it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

from .. import __version__
from ..core.errors import RunFinishedError
from ..core.models import EffectType, RunState, RunStatus
from ..core.runtime import Runtime
from ..integrations.abstractcore.factory import DEFAULT_EFFECT_POLICY
from ..integrations.abstractcore.llm import not_configured as llm_not_configured
from ..integrations.abstractcore.tools import ToolCallsHandler, ToolRegistry
from ..protocol import discovery
from ..scheduler import Scheduler, WorkflowRegistry
from ..storage import open_stores
from ..storage.base import RunSummary
from .events import MAX_BYTES, EventLog
from .loader import ReloadResult, WorkflowCatalog
from .pool import TickPool

log = logging.getLogger("abstractruntime.daemon")


class Hub:
    def __init__(
        self,
        *,
        data_dir: str,
        workflow_dirs: List[str],
        store: str = "files",
        dsn: Optional[str] = None,
        durable: bool = True,
        workers: int = 32,
        poll_interval_s: float = 1.0,
        llm: Optional[Dict[str, Any]] = None,
        external: Optional[List[str]] = None,
        project: Optional[Any] = None,
        event_log_bytes: int = MAX_BYTES,
        cache_bytes: int = 32 << 20,
        max_subscriptions: int = 64,
        lease_s: float = 30.0,
        event_retention_s: float = 7 * 86400.0,
    ) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.project = project  # the project.Project it was configured from, if any
        self.max_subscriptions = max_subscriptions  # per connection
        self.address: Dict[str, str] = {}  # {"socket": path} or {"tcp": "host:port"}, once listening
        self.web: Any = None  # the web listener (daemon/web.py) with `serve --http`
        discovery.ensure_data_dir(self.data_dir)  # ours and private, or the daemon refuses it
        self._lock_fd = lock_data_dir(self.data_dir)
        self.store_kind = store
        self.started = time.time()
        # Where each backend keeps its data inside the data folder (the files store predates
        # the others and has its own subfolder).
        where = {"files": os.path.join(self.data_dir, "runs"), "sqlite": self.data_dir, "memory": None, "postgres": dsn}
        if store not in where:
            raise ValueError(f"unknown store {store!r} (expected files, sqlite, memory or postgres)")
        if store == "postgres":
            if not dsn:
                raise ValueError("the postgres store needs a DSN: serve --dsn DSN, or dsn in the project config")
            # Several daemons share the database: each keeps its own data folder (event log,
            # discovery, token), and the runs, ledger and leases live in the database.
            self.stores = open_stores("postgres", dsn, artifacts=True)
        else:
            self.stores = open_stores(store, where[store], durable=durable, cache_bytes=cache_bytes)
        self.run_store: Any = self.stores.runs
        self.ledger_store: Any = self.stores.ledger
        self.registry = WorkflowRegistry()
        self.tools = ToolRegistry()  # the tools workflow modules define (hot-reloaded with them)
        self.catalog = WorkflowCatalog(workflow_dirs, self.registry, self.tools)
        self.workflow_dirs = self.catalog.dirs
        self._reload_listeners: List[Callable[[Dict[str, Any]], Any]] = []
        self._reload_lock = threading.Lock()
        self.llm = dict(llm) if llm else None
        self.shared = store == "postgres"  # several daemons may serve these runs
        # This daemon's id: the owner of its leases, and its row among the peers.
        self.daemon_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_s = lease_s if self.shared else 300.0
        self.runtime = Runtime(
            stores=self.stores,
            workflow_registry=self.registry,
            effect_handlers=self._effect_handlers(set(external or ())),
            external_effects=external or (),
            effect_policy=DEFAULT_EFFECT_POLICY,
            record_origin=True,  # every run can be forked (runtime/fork replays from its origin)
            owner_id=self.daemon_id,
            lease_s=self.lease_s,
        )
        self.pool = TickPool(workers)
        self.scheduler = Scheduler(
            runtime=self.runtime,
            registry=self.registry,
            poll_interval_s=poll_interval_s,
            lease_s=self.lease_s,
            # Shared timers are claimed a few hundred at a time, so that a burst due at once is
            # spread over every daemon instead of taken whole by the first to look.
            batch_size=256 if self.shared else 10000,
        )
        self.clients = 0
        self.stopping = False
        self._stop_callbacks: List[Callable[[], None]] = []
        self.events = EventLog(self.data_dir, max_bytes=event_log_bytes, shared=self.shared)
        self.feed: Any = None
        self._heartbeat: Optional[threading.Thread] = None
        self._heartbeat_stop = threading.Event()
        if self.shared:
            from ..storage.postgres_feed import PostgresFeed

            # The database's feed hands the log every event, this daemon's and the others'.
            pg: Any = self.stores.runs
            self.feed = PostgresFeed(pg.db, self.events.deliver_row, retention_s=event_retention_s)
            self.events.attach_feed(self.feed)
            # Timers and orphaned runs this daemon can run: its workflows, not the runs it parked.
            pg.eligible = lambda: (self.registry.list_ids(), list(self.scheduler.parked))
        else:
            # The stores tell the event log what committed: every ledger append (with its
            # canonical lines) and every change of a run's status or wait.
            self.ledger_store.add_listener(
                lambda run_id, recs: self.events.emit_records(run_id, recs, getattr(recs, "lines", None))
            )
        self.run_store.add_listener(self._run_changed)
        self.reload_workflows()

    def _run_changed(self, s: RunSummary) -> None:
        if not self.shared:
            self.events.emit(s.run_id, "state", s.to_dict())
        if s.status == "failed":
            # One line per failed run: what a person tailing the log needs to go and look.
            lines = (s.error or "").strip().splitlines()
            first = lines[0] if lines else "no error given"
            log.error("run %s (%s) failed at node %s: %s", s.run_id, s.workflow_id, s.current_node, first)

    def go_on(self, run_id: str, *, wait: bool, stored: Optional[RunState] = None) -> RunState:
        """Tick a run that was just stored (started, retried, forked): here and now (`wait`),
        or on a tick worker while the caller answers with the stored state."""
        if wait:
            return self.runtime.tick(workflow=None, run_id=run_id)

        def tick() -> None:
            try:
                self.runtime.tick(workflow=None, run_id=run_id)
            except Exception as e:  # isolation boundary: nobody waits for this tick; the run stays running
                log.warning("run %s: its first tick failed (%s); it is retried at the next start", run_id, e)

        try:
            self.pool.submit(tick)
        except Exception as e:  # shutting down: the next daemon recovers the running run
            log.info("run %s stored; it runs when the daemon starts again (%s)", run_id, e)
        return stored if stored is not None else self.runtime.get_state(run_id)

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
        if self.shared:
            self._beat()  # in the peers list before the first client asks
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, name="abstractruntime-heartbeat", daemon=True
            )
            self._heartbeat.start()

    # -- several daemons --------------------------------------------------------------------------

    @property
    def heartbeat_s(self) -> float:
        return max(0.2, min(5.0, self.lease_s / 4))

    def _beat(self) -> None:
        info = {
            "address": self.address.get("tcp") or self.address.get("socket"),
            "workflows": {wid: wf.version for wid in self.registry.list_ids() if (wf := self.registry.get(wid))},
        }
        self.run_store.db.heartbeat(
            self.daemon_id, info, started_at=self.started, lease_s=self.lease_s, keep=list(self.scheduler.parked)
        )

    def _heartbeat_loop(self) -> None:
        """Say this daemon is alive (renewing its leases), and take over the runs of daemons
        that are not: running runs nobody holds, whose daemon died mid-step."""
        suspects: set = set()
        while not self._heartbeat_stop.wait(self.heartbeat_s):
            try:
                self._beat()
                # A run unleased at two beats in a row, unchanged between them, is orphaned: a
                # run just stored is leased by its first tick within milliseconds.
                found = set(self.run_store.orphans())
                for run_id, _ in found & suspects:
                    log.info("run %s: its daemon stopped mid-step; ticking it here", run_id)
                    self.go_on(run_id, wait=False)
                suspects = found
            except Exception as e:  # isolation boundary: the next beat tries again
                log.warning("heartbeat: %s", e)

    def peers(self) -> List[Dict[str, Any]]:
        """The daemons serving this database (this one included), oldest first."""
        if not self.shared:
            return []
        out = self.run_store.db.peers()
        for p in out:
            p["this"] = p["daemon_id"] == self.daemon_id
        return out

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._stop_callbacks.append(fn)

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM, `daemon/shutdown`): new requests are refused."""
        if not self.stopping:
            busy = self.pool.busy
            log.info(
                "stopping: finishing %d in-flight step%s (a second Ctrl-C or SIGTERM stops at once; nothing "
                "committed is lost)",
                busy,
                "" if busy == 1 else "s",
            )
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
        if self.shared:
            self._heartbeat_stop.set()
            if self._heartbeat is not None:
                self._heartbeat.join(10)
            self.feed.close()
            self.run_store.db.forget(self.daemon_id)  # the others take its runs now, not at lease expiry
        llm: Any = self.runtime._handlers.get(EffectType.LLM_CALL.value)
        if hasattr(llm, "close"):
            llm.close()
        self.stores.close()
        self.events.close()
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
        return self.run_store.list_run_summaries(status=RunStatus.WAITING, workflow_id=workflow_id, limit=None)

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run blocking kernel work off the event loop, so a slow node or effect never
        delays another client's request."""
        return await self.pool.run(lambda: fn(*args, **kw))

    def cancel(self, run_id: str, reason: Optional[str] = None) -> RunState:
        """`runtime/cancel`: the kernel's cancel, except that a run which already completed or
        failed is an error a client is told of (the kernel returns it unchanged)."""
        state = self.runtime.cancel_run(run_id, reason=reason)
        if state.status.is_terminal and state.status != RunStatus.CANCELLED:
            raise RunFinishedError(
                f"run {run_id} already {state.status.value}; there is nothing to cancel",
                run_id=run_id,
                status=state.status.value,
            )
        return state

    def publish_progress(self, run_id: str, node_id: str, text: str) -> None:
        """A streamed piece of a model's answer: an event for subscribers, not a ledger record
        (the whole answer is one record when the call completes)."""
        body = {"node_id": node_id, "text": text}
        if self.shared:  # through the database, so subscribers on every daemon see it
            self.run_store.db.append_event(run_id, "progress", body)
        else:
            self.events.emit(run_id, "progress", body)

    def status(self) -> Dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "store": self.store_kind,
            "data_dir": self.data_dir,
            "socket": self.address.get("socket"),
            "tcp": self.address.get("tcp"),
            "http": self.address.get("http"),
            "project_root": self.project.root if self.project is not None else None,
            "config_file": self.project.config_file if self.project is not None else None,
            "workflow_dirs": self.workflow_dirs,
            "model": f"{self.llm['provider']}/{self.llm['model']}" if self.llm else None,
            "runs": self.run_store.count_by_status(),
            "clients": self.clients,
            "subscriptions": self.events.subscriptions,
            "scheduler": self.scheduler.stats.to_dict(),
            "cursor": self.events.cursor,
            "daemon_id": self.daemon_id,
            "peers": self.peers(),
        }


class DataFolderInUse(RuntimeError):
    pass


def lock_data_dir(data_dir: str) -> int:
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
