"""One client connection, bound to the shared hub.

The session answers the LSP lifecycle (`initialize`, `initialized`, `shutdown`, `exit`) and
the protocol's own methods itself; `exit` closes this connection only, and requests before
`initialize` get LSP's "server not initialized" error. Any other LSP message (the editor
features) goes to a pygls `LanguageServer` of this connection's own, created on first need
(see `lsp.py`): importing pygls and lsprotocol costs 0.3-1.2 s, which scripts and non-editor
hosts never pay, and pygls's per-message serialization was most of the daemon's CPU. That
import runs on a thread of its own, started when an editor initializes; the editor's connection
reads its next message only once it is done, while every other connection is served.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import importlib
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Set

from pydantic import ValidationError

from .. import __version__
from ..core.errors import AbstractRuntimeError
from ..core.jsonutil import wire
from ..core.ledger_hash import verify_ledger_chain
from ..core.timeutil import iso_to_epoch
from ..protocol import models as m
from ..protocol.errors import (
    INVALID_REQUEST,
    SERVER_NOT_INITIALIZED,
    RpcError,
    ShuttingDownError,
    SubscriptionNotFoundError,
    TooManySubscriptionsError,
    UnauthorizedError,
    WebNotServedError,
    invalid_params,
    to_wire,
)
from ..protocol.methods import BY_NAME, EDITOR_COMMANDS, NOTIFICATION_NAMES, REQUEST_NAMES
from ..protocol.models import PROTOCOL_VERSION

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("abstractruntime.daemon")

MAX_UNREAD = 64 * 1024 * 1024  # see Session.overflowed


class Session:
    def __init__(self, hub: Hub, *, token: Optional[str], on_close: Callable[[Session], None]) -> None:
        self.hub = hub
        self.token = token
        self.initialized = False
        self.closed = False
        self._on_close = on_close
        self.shut_down = False
        self.subscriptions: Set[str] = set()
        self.loop = asyncio.get_running_loop()
        self.writer: Any = None  # set by the transport
        self.init_params: Dict[str, Any] = {}
        self._lsp: Any = None
        self.loading: Optional[concurrent.futures.Future[None]] = None  # see wait_loaded
        self.events_from: Optional[int] = None
        self._register()

    # -- lifecycle ------------------------------------------------------------------------------

    def authorize(self, options: Any) -> None:
        if self.token is None:
            return
        given = options.get("token") if isinstance(options, dict) else None
        if not isinstance(given, str) or not hmac.compare_digest(given, self.token):
            raise UnauthorizedError("this daemon needs the token from its token file in initializationOptions.token")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sub in list(self.subscriptions):
            self.hub.events.unsubscribe(sub)
        self.subscriptions.clear()
        if self._lsp is not None:
            self._lsp.close()  # the editor features let go of what they hold
        writer = self.writer
        if writer is not None:
            try:
                res = writer.close()
                if asyncio.iscoroutine(res):
                    asyncio.ensure_future(res)
            except Exception:  # isolation boundary: a broken pipe on close is the client's business
                log.debug("closing a client's writer failed", exc_info=True)
        self._on_close(self)

    # -- dispatch -------------------------------------------------------------------------------

    def send(self, obj: Dict[str, Any]) -> None:
        """Write one message (a JSON dump and a Content-Length header); from any thread."""
        if self.writer is None or self.closed:
            return
        self.write(wire(obj))

    def write(self, body: bytes) -> None:
        """Write one encoded message; from any thread. The transport's writer frames it
        (`framing.ConnWriter`: a Content-Length header; `web.WsWriter`: a WebSocket frame)."""
        writer = self.writer
        if writer is None or self.closed:
            return
        writer.message(body)

    def overflowed(self, unread: int) -> None:
        """The writer holds more than `MAX_UNREAD` bytes the client has not taken (on the loop).
        A client that stopped reading (a stuck subscriber) must not make the daemon buffer
        without bound: close it; it can reconnect with its cursor and miss nothing."""
        log.warning("closing a client with %d unread bytes", unread)
        self.close()

    def reply_error(self, msg_id: Any, exc: BaseException, context: Optional[str] = None) -> None:
        """Answer a request with the error for `exc` (see protocol.errors.to_wire)."""
        self.send({"jsonrpc": "2.0", "id": msg_id, "error": to_wire(exc, context)})

    def handle_request(self, msg_id: Any, method: str, params: Any) -> None:
        if method == "initialize":
            self._initialize(msg_id, params)
            return
        if not self.initialized:
            self.reply_error(
                msg_id, RpcError(SERVER_NOT_INITIALIZED, f"server not initialized: send initialize before {method}")
            )
            return
        if self.shut_down:
            self.reply_error(msg_id, RpcError(INVALID_REQUEST, f"{method} after shutdown: only exit is accepted"))
            return
        if method == "shutdown":
            self.shut_down = True
            self.send({"jsonrpc": "2.0", "id": msg_id, "result": None})
            return
        work = self._work.get(method)
        if work is not None:
            self._submit(msg_id, method, params, work)
            return
        if method in self._handlers:
            asyncio.ensure_future(self._serve(msg_id, method, params))
            return
        self.lsp().request(msg_id, method, params)

    def handle_notification(self, method: str, params: Any) -> None:
        if method == "exit":
            self.close()
        elif method == "initialized":
            if self.initialized and self.is_editor():
                self.lsp().start_editor_features()
        elif method in ("$/cancelRequest", "$/setTrace") or method in REQUEST_NAMES:
            pass  # nothing to do (our methods are all requests)
        elif self.initialized:
            self.lsp().notification(method, params)

    def handle_response(self, msg: Dict[str, Any]) -> None:
        if self._lsp is not None:  # an answer to a request the editor features sent
            self._lsp.response(msg)

    def _initialize(self, msg_id: Any, params: Any) -> None:
        if self.initialized:
            self.reply_error(msg_id, RpcError(INVALID_REQUEST, "initialize was already sent on this connection"))
            return
        params = params if isinstance(params, dict) else {}
        try:
            self.authorize(params.get("initializationOptions"))
        except UnauthorizedError as e:
            self.reply_error(msg_id, e)
            return
        self.init_params = params
        self.initialized = True
        if self.is_editor():
            self.events_from = self.hub.events.cursor
            self.loading = _load_editor_support()
        self.send(
            {
                "jsonrpc": "2.0",
                "id": msg_id,
                "result": {
                    "capabilities": {
                        # The editor features (daemon/editor.py), served by the connection's
                        # pygls server once the client says `initialized`.
                        "textDocumentSync": {"openClose": True, "change": 1},
                        "codeLensProvider": {"resolveProvider": False},
                        "executeCommandProvider": {"commands": list(EDITOR_COMMANDS)},
                        "experimental": {
                            "abstractruntime": {
                                "protocolVersion": PROTOCOL_VERSION,
                                "version": __version__,
                                "methods": list(REQUEST_NAMES),
                                "notifications": list(NOTIFICATION_NAMES),
                            }
                        },
                    },
                    "serverInfo": {"name": "abstractruntime", "version": __version__},
                },
            }
        )

    def is_editor(self) -> bool:
        """An LSP editor (it declares text document capabilities) or a client that opted into
        prompts: it gets the editor features. Scripts and hosts send neither."""
        opts = self.init_params.get("initializationOptions")
        caps = self.init_params.get("capabilities")
        return bool(
            (isinstance(caps, dict) and "textDocument" in caps)
            or (isinstance(opts, dict) and opts.get("answerPrompts"))
        )

    def workflows_changed(self, report: Dict[str, Any]) -> None:
        """After a reload: the notification, and fresh diagnostics and lenses for an editor."""
        self.send({"jsonrpc": "2.0", "method": "workflows/changed", "params": report})
        if self._lsp is not None:
            self._lsp.workflows_changed(report)

    async def wait_loaded(self) -> None:
        """Before this connection's next message: the editor support, if it is being loaded."""
        loading, self.loading = self.loading, None
        if loading is not None:
            try:
                await asyncio.wrap_future(loading)
            except Exception:  # lsp() imports again on first need and reports it there
                log.exception("loading the editor support failed")

    def lsp(self) -> Any:
        """This connection's pygls server, created (and told about `initialize`) on first need."""
        if self._lsp is None:
            from .lsp import LspBridge  # deferred on purpose: see the module docstring

            self._lsp = LspBridge(self)
        return self._lsp

    def _submit(self, msg_id: Any, name: str, raw: Any, work: Callable[[Any], Any]) -> None:
        """A method whose work is kernel work: its params are checked here, on the loop; the
        work, the reply's encoding and its writing all happen on a tick worker. (Handing the
        result back to the loop to be written cost a second thread switch, a wake-up of the
        loop and a task step per request.)"""
        try:
            if self.hub.stopping and name != "daemon/status":
                raise ShuttingDownError("the daemon is shutting down")
            params = _validate(BY_NAME[name].params, name, raw)
        except (AbstractRuntimeError, RpcError) as e:
            self.reply_error(msg_id, e)
            return

        def job() -> None:
            self._respond(msg_id, name, lambda: work(params))

        try:
            self.hub.pool.submit(job)
        except ShuttingDownError as e:
            self.reply_error(msg_id, e)

    async def _serve(self, msg_id: Any, method: str, params: Any) -> None:
        try:
            result = await self._handlers[method](params)
        except (Exception, RecursionError) as e:
            self._respond(msg_id, method, functools.partial(_reraise, e))
        else:
            self._respond(msg_id, method, lambda: result)

    def _respond(self, msg_id: Any, name: str, produce: Callable[[], Any]) -> None:
        """Answer with what `produce` returns, or with the error it raises. The reply is
        encoded inside the error handling: a result that cannot be encoded still gets an
        answer (an error), never silence."""
        try:
            body = _reply(msg_id, produce())
        except (AbstractRuntimeError, RpcError) as e:
            self.reply_error(msg_id, e)
        except (Exception, RecursionError) as e:  # isolation boundary: one request's bug is its own
            log.exception("%s failed", name)
            # The log keeps the traceback; the client gets what failed, not the daemon's code.
            self.reply_error(msg_id, e, name)
        else:
            self.write(body)

    def _register(self) -> None:
        # Kernel work, run on a tick worker that also writes the reply (see _submit).
        work: Dict[str, Callable[[Any], Any]] = {
            "runtime/start": self.start,
            "runtime/resume": self.resume,
            "runtime/state": self.state,
            "runtime/ledger": self.ledger,
            "runtime/verify": self.verify,
            "runtime/runs": self.runs,
            "runtime/cancel": self.cancel,
            "runtime/emitEvent": self.emit_event,
            "runtime/migrate": self.migrate,
            "runtime/retry": self.retry,
            "runtime/fork": self.fork,
            "workflows/list": self.workflows,
            "daemon/status": self.status,
        }
        # Work on the event loop (subscriptions live there) or on threads of its own.
        handlers: Dict[str, Callable[[Any], Any]] = {
            "runtime/subscribe": self.subscribe,
            "runtime/unsubscribe": self.unsubscribe,
            "workflows/reload": self.reload,
            "daemon/shutdown": self.shutdown_daemon,
            "daemon/webLink": self.web_link,
        }
        assert set(handlers) | set(work) == set(REQUEST_NAMES), "the method table and the handlers disagree"
        self._work = work
        self._handlers = {name: self._wrap(name, fn) for name, fn in handlers.items()}

    def _wrap(self, name: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        method = BY_NAME[name]

        async def handler(raw: Any) -> Any:
            if self.hub.stopping:
                raise ShuttingDownError("the daemon is shutting down")
            result = await fn(_validate(method.params, name, raw))
            # Results are built from plain JSON data by this module; the models validate them in
            # the tests (and in every client), not on each response.
            return result if method.result is not None else None

        handler.__name__ = f"handle_{name.replace('/', '_')}"
        return handler

    # -- methods -----------------------------------------------------------------------------------

    # Kernel work: these run on a tick worker (see _submit).

    def start(self, p: m.StartParams) -> Dict[str, Any]:
        # Stored before its first node runs: listed at once, and a crash during that node
        # leaves a run the next daemon recovers (its scheduler ticks running runs at start).
        rt = self.hub.runtime
        wf = rt.workflow(p.workflow_id)
        if p.wait:  # stored, then ticked from memory on this worker
            state = rt.start_and_tick(
                workflow=wf, vars=p.vars, session_id=p.session_id, actor_id=p.actor_id, store_first=True
            )
            return {"run_id": state.run_id, "state": state.to_dict()}
        run_id = rt.start(workflow=wf, vars=p.vars, session_id=p.session_id, actor_id=p.actor_id)
        return {"run_id": run_id, "state": self.hub.go_on(run_id, wait=False).to_dict()}

    def retry(self, p: m.RetryParams) -> Dict[str, Any]:
        rt = self.hub.runtime
        state = rt.retry_run(p.run_id, tick=p.wait)
        if not p.wait:
            self.hub.go_on(p.run_id, wait=False)
        return {"state": state.to_dict()}

    def fork(self, p: m.ForkParams) -> Dict[str, Any]:
        state = self.hub.runtime.fork_run(p.run_id, seq=p.seq, vars=p.vars)
        if not state.status.is_terminal:
            state = self.hub.go_on(state.run_id, wait=p.wait, stored=state)
        return {"run_id": state.run_id, "state": state.to_dict()}

    def resume(self, p: m.ResumeParams) -> Dict[str, Any]:
        # wait_key None: whatever the run waits on now (checked under the run's lock).
        state = self.hub.runtime.resume(workflow=None, run_id=p.run_id, wait_key=p.wait_key, payload=p.payload)
        return {"state": state.to_dict()}

    def state(self, p: m.RunIdParams) -> Dict[str, Any]:
        return {"state": self.hub.runtime.get_state(p.run_id).to_dict()}

    def ledger(self, p: m.LedgerParams) -> Dict[str, Any]:
        self.hub.runtime.get_state(p.run_id)  # a clear "run not found" instead of an empty page
        recs = self.hub.ledger_store.list_after(p.run_id, p.after, p.limit + 1)
        more = len(recs) > p.limit
        recs = recs[: p.limit]
        return {"records": recs, "next": recs[-1]["seq"] if more and recs else None}

    def verify(self, p: m.RunIdParams) -> Dict[str, Any]:
        self.hub.runtime.get_state(p.run_id)  # "run not found" rather than an empty, valid chain
        report = verify_ledger_chain(self.hub.ledger_store.list(p.run_id))
        problems = [_chain_problem(e) for e in report["errors"][:20]]
        bad = report["first_bad_index"]
        return {
            "ok": report["ok"],
            "count": report["count"],
            "first_bad_seq": None if bad is None else bad + 1,
            "problems": problems,
            "head_hash": report["head_hash"],
        }

    def runs(self, p: m.RunsParams) -> Dict[str, Any]:
        if p.order == "oldest" and p.since is None and p.parent_run_id is None:  # the store pages by itself
            got = self.hub.run_store.list_run_summaries(
                status=p.status, workflow_id=p.workflow_id, limit=p.limit + 1, after=p.cursor
            )
            more = len(got) > p.limit
            got = got[: p.limit]
            return {"runs": [s.to_dict() for s in got], "next": got[-1].run_id if more and got else None}
        # Newest first, or since a time: every matching summary, in creation order, then the page.
        found = self.hub.run_store.list_run_summaries(status=p.status, workflow_id=p.workflow_id, limit=None)
        if p.parent_run_id is not None:
            found = [s for s in found if s.parent_run_id == p.parent_run_id]
        if p.since is not None:
            since = _epoch(p.since, "since")
            found = [s for s in found if _epoch(s.updated_at, "updated_at", 0.0) >= since]
        if p.order == "newest":
            found.reverse()
        if p.cursor is not None:
            at = next((i for i, s in enumerate(found) if s.run_id == p.cursor), None)
            found = found[at + 1 :] if at is not None else found
        page = found[: p.limit]
        rest = len(found) - len(page)
        return {
            "runs": [s.to_dict() for s in page],
            "next": page[-1].run_id if rest and page else None,
            "remaining": rest,
        }

    def cancel(self, p: m.CancelParams) -> Dict[str, Any]:
        return {"state": self.hub.cancel(p.run_id, reason=p.reason).to_dict()}

    def emit_event(self, p: m.EmitEventParams) -> Dict[str, Any]:
        scope = p.scope or ("run" if p.run_id else None)
        resumed = self.hub.runtime.emit_event(
            name=p.name, payload=p.payload, scope=scope, session_id=p.session_id, run_id=p.run_id
        )
        return {"resumed": resumed}

    async def subscribe(self, p: m.SubscribeParams) -> Dict[str, Any]:
        if len(self.subscriptions) >= self.hub.max_subscriptions:
            # Each subscription costs every event a callback: one client must not slow the rest.
            raise TooManySubscriptionsError(
                f"this connection already holds {len(self.subscriptions)} subscriptions (at most "
                f"{self.hub.max_subscriptions}); unsubscribe one, or subscribe once to every run",
                limit=self.hub.max_subscriptions,
            )
        queue: list = []
        ready = False

        def send(event: Dict[str, Any]) -> None:
            self.send({"jsonrpc": "2.0", "method": "runtime/event", "params": {"subscription_id": sub_id, **event}})

        def deliver(event: Dict[str, Any]) -> None:
            # Called under the hub's lock from any thread: only schedule, in order.
            self.loop.call_soon_threadsafe(lambda: send(event) if ready else queue.append(event))

        sub_id, cursor, backlog = self.hub.events.subscribe(p.run_id, p.after, deliver)
        self.subscriptions.add(sub_id)

        def flush(_: Any) -> None:
            # After the response has been written: the backlog, then whatever arrived meanwhile.
            nonlocal ready
            for e in backlog + queue:
                send(e)
            queue.clear()
            ready = True

        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(flush)
        return {"subscription_id": sub_id, "cursor": cursor}

    async def unsubscribe(self, p: m.UnsubscribeParams) -> None:
        if p.subscription_id not in self.subscriptions or not self.hub.events.unsubscribe(p.subscription_id):
            raise SubscriptionNotFoundError(
                f"no subscription {p.subscription_id!r} on this connection", subscription_id=p.subscription_id
            )
        self.subscriptions.discard(p.subscription_id)
        return None

    def migrate(self, p: m.MigrateParams) -> Dict[str, Any]:
        return {"state": self.hub.runtime.migrate_run(p.run_id, to_node=p.to_node).to_dict()}

    def workflows(self, p: m.Empty) -> Dict[str, Any]:
        hub = self.hub
        stranded: Dict[str, int] = {}
        for r in hub.find_stranded([wf.workflow_id for wf in hub.registry]):
            stranded[r["workflow_id"]] = stranded.get(r["workflow_id"], 0) + 1
        return {
            "workflows": [
                {
                    "workflow_id": wf.workflow_id,
                    "entry_node": wf.entry_node,
                    "nodes": list(wf.nodes),
                    "source": wf.source,
                    "version": wf.version,
                    "load_error": hub.catalog.file_error(wf.source),
                    "stranded": stranded.get(wf.workflow_id, 0),
                }
                for wf in sorted(hub.registry, key=lambda wf: wf.workflow_id)
            ],
            "load_errors": hub.load_errors,
        }

    async def reload(self, p: m.Empty) -> Dict[str, Any]:
        return await asyncio.to_thread(self.hub.reload_workflows)

    def status(self, p: m.Empty) -> Dict[str, Any]:
        out = self.hub.status()
        out["protocol_version"] = PROTOCOL_VERSION
        return out

    async def web_link(self, p: m.Empty) -> Dict[str, Any]:
        if self.hub.web is None:
            raise WebNotServedError("this daemon serves no web page: start it with `abstractruntime serve --http PORT`")
        return self.hub.web.mint()

    async def shutdown_daemon(self, p: m.Empty) -> None:
        self.loop.call_soon(self.hub.request_stop)
        return None


def _epoch(text: str, what: str, default: Optional[float] = None) -> float:
    try:
        return iso_to_epoch(text)
    except (TypeError, ValueError):
        if default is not None:
            return default
        raise invalid_params(f"runtime/runs: invalid params: {what}: {text!r} is not an ISO-8601 time") from None


def _chain_problem(e: Dict[str, Any]) -> str:
    seq = e["index"] + 1
    kind = e["type"]
    if kind == "record_hash_mismatch":
        return f"record {seq}: its hash does not match its content (changed after it was written)"
    if kind == "prev_hash_mismatch":
        return f"record {seq}: it does not link to record {seq - 1} (a record was removed, added or reordered)"
    if kind == "seq_mismatch":
        return f"record {seq}: numbered {e.get('actual')} (a record is missing or out of order)"
    return f"record {seq}: it has no hash"


def _reraise(e: BaseException) -> Any:
    raise e


def _reply(msg_id: Any, result: Any) -> bytes:
    return wire({"jsonrpc": "2.0", "id": msg_id, "result": result})


def _validate(model: Any, name: str, raw: Any) -> Any:
    if raw is None or raw == []:
        raw = {}  # no params; some JSON encoders (Lua's) can't tell an empty object from []
    if not isinstance(raw, dict):
        raise invalid_params(f"{name}: params must be an object", {"got": type(raw).__name__})
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        detail = json.loads(e.json(include_url=False, include_context=False, include_input=False))
        first = detail[0] if detail else {}
        where = ".".join(str(x) for x in first.get("loc", ())) or "params"
        raise invalid_params(
            f"{name}: invalid params: {where}: {first.get('msg', 'invalid')}",
            {"name": "invalid_params", "errors": detail},
        ) from None


_loading_lock = threading.Lock()
_loading: Optional[concurrent.futures.Future[None]] = None


def _load_editor_support() -> concurrent.futures.Future[None]:
    """Import pygls and lsprotocol (through `lsp.py`) on a thread, once per process: on the
    event loop it would hold up every client for as long as the import takes."""
    global _loading
    with _loading_lock:
        if _loading is None:
            fut: concurrent.futures.Future[None] = concurrent.futures.Future()

            def load() -> None:
                try:
                    importlib.import_module(f"{__package__}.lsp")
                except BaseException as e:  # handed to whoever waits; lsp() will raise it again
                    fut.set_exception(e)
                else:
                    fut.set_result(None)

            threading.Thread(target=load, name="lsp-import", daemon=True).start()
            _loading = fut
        return _loading
