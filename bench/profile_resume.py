"""Where a `runtime/resume` round trip's time goes, part by part, in one process.

Each part of the daemon's path is timed on its own (median of `--n` calls after a warm-up),
with the daemon's real code: reading the frame, decoding the message, the envelope checks,
the params' validation, the hand-over to a tick worker (the time from `submit` on the event
loop to the job starting on its thread), in an older tree the hand-back of the result to the
loop (which then encoded and wrote the reply), the kernel's resume (in-memory store, the daemon's
event log listening), and encoding the reply. Then a cProfile of the kernel's resume, the
functions taking the most time of their own.

    python bench/profile_resume.py [--n 3000] [--tree DIR]

`--tree` measures another checkout (its src/), for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(n: int, fn) -> float:
    for _ in range(min(300, n)):
        fn()
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs) * 1e6


def back_us(pool, n: int) -> float:
    """An older tree's second hop: from the job's end on a worker to the awaiting coroutine
    running again on the loop (where the reply was then encoded and written)."""

    async def main() -> float:
        xs = []
        for _ in range(n):
            ended = []
            await pool.run(lambda ended=ended: ended.append(time.perf_counter()))
            xs.append(time.perf_counter() - ended[0])
        return statistics.median(xs) * 1e6

    return asyncio.run(main())


def hop_us(pool, n: int) -> float:
    """Median time from handing a job to the tick pool (on the loop) to its start on a worker."""

    async def main() -> float:
        xs = []
        for _ in range(n):
            done = asyncio.get_running_loop().create_future()
            started = []
            t0 = time.perf_counter()
            if hasattr(pool, "submit"):

                def job(started=started, done=done) -> None:
                    started.append(time.perf_counter())
                    done.get_loop().call_soon_threadsafe(done.set_result, None)

                pool.submit(job)
                await done
            else:  # an older tree: the pool's awaitable `run`
                await pool.run(lambda started=started: started.append(time.perf_counter()))
            xs.append(started[0] - t0)
        return statistics.median(xs) * 1e6

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--tree", default=str(HERE.parent))
    a = ap.parse_args()
    sys.path.insert(0, str(Path(a.tree) / "src"))
    from abstractruntime.daemon import framing, session
    from abstractruntime.daemon.hub import Hub
    from abstractruntime.protocol import models as m
    from abstractruntime.protocol.framing import encode_frame

    d = tempfile.mkdtemp(prefix="ar_prof_")
    hub = Hub(data_dir=d + "/data", workflow_dirs=[str(HERE / "daemon_workflows")], store="memory", workers=4)
    rt = hub.runtime
    rid = rt.start_and_tick(workflow=rt.workflow("again"), vars={}).run_id
    raw = {"run_id": rid, "payload": {"text": "x"}}
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "runtime/resume", "params": raw}).encode()
    frame = encode_frame(body)
    parts = {}
    if hasattr(framing, "Connection"):
        from abstractruntime.protocol.framing import FrameParser

        parser = FrameParser()
        parts["frame: read"] = timed(a.n, lambda: parser.feed(frame))
    else:  # an older tree: read from an asyncio StreamReader
        from abstractruntime.protocol.framing import read_frame

        async def read_one() -> float:
            r = asyncio.StreamReader()
            xs = []
            for _ in range(a.n):
                r.feed_data(frame)
                t = time.perf_counter()
                await read_frame(r, 1 << 24)
                xs.append(time.perf_counter() - t)
            return statistics.median(xs) * 1e6

        parts["frame: read"] = asyncio.run(read_one())
    data = json.loads(body)
    if hasattr(framing, "orjson"):  # what the tree's dispatch does
        parts["message: decode"] = timed(a.n, lambda: framing.orjson.loads(body))
        parts["envelope checks"] = timed(
            a.n,
            lambda: (
                framing.too_deep(data, framing.MAX_DEPTH)
                if body.count(b"{") + body.count(b"[") > framing.MAX_DEPTH
                else None,
                framing._check_envelope(data),
            ),
        )
    else:
        parts["message: decode"] = timed(a.n, lambda: json.loads(body.decode("utf-8")))
        parts["envelope checks"] = timed(
            a.n, lambda: (framing.too_deep(data, framing.MAX_DEPTH), framing._check_envelope(data))
        )
    parts["params: validate"] = timed(a.n, lambda: session._validate(m.ResumeParams, "runtime/resume", raw))
    parts["hand-over to a tick worker"] = hop_us(hub.pool, a.n)
    # The worker writes the reply itself where the pool has `submit`; before, it went back.
    parts["hand-back to the loop"] = 0.0 if hasattr(hub.pool, "submit") else back_us(hub.pool, a.n)
    parts["kernel: resume"] = timed(
        a.n, lambda: rt.resume(workflow=None, run_id=rid, wait_key=None, payload=raw["payload"])
    )
    st = rt.get_state(rid)
    if hasattr(session, "_reply"):
        parts["reply: encode"] = timed(a.n, lambda: session._reply(7, {"state": st.to_dict()}))
    else:
        parts["reply: encode"] = timed(
            a.n,
            lambda: json.dumps(
                {"jsonrpc": "2.0", "id": 7, "result": {"state": st.to_dict()}}, separators=(",", ":")
            ).encode(),
        )
    total = sum(parts.values())
    print(f"parts of one runtime/resume ({a.tree}), median us:")
    for k, v in parts.items():
        print(f"  {k:<30} {v:8.1f}  {100 * v / total:5.1f}%")
    print(f"  {'sum':<30} {total:8.1f}")
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(a.n):
        rt.resume(workflow=None, run_id=rid, wait_key=None, payload=raw["payload"])
    pr.disable()
    print("\nkernel resume under cProfile, by time of their own:")
    pstats.Stats(pr).sort_stats("tottime").print_stats(12)
    hub.close()
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
