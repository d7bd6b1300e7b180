"""The speed targets on one screen: each a ratio against its floor or its peer measured in the
same round, the median of interleaved rounds; and a plot of the kernel and daemon figures.

Per round (the order of the two sides alternates from one round to the next):
- `runtime/resume` round trip over the unix socket (in-memory store) against a raw asyncio
  JSON echo with the same framing between the same two processes; the two are asked in
  alternating blocks of requests, so both see the same moments of a noisy machine;
- the kernel workload (bench/workload.py) against the published package, per store;
- 32 clients start -> pause -> resume -> complete through the daemon, on fsync'd JSON files
  against the same load on the in-memory store (and SQLite, for reference);
- 1,000 and 10,000 runs whose timers fall due at one instant (bench/timers.py), files and SQLite.

    python bench/targets.py [--rounds 5] [--quick] [--no-10k] [--plot docs/performance.png]

Prints the table last and saves bench/results/targets.json. The plot needs matplotlib
(`pip install matplotlib`); without it the bench says so and skips the plot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon_bench as db  # noqa: E402
from _common import ROOT, median, run_json, save  # noqa: E402

KERNEL = {"mem": ("in memory", 3.0), "jsonfile": ("JSON files", 3.0), "sqlite": ("SQLite", 1.5)}


def rtt_round(blocks: int, per_block: int) -> dict:
    """Daemon and echo p50 from alternating blocks of requests in one pair of processes."""
    tmp = Path(tempfile.mkdtemp(prefix="ar_tgt_rtt_"))
    proc, sock = db.spawn_daemon(tmp, "--store", "memory")
    esock = str(tmp / "echo.sock")
    echo = subprocess.Popen([sys.executable, "-c", db.ECHO_SERVER, esock], stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    try:

        async def main() -> tuple:
            c = db.AsyncClient(db.Target("unix", path=sock))
            await c.connect()
            rid = (await c.start("again")).run_id
            conn = await db.Connection.unix(esock)
            params_d = {"run_id": rid, "payload": {"text": "x"}}
            params_e = {"run_id": "x", "payload": {"text": "x"}}
            for _ in range(200):  # warm-up, both
                await c.call("runtime/resume", params_d)
                await conn.request("echo", params_e)
            ds: list = []
            es: list = []
            for b in range(blocks):
                sides = [(ds, lambda: c.call("runtime/resume", params_d)), (es, lambda: conn.request("echo", params_e))]
                for out, call in sides if b % 2 == 0 else sides[::-1]:
                    for _ in range(per_block):
                        t = time.perf_counter()
                        await call()
                        out.append(time.perf_counter() - t)
            await c.close()
            await conn.close()
            return ds, es

        ds, es = asyncio.run(main())
    finally:
        for p in (proc, echo):
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    d, e = median(ds) * 1e6, median(es) * 1e6
    return {"daemon_p50_us": d, "echo_p50_us": e, "ratio": d / e}


def kernel_round(store: str, n: int, i: int) -> dict:
    order = ["peer", "ours"] if i % 2 == 0 else ["ours", "peer"]
    got = {impl: run_json(impl, "workload.py", "--store", store, "--n", str(n))["runs_s"] for impl in order}
    return {"ours": got["ours"], "peer": got["peer"], "ratio": got["ours"] / got["peer"]}


def clients_round(parent: Path, per_client: int, i: int) -> dict:
    db.settle(parent)
    stores = ["files", "memory", "sqlite"] if i % 2 == 0 else ["memory", "files", "sqlite"]
    got = {s: db.bench_concurrent(32, per_client, s, parent)["runs_s"] for s in stores}
    return {**got, "ratio": got["files"] / got["memory"]}


def timers_round(store: str, n: int, parent: Path) -> dict:
    # Kept until the bench ends (like the clients' data): deleting 10,000 runs' files would
    # make the next round's file creates slow for minutes.
    r = run_json("ours", "timers.py", "--store", store, "--n", str(n), "--dir", str(parent), "--keep")
    if not r["all_resumed"]:
        raise RuntimeError(f"timers {store} {n}: only {r['resumed']} resumed")
    return {"p50_ms": r["lag_p50_ms"], "p99_ms": r["lag_p99_ms"]}


def summarize(rounds: list, key: str) -> dict:
    xs = [r[key] for r in rounds]
    return {"median": median(xs), "min": min(xs), "max": max(xs)}


def table(res: dict) -> list:
    """(target, measured, floor or peer, goal, met) rows."""
    rows = []
    r = res["rtt"]
    rows.append(
        (
            "resume RTT p50 / raw echo",
            f"{r['daemon']['median']:.0f} us",
            f"echo {r['echo']['median']:.0f} us",
            f"{r['ratio']['median']:.2f}x ({r['ratio']['min']:.2f}-{r['ratio']['max']:.2f})",
            "<= 2x",
            r["ratio"]["median"] <= 2.0,
        )
    )
    for store, (label, goal) in KERNEL.items():
        k = res["kernel"][store]
        rows.append(
            (
                f"kernel runs/s, {label} / published",
                f"{k['ours']['median']:.0f}",
                f"peer {k['peer']['median']:.0f}",
                f"{k['ratio']['median']:.2f}x ({k['ratio']['min']:.2f}-{k['ratio']['max']:.2f})",
                f">= {goal}x",
                k["ratio"]["median"] >= goal,
            )
        )
    c = res["clients"]
    rows.append(
        (
            "32 clients, fsync'd files / memory",
            f"{c['files']['median']:.0f} runs/s",
            f"memory {c['memory']['median']:.0f}",
            f"{c['ratio']['median']:.2f}x ({c['ratio']['min']:.2f}-{c['ratio']['max']:.2f})",
            ">= 0.8x",
            c["ratio"]["median"] >= 0.8,
        )
    )
    for key, t in res["timers"].items():
        n, store = key.split("/")
        goal = 250.0 if n == "10000" else 30.0
        p = t["p99"]
        rows.append(
            (
                f"{int(n):,} timers at one instant, {store}",
                f"p99 {p['median']:.0f} ms",
                f"p50 {t['p50']['median']:.0f} ms",
                f"{p['min']:.0f}-{p['max']:.0f} ms",
                f"<= {goal:.0f} ms",
                p["median"] <= goal,
            )
        )
    return rows


def print_table(rows: list) -> None:
    head = ("target", "measured", "floor / peer", "ratio (range)", "goal", "met")
    cells = [head] + [(a, b, c, d, e, "yes" if ok else "NO") for a, b, c, d, e, ok in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    for j, row in enumerate(cells):
        print("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def plot(res: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)", flush=True)
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    stores = list(KERNEL)
    x = range(len(stores))
    ax = axes[0]
    ours = [res["kernel"][s]["ours"]["median"] for s in stores]
    peer = [res["kernel"][s]["peer"]["median"] for s in stores]
    ax.bar([i - 0.2 for i in x], peer, 0.4, label="published 0.13.0", color="#bbbbbb", hatch="//")
    ax.bar([i + 0.2 for i in x], ours, 0.4, label="ours", color="#2b6cb0")
    for i, s in enumerate(stores):
        ax.annotate(f"{res['kernel'][s]['ratio']['median']:.1f}x", (i + 0.2, ours[i]), ha="center", va="bottom")
    ax.set_xticks(list(x), [KERNEL[s][0] for s in stores])
    ax.set_ylabel("runs/s (one run at a time)")
    ax.set_title("kernel workload")
    ax.legend(fontsize=8)
    ax = axes[1]
    c = res["clients"]
    names = ["memory", "files", "sqlite"]
    ax.bar(names, [c[n]["median"] for n in names], color=["#bbbbbb", "#2b6cb0", "#68a063"])
    ax.set_ylabel("runs/s")
    ax.set_title("daemon, 32 clients")
    ax = axes[2]
    r = res["rtt"]
    ax.bar(["raw echo", "runtime/resume"], [r["echo"]["median"], r["daemon"]["median"]], color=["#bbbbbb", "#2b6cb0"])
    ax.annotate(f"{r['ratio']['median']:.2f}x", (1, r["daemon"]["median"]), ha="center", va="bottom")
    ax.set_ylabel("round trip p50, us")
    ax.set_title("unix socket round trip")
    fig.suptitle(f"median of {res['rounds']} interleaved rounds, {res['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot written to {path}", flush=True)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one round, smaller loads: a smoke run, not figures")
    ap.add_argument("--no-10k", action="store_true", help="skip the 10,000-timer runs (they take ~1 min a round)")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "performance.png"))
    a = ap.parse_args()
    rounds = 1 if a.quick else a.rounds
    parent = Path(tempfile.mkdtemp(prefix="ar_tgt_"))
    db.SCRATCH.append(parent)
    raw: dict = {"rtt": [], "kernel": {s: [] for s in KERNEL}, "clients": [], "timers": {}}
    sizes = [1000] if a.no_10k or a.quick else [1000, 10000]
    try:
        for i in range(rounds):
            r = rtt_round(blocks=6 if not a.quick else 2, per_block=300)
            raw["rtt"].append(r)
            line = f"round {i + 1}: RTT {r['daemon_p50_us']:.0f}/{r['echo_p50_us']:.0f} us = {r['ratio']:.2f}x"
            for store in KERNEL:
                n = 2000 if store == "mem" else 300
                k = kernel_round(store, n // 4 if a.quick else n, i)
                raw["kernel"][store].append(k)
                line += f"; {store} {k['ratio']:.2f}x"
            c = clients_round(parent, 10 if a.quick else 25, i)
            raw["clients"].append(c)
            line += f"; 32 clients files {c['files']:.0f} mem {c['memory']:.0f} sqlite {c['sqlite']:.0f} ({c['ratio']:.2f}x)"
            for n in sizes:
                for store in ("jsonfile", "sqlite"):
                    t = timers_round(store, n, parent)
                    raw["timers"].setdefault(f"{n}/{store}", []).append(t)
                    line += f"; {n} timers {store} p99 {t['p99_ms']:.0f} ms"
            print(line, flush=True)
    finally:
        for d in db.SCRATCH:
            shutil.rmtree(d, ignore_errors=True)
    res: dict = {
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d"),
        "rtt": {
            "daemon": summarize(raw["rtt"], "daemon_p50_us"),
            "echo": summarize(raw["rtt"], "echo_p50_us"),
            "ratio": summarize(raw["rtt"], "ratio"),
        },
        "kernel": {s: {k: summarize(rs, k) for k in ("ours", "peer", "ratio")} for s, rs in raw["kernel"].items()},
        "clients": {k: summarize(raw["clients"], k) for k in ("files", "memory", "sqlite", "ratio")},
        "timers": {key: {k: summarize(ts, f"{k}_ms") for k in ("p50", "p99")} for key, ts in raw["timers"].items()},
        "raw": raw,
    }
    save("targets", res)
    if not a.quick:
        plot(res, a.plot)
    print()
    print_table(table(res))


if __name__ == "__main__":
    main()
