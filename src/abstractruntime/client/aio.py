"""The async Python client.

    async with AsyncClient.discover() as c:          # the project's running daemon
        started = await c.start("approval", vars={"amount": 120})
        state = await c.resume(started.run_id, {"text": "approve"})
        async for event in c.subscribe(after=0):
            ...

Connect by socket (`AsyncClient.unix(path)`), TCP (`AsyncClient.tcp(host, port, token)`),
spawning a private daemon on stdio (`AsyncClient.spawn(argv)`), or `discover(data_dir)`,
which finds the daemon the way the CLI does. Results are the protocol's pydantic models.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional

from ..project import CONFIG_NAME, DATA_NAME
from ..project import load as load_project
from ..protocol import discovery as paths
from ..protocol import models as m
from .connection import Connection, ConnectionLost, default_spawn_argv, env_with_package


class DaemonNotRunning(ConnectionError):
    """Nothing answers where the project's daemon should listen. The message names the project
    root, the address tried and the command that starts a daemon there."""


@dataclass
class Target:
    kind: str  # unix | tcp | spawn
    path: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    token: Optional[str] = None
    argv: List[str] = field(default_factory=list)
    env: Optional[Dict[str, str]] = None
    cwd: Optional[str] = None
    # Where the target was found (discovery): named when nothing answers there.
    project_root: Optional[str] = None
    found_project: bool = True
    # Found by discovery, not named by the user: its folder must be this user's.
    discovered: bool = False

    async def open(self) -> Connection:
        try:
            if self.kind == "unix":
                assert self.path
                if self.discovered:
                    paths.check_socket_folder(self.path)
                return await Connection.unix(self.path)
            if self.kind == "tcp":
                assert self.host and self.port
                return await Connection.tcp(self.host, self.port)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonNotRunning(self.not_running_message(e)) from None
        return await Connection.spawn(self.argv, env=self.env, cwd=self.cwd)

    def not_running_message(self, cause: Optional[BaseException] = None) -> str:
        where = f"unix socket {self.path}" if self.kind == "unix" else f"tcp {self.host}:{self.port}"
        why = f" ({cause.strerror or cause})" if isinstance(cause, OSError) else ""
        if self.project_root is None:
            return f"no daemon answers at {where}{why}"
        if not self.found_project:
            return (
                f"no abstractruntime project in {self.project_root} or any folder above it (no {CONFIG_NAME}, "
                f"[tool.abstractruntime] in pyproject.toml, or {DATA_NAME}/ folder), and no daemon answers at "
                f"{where}{why}; create one with `abstractruntime init`, or serve this folder with "
                "`abstractruntime serve`"
            )
        return (
            f"no daemon is running for the project at {self.project_root}: nothing answers at {where}{why}; "
            f"start it with `abstractruntime serve` in {self.project_root} (or `make serve`)"
        )


def discover_target(
    data_dir: Optional[str] = None, *, start: Optional[str] = None, config: Optional[str] = None
) -> Target:
    """The project's daemon, found like git finds a repository: from `start` (default: the
    working folder) up to the project root, then its data folder's discovery file (else the
    default socket of that data folder). `data_dir` names the data folder directly."""
    root, found = None, True
    if data_dir is None:
        proj = load_project(start=start, config=config)
        data = proj.data_dir
        root = proj.root
        found = proj.config_file is not None or os.path.isdir(data)
    else:
        data = os.path.abspath(data_dir)
        root = os.path.dirname(data)
    info = {}
    if os.path.isdir(data):
        # What the data folder says is trusted only if no one else can have written it.
        paths.check_private(data, "the data folder", fix="pass another --data folder")
        info = paths.read_discovery(data) or {}
    if info.get("tcp"):
        host, _, port = info["tcp"].rpartition(":")
        token = None
        if os.path.exists(paths.token_file(data)):
            paths.check_private(paths.token_file(data), "the token file", fix="remove it; the daemon writes a new one")
            with open(paths.token_file(data)) as f:
                token = f.read().strip()
        return Target("tcp", host=host, port=int(port), token=token, project_root=root, found_project=found)
    return Target(
        "unix",
        path=info.get("socket") or paths.default_socket(data),
        project_root=root,
        found_project=found,
        discovered=True,
    )


class AsyncClient:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.conn: Optional[Connection] = None
        self.server_info: Dict[str, Any] = {}
        self._queues: Dict[str, asyncio.Queue] = {}
        self._changes: asyncio.Queue = asyncio.Queue(maxsize=100)  # the newest workflows/changed

    # -- constructors -------------------------------------------------------------------------------

    @classmethod
    def unix(cls, path: str) -> AsyncClient:
        return cls(Target("unix", path=path))

    @classmethod
    def tcp(cls, host: str, port: int, token: Optional[str] = None) -> AsyncClient:
        return cls(Target("tcp", host=host, port=port, token=token))

    @classmethod
    def spawn(
        cls,
        argv: Optional[List[str]] = None,
        *,
        data_dir: Optional[str] = None,
        workflows: Optional[List[str]] = None,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
    ) -> AsyncClient:
        return cls(
            Target(
                "spawn", argv=argv or default_spawn_argv(data_dir, workflows), env=env or env_with_package(), cwd=cwd
            )
        )

    @classmethod
    def discover(
        cls, data_dir: Optional[str] = None, *, start: Optional[str] = None, config: Optional[str] = None
    ) -> AsyncClient:
        """The daemon of the project around `start` (default: the working folder); see
        `discover_target`. Connecting raises `DaemonNotRunning` when none answers."""
        return cls(discover_target(data_dir, start=start, config=config))

    # -- lifecycle ----------------------------------------------------------------------------------

    async def connect(self) -> AsyncClient:
        if self.conn is not None and not self.conn.closed.is_set():
            return self  # already connected (e.g. `with` on a connected client)
        self.conn = await self.target.open()
        self.conn.on_notification("runtime/event", self._on_event)
        self.conn.on_notification("workflows/changed", self._on_workflows_changed)
        try:
            init = await self.conn.request(
                "initialize",
                {
                    "processId": os.getpid(),
                    "rootUri": None,
                    "capabilities": {},
                    "clientInfo": {"name": "abstractruntime-python"},
                    "initializationOptions": {"token": self.target.token} if self.target.token else None,
                },
            )
        except BaseException:
            await self.conn.close()  # a refused handshake leaves nothing open behind
            raise
        self.server_info = init
        self.conn.notify("initialized", {})
        return self

    async def close(self) -> None:
        if self.conn is not None:
            if not self.conn.closed.is_set():
                try:
                    await self.conn.request("shutdown", None, timeout=5)
                    self.conn.notify("exit", None)
                except (ConnectionLost, ConnectionError, asyncio.TimeoutError):
                    pass
            await self.conn.close()

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def call(
        self, method: str, params: Optional[Dict[str, Any]] = None, *, timeout: Optional[float] = None
    ) -> Any:
        if self.conn is None:
            raise ConnectionLost("not connected: call connect() first")
        return await self.conn.request(method, params or {}, timeout=timeout)

    # -- methods -------------------------------------------------------------------------------------

    async def start(
        self,
        workflow_id: str,
        vars: Optional[Dict[str, Any]] = None,
        *,
        session_id: Optional[str] = None,
        actor_id: Optional[str] = None,
        wait: bool = True,
    ) -> m.StartResult:
        """Start a run; `wait=False` returns as soon as it is stored (status running)."""
        p = _drop_none({"workflow_id": workflow_id, "vars": vars or {}, "session_id": session_id, "actor_id": actor_id})
        if not wait:
            p["wait"] = False
        return m.StartResult.model_validate(await self.call("runtime/start", p))

    async def retry(self, run_id: str, *, wait: bool = True) -> m.RunStateModel:
        """Run a failed run again from the node that failed, under the code loaded now."""
        p: Dict[str, Any] = {"run_id": run_id} if wait else {"run_id": run_id, "wait": False}
        return m.StateResult.model_validate(await self.call("runtime/retry", p)).state

    async def fork(
        self, run_id: str, *, seq: Optional[int] = None, vars: Optional[Dict[str, Any]] = None, wait: bool = True
    ) -> m.StartResult:
        """A new run from run `run_id`'s state after ledger record `seq` (default: its last)."""
        p = _drop_none({"run_id": run_id, "seq": seq, "vars": vars})
        if not wait:
            p["wait"] = False
        return m.StartResult.model_validate(await self.call("runtime/fork", p))

    async def resume(self, run_id: str, payload: Dict[str, Any], *, wait_key: Optional[str] = None) -> m.RunStateModel:
        p = _drop_none({"run_id": run_id, "payload": payload, "wait_key": wait_key})
        return m.StateResult.model_validate(await self.call("runtime/resume", p)).state

    async def state(self, run_id: str) -> m.RunStateModel:
        return m.StateResult.model_validate(await self.call("runtime/state", {"run_id": run_id})).state

    async def ledger(self, run_id: str, *, after: int = 0, limit: int = 100) -> m.LedgerResult:
        return m.LedgerResult.model_validate(
            await self.call("runtime/ledger", {"run_id": run_id, "after": after, "limit": limit})
        )

    async def verify(self, run_id: str) -> m.VerifyResult:
        """Check the run's whole ledger against its hash chain (in the daemon)."""
        return m.VerifyResult.model_validate(await self.call("runtime/verify", {"run_id": run_id}))

    async def runs(
        self,
        *,
        status: Optional[str] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
        cursor: Optional[str] = None,
        order: Optional[str] = None,
        since: Optional[str] = None,
        parent_run_id: Optional[str] = None,
    ) -> m.RunsResult:
        """A page of runs: `order` "oldest" (default) or "newest" first; `since` an ISO time;
        `parent_run_id` for a run's children."""
        p = _drop_none(
            {
                "status": status,
                "workflow_id": workflow_id,
                "limit": limit,
                "cursor": cursor,
                "order": order,
                "since": since,
                "parent_run_id": parent_run_id,
            }
        )
        return m.RunsResult.model_validate(await self.call("runtime/runs", p))

    async def cancel(self, run_id: str, reason: Optional[str] = None) -> m.RunStateModel:
        p = _drop_none({"run_id": run_id, "reason": reason})
        return m.StateResult.model_validate(await self.call("runtime/cancel", p)).state

    async def emit_event(
        self,
        name: str,
        payload: Any = None,
        *,
        scope: Optional[str] = None,
        session_id: Optional[str] = None,
        run_id: Optional[str] = None,
    ) -> List[str]:
        """Resume the runs waiting on event `name`; `run_id` for a run-scoped event."""
        p = _drop_none({"name": name, "payload": payload, "scope": scope, "session_id": session_id, "run_id": run_id})
        return m.EmitEventResult.model_validate(await self.call("runtime/emitEvent", p)).resumed

    async def migrate(self, run_id: str, to_node: Optional[str] = None) -> m.RunStateModel:
        p = _drop_none({"run_id": run_id, "to_node": to_node})
        return m.StateResult.model_validate(await self.call("runtime/migrate", p)).state

    async def workflows(self) -> List[m.WorkflowInfo]:
        return (await self.workflows_list()).workflows

    async def workflows_list(self) -> m.WorkflowsListResult:
        """The workflows with their versions, and the files that fail to load."""
        return m.WorkflowsListResult.model_validate(await self.call("workflows/list"))

    async def reload_workflows(self) -> m.WorkflowsChanged:
        return m.WorkflowsChanged.model_validate(await self.call("workflows/reload"))

    async def next_workflow_change(self, timeout: Optional[float] = None) -> m.WorkflowsChanged:
        """The next `workflows/changed` notification (they queue up from connect on)."""
        return await asyncio.wait_for(self._changes.get(), timeout)

    def _on_workflows_changed(self, params: Any) -> None:
        if self._changes.full():
            self._changes.get_nowait()  # nobody reads them: keep the newest
        self._changes.put_nowait(m.WorkflowsChanged.model_validate(params))

    async def status(self) -> m.DaemonStatusResult:
        return m.DaemonStatusResult.model_validate(await self.call("daemon/status"))

    async def web_link(self) -> m.WebLinkResult:
        """A one-time URL that signs a browser in to the daemon's web page (`serve --http`)."""
        return m.WebLinkResult.model_validate(await self.call("daemon/webLink"))

    async def shutdown_daemon(self) -> None:
        await self.call("daemon/shutdown")

    # -- subscriptions ---------------------------------------------------------------------------------

    def _on_event(self, params: Any) -> None:
        sub = params.get("subscription_id") if isinstance(params, dict) else None
        if sub is not None:
            self._queues.setdefault(sub, asyncio.Queue()).put_nowait(params)

    async def _subscribe_once(self, run_id: Optional[str], after: Optional[int]) -> str:
        res = await self.call("runtime/subscribe", _drop_none({"run_id": run_id, "after": after}))
        sub = m.SubscribeResult.model_validate(res).subscription_id
        self._queues.setdefault(sub, asyncio.Queue())
        return sub

    async def subscribe(
        self,
        run_id: Optional[str] = None,
        *,
        after: Optional[int] = None,
        reconnect: bool = True,
        reconnect_timeout: float = 30.0,
    ) -> AsyncIterator[m.EventNotification]:
        """Events for one run (or all), from the cursor after `after` on. If the connection
        drops and `reconnect` is set, it reconnects and resubscribes after the last cursor it
        delivered: nothing is lost and nothing comes twice."""
        last = after
        sub = await self._subscribe_once(run_id, last)
        while True:
            assert self.conn is not None
            queue = self._queues[sub]
            get = asyncio.ensure_future(queue.get())
            lost = asyncio.ensure_future(self.conn.closed.wait())
            try:
                done, _ = await asyncio.wait({get, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # The consumer may stop iterating at any await: leave no task behind.
                lost.cancel()
                if not get.done():
                    get.cancel()
            if get in done:
                event = m.EventNotification.model_validate(get.result())
                if last is not None and event.cursor <= last:
                    continue
                last = event.cursor
                yield event
                continue
            if not reconnect:
                return
            await self._reconnect(reconnect_timeout)
            sub = await self._subscribe_once(run_id, last)

    async def _reconnect(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.05
        while True:
            try:
                if self.conn is not None:
                    await self.conn.close()
                await self.connect()
                return
            except (OSError, ConnectionLost):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)


def _drop_none(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
