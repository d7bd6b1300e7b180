"""Memory over a long run: the daemon's RSS while it serves many runs and a few huge payloads.

Phases, against one daemon (SQLite store by default, every commit durable):
1. warm-up: 2,000 runs (start -> wait -> answered -> done), then RSS;
2. N runs (default 200,000) by 16 clients over the unix socket, RSS sampled along the way;
3. 100 resumes that each carry a 4 MB payload, then RSS;
4. 20,000 more small runs (the caches and the event log turn over), then RSS.

A flat curve in phase 2 means no per-run memory that lives on after its run; phase 4 back near
phase 2 means the big payloads were let go (the caches and the event log are bounded by bytes).

    python bench/soak.py [--runs 200000] [--store sqlite|files|memory]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, ROOT, save  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from abstractruntime.client.aio import AsyncClient, Target  # noqa: E402
from abstractruntime.client.connection import env_with_package  # noqa: E402

WORKFLOWS = HERE / "daemon_workflows"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def drive(sock: str, n: int, clients: int, payload: int = 0) -> float:
    """n runs through `clients` connections; returns runs/s."""
    todo = iter(range(n))
    body = {"text": "x" * payload} if payload else {"text": "ok"}

    async def one() -> None:
        c = AsyncClient(Target("unix", path=sock))
        await c.connect()
        try:
            for _ in todo:
                st = await c.start("ask")
                await c.resume(st.run_id, body)
        finally:
            await c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200_000)
    ap.add_argument("--store", default="sqlite", choices=["sqlite", "files", "memory"])
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ar-soak-"))
    sock = str(tmp / "d.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "abstractruntime", "serve", "--data", str(tmp / "data"), "--workflows", str(WORKFLOWS),
         "--socket", sock, "--store", args.store, "--log-level", "warning"],
        env=env_with_package(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while not os.path.exists(sock):
            time.sleep(0.05)
        time.sleep(0.2)
        rows = []

        def sample(label: str, done: int, rate: float = 0.0) -> None:
            rss = rss_mb(proc.pid)
            rows.append({"phase": label, "runs": done, "rss_mb": round(rss, 1), "runs_per_s": round(rate)})
            print(f"{label:<28} runs {done:>8}   RSS {rss:7.1f} MB" + (f"   {rate:,.0f} runs/s" if rate else ""),
                  flush=True)

        sample("start", 0)
        asyncio.run(drive(sock, 2000, args.clients))
        sample("after warm-up", 2000)
        done, step = 2000, max(1, args.runs // 10)
        while done < 2000 + args.runs:
            rate = asyncio.run(drive(sock, step, args.clients))
            done += step
            sample("runs", done, rate)
        asyncio.run(drive(sock, 100, 4, payload=4 << 20))
        sample("after 100 x 4 MB payloads", done + 100)
        rate = asyncio.run(drive(sock, 20_000, args.clients))
        sample("after 20,000 more runs", done + 20_100, rate)
        save("soak", {"store": args.store, "clients": args.clients, "rows": rows})
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
