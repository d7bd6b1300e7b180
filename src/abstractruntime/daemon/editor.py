"""Editor features over standard LSP, on a connection's pygls server.

What an editor gets, each only when the client's capabilities (or its opt-in) allow it:

- *Prompts*: with `initializationOptions.answerPrompts: true`, every new `ASK_USER` wait (and
  every event wait that carries a prompt) arrives as `window/showMessageRequest` with the
  choices as actions; the chosen action resumes the run. The first answer from any client
  wins: when the run moves on, the other clients' prompts are withdrawn (`$/cancelRequest`
  and `abstractruntime/promptWithdrawn`) and a late answer gets a "run not waiting" message.
- *Code lenses* in workflow files: above each node function the number of runs waiting there
  (an "answer" lens when there are some), above each `WorkflowSpec` a "start" lens; refreshed
  with `workspace/codeLens/refresh` when waiting runs change.
- *Commands* (`workspace/executeCommand`): see `EDITOR_COMMANDS`.
- *Diagnostics*: a workflow module that fails to load shows its error at its line; runs
  stranded by a reload show a warning at their `WorkflowSpec`.
- *Progress*: an effect that runs longer than `PROGRESS_AFTER_S` (an LLM call, a tool) shows as
  work-done progress until its result is recorded.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from ..core.errors import AbstractRuntimeError, RunNotWaitingError, WaitKeyMismatchError
from ..core.models import RunStatus
from ..protocol.errors import CursorExpiredError, invalid_params, to_wire

if TYPE_CHECKING:
    from .peer import Peer

log = logging.getLogger("abstractruntime.daemon")

PROGRESS_AFTER_S = 0.3
# Workflow files larger than this get no lenses (a module is a few KB; a client could name a huge file).
MAX_SOURCE_BYTES = 1 << 20
LENS_REFRESH_DELAY_S = 0.05
SOURCE = "abstractruntime"


class EditorFeatures:
    """Given the connection (`peer`: send, close, the init params, the hub) and the
    connection's pygls server; owns its subscription to the hub's events."""

    def __init__(self, peer: Peer, server: Any) -> None:
        self.peer = peer
        self.hub = peer.hub
        self.server = server
        self.loop = peer.loop
        params = peer.init_params
        opts = params.get("initializationOptions") or {}
        caps = params.get("capabilities") or {}
        self.answer_prompts = bool(isinstance(opts, dict) and opts.get("answerPrompts"))
        self.lens_refresh = bool(_get(caps, "workspace", "codeLens", "refreshSupport"))
        self.progress = bool(_get(caps, "window", "workDoneProgress"))
        self._prompts: Dict[str, Tuple[Optional[str], str]] = {}  # run id -> (wait key, request id)
        self._prompt_ids = 0
        self._awaiting: Dict[str, Tuple[str, Optional[str]]] = {}  # prompt request id -> (run, wait key)
        self._refresh_pending = False
        self._diag_uris: Set[str] = set()
        self._running: Dict[str, Any] = {}  # idempotency key -> progress token or pending timer
        self._register()
        try:
            self._sub_id, _, backlog = self.hub.events.subscribe(None, peer.events_from, self._deliver)
        except CursorExpiredError:  # a flood evicted them while pygls loaded: follow from now
            self._sub_id, _, backlog = self.hub.events.subscribe(None, None, self._deliver)
        for event in backlog:
            self._on_event(event)
        self.publish_diagnostics()

    def close(self) -> None:
        """The connection closed: stop following the hub's events."""
        self.hub.events.unsubscribe(self._sub_id)

    # -- hub events (delivered under the hub's lock, from any thread) -----------------------------

    def _deliver(self, event: Dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: Dict[str, Any]) -> None:
        if self.peer.closed:
            return
        if event["kind"] == "state":
            self._on_state(event["run_id"], event["state"])
        elif self.progress:
            self._on_record(event["record"])

    def _on_state(self, run_id: str, s: Dict[str, Any]) -> None:
        waiting = s["status"] == RunStatus.WAITING.value
        key = s.get("wait_key") if waiting else None
        self._schedule_lens_refresh()  # a run started, moved or ended: counts may have changed
        pending = self._prompts.get(run_id)
        if pending is not None and pending[0] != key:
            self._withdraw(run_id)
        asks = not s.get("paused") and (
            s.get("wait_reason") == "user" or (s.get("wait_reason") == "event" and s.get("prompt"))
        )
        if waiting and asks and self.answer_prompts and run_id not in self._prompts:
            self._prompt(run_id, s)

    # -- prompts ------------------------------------------------------------------------------------

    def _prompt(self, run_id: str, s: Dict[str, Any]) -> None:
        self._prompt_ids += 1
        msg_id = f"abstractruntime-prompt-{self._prompt_ids}"
        key = s.get("wait_key")
        choices = list(s.get("choices") or [])
        params = {
            "type": lsp.MessageType.Info.value,
            "message": f"{s['workflow_id']}: {s.get('prompt') or 'waiting for an answer'}",
            "actions": [{"title": c} for c in choices],
            # Not LSP: what a client of ours needs to answer in its own UI (free text included).
            "abstractruntime": {
                "run_id": run_id,
                "workflow_id": s["workflow_id"],
                "node_id": s.get("current_node"),
                "wait_key": key,
                "prompt": s.get("prompt"),
                "choices": choices,
                "allow_free_text": s.get("allow_free_text", True),
            },
        }
        self._prompts[run_id] = (key, msg_id)
        # Sent as it is, not through pygls: its typed params would drop the extra field.
        self._awaiting[msg_id] = (run_id, key)
        self.peer.send({"jsonrpc": "2.0", "id": msg_id, "method": lsp.WINDOW_SHOW_MESSAGE_REQUEST, "params": params})

    def take_response(self, msg: Dict[str, Any]) -> bool:
        """The client's answer to one of our prompts (True), or someone else's response."""
        pending = self._awaiting.pop(msg.get("id"), None)  # type: ignore[arg-type]
        if pending is None:
            return False
        action = msg.get("result")
        title = action.get("title") if isinstance(action, dict) else None
        if title:  # else dismissed, refused or cancelled: the client answers another way, or not
            asyncio.ensure_future(self._resume_from_prompt(pending[0], pending[1], str(title)))
        return True

    async def _resume_from_prompt(self, run_id: str, key: Optional[str], title: str) -> None:
        try:
            await self.hub.call(
                self.hub.runtime.resume, workflow=None, run_id=run_id, wait_key=key, payload={"text": title}
            )
        except (RunNotWaitingError, WaitKeyMismatchError):
            self._show(lsp.MessageType.Warning, f"run {run_id} was already answered (run not waiting)")
        except AbstractRuntimeError as e:
            self._show(lsp.MessageType.Error, f"run {run_id}: {e}")

    def _withdraw(self, run_id: str) -> None:
        key, msg_id = self._prompts.pop(run_id)
        self.peer.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": msg_id}})
        self.peer.send(
            {
                "jsonrpc": "2.0",
                "method": "abstractruntime/promptWithdrawn",
                "params": {"run_id": run_id, "wait_key": key},
            }
        )

    def _show(self, kind: lsp.MessageType, message: str) -> None:
        self.server.window_show_message(lsp.ShowMessageParams(type=kind, message=message))

    # -- code lenses --------------------------------------------------------------------------------

    def _schedule_lens_refresh(self) -> None:
        if not self.lens_refresh or self._refresh_pending:
            return
        self._refresh_pending = True

        def refresh() -> None:
            self._refresh_pending = False
            if not self.peer.closed:
                self.server.protocol.send_request(lsp.WORKSPACE_CODE_LENS_REFRESH, None)

        self.loop.call_later(LENS_REFRESH_DELAY_S, refresh)

    async def code_lenses(self, params: lsp.CodeLensParams) -> List[lsp.CodeLens]:
        uri = params.text_document.uri
        doc = self.server.workspace.text_documents.get(unquote(uri))
        if doc is not None:
            source = doc.source
        else:  # not open in the client: a workflow file on disk, read off the event loop
            source = await asyncio.to_thread(read_workflow_source, uri, self.hub.catalog.dirs)
        if len(source) > MAX_SOURCE_BYTES:
            return []
        found = find_workflows(source)
        lenses: List[lsp.CodeLens] = []
        for wf in found:
            counts: Dict[str, int] = {}
            failed: Dict[str, int] = {}
            if wf.workflow_id in self.hub.registry:
                for status, into in ((RunStatus.WAITING, counts), (RunStatus.FAILED, failed)):
                    for s in self.hub.run_store.list_run_summaries(
                        status=status, workflow_id=wf.workflow_id, limit=None
                    ):
                        into[s.current_node] = into.get(s.current_node, 0) + 1
            lenses.append(_lens(wf.line, f"start {wf.workflow_id}", "abstractruntime.start", [wf.workflow_id]))
            for node_id, line in wf.node_lines.items():
                n = counts.get(node_id, 0)
                title = f"{n} waiting - answer" if n else "0 waiting"
                args = [{"workflow_id": wf.workflow_id, "node_id": node_id}]
                lenses.append(_lens(line, title, "abstractruntime.answer", args))
                if failed.get(node_id):
                    # After a fix is saved (and hot-reloaded), one click runs the newest one again.
                    title = f"{failed[node_id]} failed - retry"
                    lenses.append(_lens(line, title, "abstractruntime.retry", args))
        return lenses

    # -- commands -----------------------------------------------------------------------------------

    def _register(self) -> None:
        ls = self.server

        @ls.feature(lsp.TEXT_DOCUMENT_CODE_LENS)
        async def code_lens(params: lsp.CodeLensParams) -> List[lsp.CodeLens]:
            return await self.code_lenses(params)

        @ls.command("abstractruntime.start")
        async def start(*args) -> Any:  # no annotation: pygls calls issubclass() on it (fails on 3.10)
            a = _first_dict(args, "workflow_id")
            try:
                wf = self.hub.runtime.workflow(str(a.get("workflow_id")))
            except AbstractRuntimeError as e:  # workflow_not_found (1002), as runtime/start answers
                raise _wire(e) from None
            # Stored before its first node runs, as runtime/start does (visible, and recovered
            # after a crash), then ticked.
            run_id = await self._call(self.hub.runtime.start, workflow=wf, vars=a.get("vars") or {})
            st = await self._call(self.hub.go_on, run_id, wait=True)
            return {"run_id": st.run_id, "status": st.status.value, "state": st.to_dict()}

        @ls.command("abstractruntime.retry")
        async def retry(*args) -> Any:  # no annotation: pygls calls issubclass() on it (fails on 3.10)
            a = _first_dict(args, "run_id")
            run_id = a.get("run_id") or self._newest(RunStatus.FAILED, a.get("workflow_id"), a.get("node_id"))
            if run_id is None:
                raise _wire(invalid_params(f"no run failed at {a.get('workflow_id')}.{a.get('node_id')}"))
            st = await self._call(self.hub.runtime.retry_run, str(run_id))
            return {"run_id": st.run_id, "status": st.status.value, "state": st.to_dict()}

        @ls.command("abstractruntime.fork")
        async def fork(*args) -> Any:  # no annotation: pygls calls issubclass() on it (fails on 3.10)
            a = _first_dict(args, "run_id", "seq", "vars")
            seq, vars_ = a.get("seq"), a.get("vars")
            if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
                raise _wire(invalid_params(f"abstractruntime.fork: seq must be a record number, not {seq!r}"))
            if vars_ is not None and not isinstance(vars_, dict):
                raise _wire(invalid_params("abstractruntime.fork: vars must be an object"))
            new = await self._call(self.hub.runtime.fork_run, str(a.get("run_id")), seq=seq, vars=vars_)
            st = new if new.status.is_terminal else await self._call(self.hub.go_on, new.run_id, wait=True)
            return {
                "run_id": st.run_id,
                "forked_from": a.get("run_id"),
                "status": st.status.value,
                "state": st.to_dict(),
            }

        @ls.command("abstractruntime.answer")
        async def answer(*args) -> Any:  # no annotation: pygls calls issubclass() on it (fails on 3.10)
            a = _first_dict(args, "run_id", "text")
            run_id = a.get("run_id") or self._oldest_waiting(a.get("workflow_id"), a.get("node_id"))
            if run_id is None:
                raise _wire(invalid_params(f"no run waits at {a.get('workflow_id')}.{a.get('node_id')}"))
            if a.get("text") is None:
                st = await self._call(self.hub.runtime.get_state, run_id)
                w = st.waiting
                if st.status != RunStatus.WAITING or w is None:
                    raise _wire(RunNotWaitingError(f"run {run_id} is not waiting (status {st.status.value})"))
                if not w.choices:  # free text: the client asks, then calls again with the text
                    return {"run_id": run_id, "prompt": w.prompt, "choices": [], "needs_text": True}
                action = await self.server.window_show_message_request_async(
                    lsp.ShowMessageRequestParams(
                        type=lsp.MessageType.Info,
                        message=f"{st.workflow_id}: {w.prompt or 'waiting for an answer'}",
                        actions=[lsp.MessageActionItem(title=c) for c in w.choices],
                    )
                )
                if action is None:
                    return {"run_id": run_id, "answered": False}
                a["text"], a["wait_key"] = action.title, w.wait_key
            st = await self._call(
                self.hub.runtime.resume,
                workflow=None,
                run_id=run_id,
                wait_key=a.get("wait_key"),
                payload={"text": str(a["text"])},
            )
            return {"run_id": run_id, "answered": True, "status": st.status.value, "state": st.to_dict()}

        @ls.command("abstractruntime.cancel")
        async def cancel(*args) -> Any:  # no annotation: pygls calls issubclass() on it (fails on 3.10)
            a = _first_dict(args, "run_id", "reason")
            st = await self._call(self.hub.cancel, str(a.get("run_id")), reason=a.get("reason"))
            return {"run_id": st.run_id, "status": st.status.value, "state": st.to_dict()}

        @ls.command("abstractruntime.showRun")
        async def show_run(*args) -> Any:  # no annotation: pygls calls issubclass() on it (fails on 3.10)
            a = _first_dict(args, "run_id")
            st = await self._call(self.hub.runtime.get_state, str(a.get("run_id")))
            return {"run_id": st.run_id, "status": st.status.value, "state": st.to_dict()}

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await self.hub.call(fn, *args, **kw)
        except AbstractRuntimeError as e:
            raise _wire(e) from None

    def _newest(self, status: RunStatus, workflow_id: Any, node_id: Any) -> Optional[str]:
        if not workflow_id:
            return None
        found = self.hub.run_store.list_run_summaries(status=status, workflow_id=workflow_id, limit=None)
        for s in reversed(found):
            if node_id is None or s.current_node == node_id:
                return s.run_id
        return None

    def _oldest_waiting(self, workflow_id: Any, node_id: Any) -> Optional[str]:
        if not workflow_id:
            return None
        for s in self.hub.run_store.list_run_summaries(status=RunStatus.WAITING, workflow_id=workflow_id, limit=None):
            if node_id is None or s.current_node == node_id:
                return s.run_id
        return None

    # -- diagnostics --------------------------------------------------------------------------------

    def publish_diagnostics(self) -> None:
        by_uri: Dict[str, List[lsp.Diagnostic]] = {}
        seen: Set[Tuple[str, Any, str]] = set()
        for e in self.hub.load_errors:
            if not e["file"].endswith(".py"):
                continue
            # A broken helper is an error of every module that imports it: one diagnostic
            # at the helper's line is enough (the message names the first module).
            key = (e["file"], e.get("line"), e["message"].split(" (in ")[0])
            if key in seen:
                continue
            seen.add(key)
            line = max(0, (e.get("line") or 1) - 1)
            by_uri.setdefault(Path(e["file"]).as_uri(), []).append(
                _diag(line, e["message"], lsp.DiagnosticSeverity.Error)
            )
        stranded: Dict[str, List[Dict[str, Any]]] = {}
        for r in self.hub.find_stranded():
            stranded.setdefault(r["workflow_id"], []).append(r)
        for wid, runs in stranded.items():
            wf = self.hub.registry.get(wid)
            if wf is None or not wf.source:
                continue
            spec = next((f for f in find_workflows(_read_bounded(wf.source)) if f.workflow_id == wid), None)
            nodes = sorted({str(r["node_id"]) for r in runs})
            msg = (
                f"{len(runs)} waiting run(s) of {wid!r} are stranded: they resume at "
                f"{', '.join(repr(n) for n in nodes)}, which this version lacks. Restore the node, "
                "or migrate or cancel the runs."
            )
            by_uri.setdefault(Path(wf.source).as_uri(), []).append(
                _diag(spec.line if spec else 0, msg, lsp.DiagnosticSeverity.Warning)
            )
        for uri in self._diag_uris - set(by_uri):
            by_uri[uri] = []  # cleared
        for uri, diags in by_uri.items():
            self.server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=diags))
        self._diag_uris = {u for u, d in by_uri.items() if d}

    def workflows_changed(self, report: Dict[str, Any]) -> None:
        self.publish_diagnostics()
        self._schedule_lens_refresh()

    # -- progress -----------------------------------------------------------------------------------

    def _on_record(self, rec: Dict[str, Any]) -> None:
        key = rec.get("idempotency_key")
        if not key or not rec.get("effect"):
            return
        if rec["status"] == "started":
            title = f"{rec['node_id']}: {rec['effect'].get('type')}"
            self._running[key] = self.loop.call_later(PROGRESS_AFTER_S, self._begin_progress, key, title)
            return
        held = self._running.pop(key, None)
        if isinstance(held, asyncio.TimerHandle):
            held.cancel()  # done before it was worth showing
        elif held is not None:
            self.server.work_done_progress.end(held, lsp.WorkDoneProgressEnd(message=rec["status"]))

    def _begin_progress(self, key: str, title: str) -> None:
        token = f"abstractruntime-{key}"
        self._running[key] = token

        def created(_: Any) -> None:
            if self._running.get(key) == token:
                self.server.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title=title, cancellable=False))

        self.server.work_done_progress.create(token, created)


