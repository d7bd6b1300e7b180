"""The daemon's tick pool: results, errors and shutdown as the event loop sees them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from abstractruntime.daemon.pool import ShutDownError, TickPool


def test_results_and_errors_come_back_to_their_callers():
    pool = TickPool(4)

    async def main():
        ok = await asyncio.gather(*[pool.run(lambda i=i: i * i) for i in range(200)])
        with pytest.raises(ValueError, match="boom"):
            await pool.run(lambda: (_ for _ in ()).throw(ValueError("boom")))
        return ok

    assert asyncio.run(main()) == [i * i for i in range(200)]
    pool.shutdown()


def test_an_exit_in_kernel_work_never_reaches_the_loop():
    pool = TickPool(2)

    def leave():
        raise SystemExit(3)

    async def main():
        with pytest.raises(RuntimeError, match="SystemExit"):
            await pool.run(leave)
        return await pool.run(lambda: "still serving")

    assert asyncio.run(main()) == "still serving"
    pool.shutdown()


def test_a_slow_call_does_not_hold_up_the_others():
    pool = TickPool(2)
    release = threading.Event()

    async def main():
        slow = asyncio.ensure_future(pool.run(lambda: release.wait(5)))
        t = time.perf_counter()
        assert await pool.run(lambda: 1) == 1
        fast = time.perf_counter() - t
        release.set()
        await slow
        return fast

    assert asyncio.run(main()) < 1.0
    pool.shutdown()


def test_shutdown_finishes_queued_work_and_refuses_new():
    pool = TickPool(1)
    ran = []

    async def main():
        futs = [asyncio.ensure_future(pool.run(lambda i=i: (time.sleep(0.01), ran.append(i)))) for i in range(5)]
        await asyncio.sleep(0)  # queued
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        await asyncio.gather(*futs)
        with pytest.raises(ShutDownError):
            await pool.run(lambda: None)

    asyncio.run(main())
    assert ran == [0, 1, 2, 3, 4]
