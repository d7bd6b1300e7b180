"""The threads that run kernel work for the event loop.

Why not `loop.run_in_executor(ThreadPoolExecutor)`: per call it builds a concurrent Future
(with its Condition) chained to an asyncio Future, takes the executor's locks, and wakes the
loop through its self-pipe once per result. Under 32 busy clients that bookkeeping competed
for the GIL with the requests themselves. Here a call is one queue put and one asyncio Future;
finished results are handed back in batches, with one wake-up of the loop per batch. A
request's kernel work goes through `submit` instead: the worker also writes the reply, and
nothing comes back to the loop at all.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from typing import Any, Callable, Deque, List, Tuple

from ..protocol.errors import ShuttingDownError

log = logging.getLogger("abstractruntime.daemon")

ShutDownError = ShuttingDownError  # the one error for "stopping, no new work"; its older name


class TickPool:
    """Serves one event loop (the daemon's): a batch of results is handed back on the loop of
    the call that finished first in it, so calls from several loops could be answered on the
    wrong one."""

    def __init__(self, workers: int, *, name: str = "ar-tick") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._done: Deque[Tuple[asyncio.Future, bool, Any]] = deque()
        self._lock = threading.Lock()
        self._wake_sent = False
        self._closed = False
        # Which workers are inside a call: each writes only its own slot, so no lock is needed.
        self._running: List[bool] = [False] * workers
        self._threads: List[threading.Thread] = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}_{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    async def run(self, fn: Callable[[], Any]) -> Any:
        if self._closed:
            raise ShuttingDownError("the daemon is shutting down: no new work is taken")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((fn, fut, loop))
        return await fut

    @property
    def busy(self) -> int:
        """Work queued or running now (what a stop waits for)."""
        return self._queue.qsize() + sum(self._running)

    def submit(self, fn: Callable[[], None]) -> None:
        """Run `fn` on a worker and forget it: it answers for itself (a request's reply is
        written by the worker that computed it). `fn` must not raise."""
        if self._closed:
            raise ShuttingDownError("the daemon is shutting down: no new work is taken")
        self._queue.put((fn, None, None))

    def _work(self, slot: int) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._running[slot] = True
            try:
                self._call(*item)
            finally:
                self._running[slot] = False

    def _call(self, fn: Callable[[], Any], fut: Any, loop: Any) -> None:
        if fut is None:
            try:
                fn()
            except BaseException:  # isolation boundary: `fn` answers for itself; a bug there is logged
                log.exception("work submitted to the tick pool raised")
            return
        try:
            ok, value = True, fn()
        except Exception as e:
            ok, value = False, e
        except BaseException as e:  # never hand the loop a SystemExit: it would stop the daemon
            ok, value = False, RuntimeError(f"kernel work raised {type(e).__name__}: {e}")
        with self._lock:
            self._done.append((fut, ok, value))
            if self._wake_sent:
                return  # the loop is already due to collect this batch
            self._wake_sent = True
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, deque()
            self._wake_sent = False
        for fut, ok, value in done:
            if fut.cancelled():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def shutdown(self) -> None:
        """Take no new work; wait until the work already queued has run."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)  # after everything queued: the queue is FIFO
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()