# -- finding workflows in a source file ---------------------------------------------------------------


class FoundWorkflow:
    def __init__(self, workflow_id: str, line: int, node_lines: Dict[str, int]) -> None:
        self.workflow_id, self.line, self.node_lines = workflow_id, line, node_lines


def find_workflows(source: str) -> List[FoundWorkflow]:
    """The `WorkflowSpec(...)` calls of a module with literal ids, and the 0-based line of each
    node's function (or of its entry in `nodes` when the function is defined elsewhere)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    defs = {n.name: n.lineno - 1 for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
        if name != "WorkflowSpec":
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        wid = kw.get("workflow_id")
        if not (isinstance(wid, ast.Constant) and isinstance(wid.value, str)):
            continue
        node_lines: Dict[str, int] = {}
        nodes = kw.get("nodes")
        if isinstance(nodes, ast.Dict):
            for k, v in zip(nodes.keys, nodes.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    target = defs.get(v.id) if isinstance(v, ast.Name) else None
                    node_lines[k.value] = target if target is not None else k.lineno - 1
        out.append(FoundWorkflow(wid.value, node.lineno - 1, node_lines))
    return out


# -- helpers ----------------------------------------------------------------------------------------


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _first_dict(args: Tuple[Any, ...], *names: str) -> Dict[str, Any]:
    """Command arguments: one object, or positional values in the order of `names`."""
    if args and isinstance(args[0], dict):
        return dict(args[0])
    return dict(zip(names, args, strict=False))  # fewer args than names: the rest are unset


def _wire(e: BaseException) -> JsonRpcException:
    """What pygls answers a command with: the error object `to_wire` makes, as every path does."""
    obj = to_wire(e)
    return JsonRpcException(message=obj["message"], code=obj["code"], data=obj.get("data"))


def _lens(line: int, title: str, command: str, args: List[Any]) -> lsp.CodeLens:
    rng = lsp.Range(start=lsp.Position(line=line, character=0), end=lsp.Position(line=line, character=0))
    return lsp.CodeLens(range=rng, command=lsp.Command(title=title, command=command, arguments=args))


def _diag(line: int, message: str, severity: lsp.DiagnosticSeverity) -> lsp.Diagnostic:
    rng = lsp.Range(start=lsp.Position(line=line, character=0), end=lsp.Position(line=line + 1, character=0))
    return lsp.Diagnostic(range=rng, message=message, severity=severity, source=SOURCE)


def read_workflow_source(uri: str, folders: List[str]) -> str:
    """The text of a `file://` URI if it names a regular file of at most MAX_SOURCE_BYTES in one
    of the workflow folders, else "". Never blocks on a FIFO or a device, never follows a link
    out of the folders, never reads without bound (a client may name any path)."""
    p = urlparse(uri)
    if p.scheme != "file":
        return ""
    path = os.path.realpath(unquote(p.path))
    roots = [os.path.realpath(d) for d in folders]
    if not any(os.path.dirname(path) == r or path.startswith(r + os.sep) for r in roots):
        return ""
    return _read_bounded(path)


def _read_bounded(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SOURCE_BYTES:
            return ""
        data = os.read(fd, MAX_SOURCE_BYTES + 1)
        return data.decode() if len(data) <= MAX_SOURCE_BYTES else ""
    except (OSError, UnicodeDecodeError):
        return ""
    finally:
        os.close(fd)
