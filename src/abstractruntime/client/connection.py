"""A JSON-RPC connection with LSP framing over an asyncio stream (socket, TCP or a child's
stdio): requests matched to responses by id, notifications routed to handlers."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from ..core.errors import AbstractRuntimeError
from ..protocol.errors import from_wire
from ..protocol.framing import FrameError, encode_frame, read_frame


class ProtocolError(AbstractRuntimeError):
    """A JSON-RPC level error (parse error, invalid params, method not found, ...)."""

    CODE = -32603
    NAME = "protocol_error"

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message, **({"detail": data} if data is not None else {}))
        self.code = code
        self.raw_data = data


class ConnectionLost(ConnectionError):
    pass


def to_error(err: Dict[str, Any]) -> Exception:
    code, message, data = err.get("code"), err.get("message", ""), err.get("data")
    if isinstance(code, int) and code >= 1000:
        return from_wire(code, message, data)
    return ProtocolError(code if isinstance(code, int) else -32603, message, data)


class Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: Any, proc: Optional[asyncio.subprocess.Process] = None
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._proc = proc
        self._ids = itertools.count(1)
        self._pending: Dict[int, asyncio.Future] = {}
        self._handlers: Dict[str, Callable[[Any], None]] = {}
        self._request_handlers: Dict[str, Callable[[Any], Any]] = {}
        self._task: Optional[asyncio.Task] = None
        self.closed = asyncio.Event()

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    async def unix(cls, path: str) -> Connection:
        r, w = await asyncio.open_unix_connection(path, limit=1 << 24)
        return cls._started(r, w)

    @classmethod
    async def tcp(cls, host: str, port: int) -> Connection:
        r, w = await asyncio.open_connection(host, port, limit=1 << 24)
        return cls._started(r, w)

    @classmethod
    async def spawn(
        cls, argv: List[str], *, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None
    ) -> Connection:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=env,
            cwd=cwd,
            limit=1 << 24,
        )
        assert proc.stdout is not None and proc.stdin is not None
        return cls._started(proc.stdout, proc.stdin, proc)

    @classmethod
    def _started(cls, r: Any, w: Any, proc: Any = None) -> Connection:
        conn = cls(r, w, proc)
        conn._task = asyncio.ensure_future(conn._read_loop())
        return conn

    # -- traffic ------------------------------------------------------------------------------------

    def on_notification(self, method: str, handler: Callable[[Any], None]) -> None:
        self._handlers[method] = handler

    def on_request(self, method: str, handler: Callable[[Any], Any]) -> None:
        """Answer the daemon's requests of `method` with `handler(params)` (a value or an
        awaitable); requests without a handler are answered with null."""
        self._request_handlers[method] = handler

    def _answer(self, msg_id: Any, method: str, params: Any) -> None:
        handler = self._request_handlers.get(method)
        result = handler(params) if handler is not None else None
        if inspect.isawaitable(result):

            async def later(pending: Any) -> None:
                try:
                    value = await pending
                except Exception as e:  # the handler failed: the daemon gets an error, not silence
                    self._reply({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32603, "message": str(e)}})
                else:
                    self._reply({"jsonrpc": "2.0", "id": msg_id, "result": value})

            asyncio.ensure_future(later(result))
        else:
            self._reply({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def _reply(self, obj: Dict[str, Any]) -> None:
        if not self.closed.is_set():
            self._send(obj)

    def _send(self, obj: Dict[str, Any]) -> None:
        if self.closed.is_set():
            raise ConnectionLost("the connection to the daemon is closed")
        self._writer.write(encode_frame(json.dumps(obj, separators=(",", ":")).encode()))

    async def request(self, method: str, params: Any = None, *, timeout: Optional[float] = None) -> Any:
        msg_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            self._send(
                {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params if params is not None else {}}
            )
            await self._writer.drain()
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg_id, None)

    def notify(self, method: str, params: Any = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use this to send malformed frames)."""
        self._writer.write(data)
        await self._writer.drain()

    async def _read_loop(self) -> None:
        try:
            while True:
                body = await read_frame(self._reader)
                if body is None:
                    return
                assert isinstance(body, bytes)  # no size limit on the client's side
                self._dispatch(json.loads(body))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, FrameError):
            return
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost("the daemon closed the connection"))

    def _dispatch(self, msg: Dict[str, Any]) -> None:
        if "method" in msg:
            if "id" in msg:  # a request from the daemon (editor features)
                self._answer(msg["id"], msg["method"], msg.get("params"))
                return
            handler = self._handlers.get(msg["method"])
            if handler is not None:
                handler(msg.get("params"))
            return
        fut = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
        if fut is None or fut.done():
            return
        if "error" in msg and msg["error"] is not None:
            fut.set_exception(to_error(msg["error"]))
        else:
            fut.set_result(msg.get("result"))

    async def close(self) -> None:
        try:
            self._writer.close()
            await self._writer.wait_closed()
        except (OSError, RuntimeError):
            pass  # the daemon already closed its end
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()


def default_spawn_argv(data_dir: Optional[str] = None, workflows: Optional[List[str]] = None) -> List[str]:
    argv = [sys.executable, "-m", "abstractruntime", "serve", "--stdio"]
    if data_dir:
        argv += ["--data", data_dir]
    for w in workflows or []:
        argv += ["--workflows", w]
    return argv


def env_with_package() -> Dict[str, str]:
    """The current environment, with this package importable by a spawned daemon."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
