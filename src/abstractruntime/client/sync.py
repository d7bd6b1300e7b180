"""The blocking Python client: the async client driven from a private event-loop thread.

with Client.discover() as c:
    started = c.start("approval", {"amount": 120})
    for event in c.subscribe(started.run_id):
        print(event.kind, event.cursor)
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Awaitable, Iterator, Optional, TypeVar

from .aio import AsyncClient

T = TypeVar("T")
_END = object()


class Client:
    def __init__(self, inner: AsyncClient, *, timeout: Optional[float] = 120.0) -> None:
        self._inner = inner
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="abstractruntime-client", daemon=True)
        self._thread.start()

    @classmethod
    def unix(cls, path: str, **kw: Any) -> Client:
        return cls(AsyncClient.unix(path), **kw)

    @classmethod
    def tcp(cls, host: str, port: int, token: Optional[str] = None, **kw: Any) -> Client:
        return cls(AsyncClient.tcp(host, port, token), **kw)

    @classmethod
    def spawn(cls, argv: Optional[list] = None, **kw: Any) -> Client:
        return cls(AsyncClient.spawn(argv, **kw))

    @classmethod
    def discover(
        cls, data_dir: Optional[str] = None, *, start: Optional[str] = None, config: Optional[str] = None, **kw: Any
    ) -> Client:
        """The daemon of the project around `start` (default: the working folder), found like
        git finds a repository; connecting raises `DaemonNotRunning` when none answers."""
        return cls(AsyncClient.discover(data_dir, start=start, config=config), **kw)

    def _run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)  # type: ignore[arg-type]

    def connect(self) -> Client:
        try:
            self._run(self._inner.connect())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._inner.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def server_info(self) -> dict:
        return self._inner.server_info

    def call(self, method: str, params: Optional[dict] = None) -> Any:
        return self._run(self._inner.call(method, params))

    def start(self, workflow_id: str, vars: Optional[dict] = None, **kw: Any):
        return self._run(self._inner.start(workflow_id, vars, **kw))

    def retry(self, run_id: str, **kw: Any):
        return self._run(self._inner.retry(run_id, **kw))

    def fork(self, run_id: str, **kw: Any):
        return self._run(self._inner.fork(run_id, **kw))

    def resume(self, run_id: str, payload: dict, **kw: Any):
        return self._run(self._inner.resume(run_id, payload, **kw))

    def state(self, run_id: str):
        return self._run(self._inner.state(run_id))

    def ledger(self, run_id: str, **kw: Any):
        return self._run(self._inner.ledger(run_id, **kw))

    def verify(self, run_id: str):
        return self._run(self._inner.verify(run_id))

    def runs(self, **kw: Any):
        return self._run(self._inner.runs(**kw))

    def cancel(self, run_id: str, reason: Optional[str] = None):
        return self._run(self._inner.cancel(run_id, reason))

    def emit_event(self, name: str, payload: Any = None, **kw: Any):
        return self._run(self._inner.emit_event(name, payload, **kw))

    def workflows(self):
        return self._run(self._inner.workflows())

    def workflows_list(self):
        return self._run(self._inner.workflows_list())

    def migrate(self, run_id: str, to_node: Optional[str] = None):
        return self._run(self._inner.migrate(run_id, to_node))

    def reload_workflows(self):
        return self._run(self._inner.reload_workflows())

    def next_workflow_change(self, timeout: Optional[float] = None):
        return self._run(self._inner.next_workflow_change(timeout))

    def status(self):
        return self._run(self._inner.status())

    def web_link(self):
        return self._run(self._inner.web_link())

    def shutdown_daemon(self) -> None:
        self._run(self._inner.shutdown_daemon())

    def subscribe(
        self, run_id: Optional[str] = None, *, after: Optional[int] = None, reconnect: bool = True
    ) -> Iterator[Any]:
        """Blocking iterator over events; stop it with `break` (or `.close()` on it)."""
        out: queue.Queue[Any] = queue.Queue()

        async def pump() -> None:
            try:
                async for ev in self._inner.subscribe(run_id, after=after, reconnect=reconnect):
                    out.put(ev)
            except BaseException as e:  # hand every ending to the consumer thread
                out.put(e)
            finally:
                out.put(_END)

        fut = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while True:
                item = out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        return
                    raise item
                yield item
        finally:
            fut.cancel()
            try:
                fut.result(5)  # let the cancellation run before the caller closes the loop
            except BaseException:  # noqa: B036 - cancelled or ended: either way it is over
                pass
