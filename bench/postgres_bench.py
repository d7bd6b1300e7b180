"""Several daemons on one PostgreSQL, against one daemon on SQLite and against DBOS Transact.

On one throwaway PostgreSQL server started for the bench (fsync on, as in production; the
tests' server runs without it), in the same rounds:

1. The 32-client workload (each client: start a run that asks, answer it, see it complete)
   through 1, 2 and 3 daemons on the database (clients spread over them round-robin), through
   one daemon on SQLite (every commit durable), and through DBOS Transact on a database of the
   same server (a workflow waiting on `recv`, resumed by `send`: bench/dbos_workload.py, run
   in the venv .bench-venvs/dbos, made here when missing). runs/s and ratios.
2. 10,000 runs waiting for the same instant, through 1 and 3 daemons on the database and one
   on SQLite: how late each fires (its completed state's `updated_at` minus the instant),
   p50/p99.

    python bench/postgres_bench.py [--quick] [--rounds 2] [--plot docs/img/postgres.png]
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
import uuid
import venv
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, ROOT, median, pct, save  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
from daemon_bench import spawn_daemon  # noqa: E402
from pg_server import PgServer, bindir  # noqa: E402

from abstractruntime.client.aio import AsyncClient, Target  # noqa: E402

DBOS_VENV = Path(os.environ.get("AR_DBOS_VENV", ROOT / ".bench-venvs" / "dbos"))


def dbos_python() -> str:
    py = DBOS_VENV / "bin" / "python"
    if not py.exists():
        venv.create(DBOS_VENV, with_pip=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "dbos", "psycopg[binary]"], check=True)
    return str(py)


def dbos_version() -> str:
    out = subprocess.run(
        [dbos_python(), "-c", "import importlib.metadata as m; print(m.version('dbos'))"], capture_output=True, text=True
    )
    return out.stdout.strip()


class Daemons:
    """N daemons, each with a data folder of its own, on one store."""

    def __init__(self, n: int, *store_args: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="ar_pgb_"))
        self.procs, self.sockets = [], []
        for i in range(n):
            folder = self.tmp / f"d{i}"
            folder.mkdir()
            proc, sock = spawn_daemon(folder, *store_args)
            self.procs.append(proc)
            self.sockets.append(sock)

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _clients(sockets: list, clients: int, per_client: int) -> tuple:
    async def one(sock: str) -> int:
        c = AsyncClient(Target("unix", path=sock))
        await c.connect()
        done = 0
        for _ in range(per_client):
            rid = (await c.start("ask")).run_id
            done += (await c.resume(rid, {"text": "yes"})).status == "completed"
        await c.close()
        return done

    await asyncio.gather(*[one(s) for s in sockets])  # warm-up: one client per daemon
    t = time.perf_counter()
    done = await asyncio.gather(*[one(sockets[i % len(sockets)]) for i in range(clients)])
    return sum(done) - 0, time.perf_counter() - t


def ours(n: int, store_args: tuple, clients: int, per_client: int) -> float:
    d = Daemons(n, *store_args)
    try:
        runs, took = asyncio.run(_clients(d.sockets, clients, per_client))
    finally:
        d.close()
    return runs / took


def dbos(url: str, clients: int, per_client: int) -> float:
    import json

    p = subprocess.run(
        [dbos_python(), str(HERE / "dbos_workload.py"), "--url", url, "--clients", str(clients),
         "--per-client", str(per_client)],
        capture_output=True, text=True, timeout=1800,
    )
    if p.returncode != 0:
        raise RuntimeError(f"dbos workload failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])["runs_s"]


def sqlalchemy_url(server: PgServer, db: str) -> str:
    return f"postgresql://postgres@/{db}?host={server.sock}"


# -- timers ------------------------------------------------------------------------------------


async def _burst(sockets: list, n: int, lead_s: float) -> tuple:
    """Start n runs waiting for one instant (now + lead_s); returns (the instant, creation seconds)."""
    at = datetime.now(timezone.utc) + timedelta(seconds=lead_s)
    until = at.isoformat()
    conns = []
    for s in sockets:
        for _ in range(32 // len(sockets) + 1):
            c = AsyncClient(Target("unix", path=s))
            await c.connect()
            conns.append(c)
    per = n // len(conns) + 1
    left = [n]

    async def make(c: AsyncClient) -> None:
        for _ in range(per):
            if left[0] <= 0:
                return
            left[0] -= 1
            st = await c.start("at_instant", {"until": until})
            assert st.state.status == "waiting", st

    t = time.perf_counter()
    await asyncio.gather(*[make(c) for c in conns])
    took = time.perf_counter() - t
    for c in conns:
        await c.close()
    return at.timestamp(), took


async def _lags(sock: str, n: int, at: float, timeout_s: float) -> list:
    c = AsyncClient(Target("unix", path=sock))
    await c.connect()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        waiting = (await c.call("daemon/status", {}))["runs"].get("waiting", 0)
        if waiting == 0 and time.time() > at:
            break
        await asyncio.sleep(0.5)
    lags, cursor = [], None
    while True:
        page = await c.runs(status="completed", workflow_id="at_instant", limit=1000, cursor=cursor)
        lags += [datetime.fromisoformat(r.updated_at).timestamp() - at for r in page.runs]
        cursor = page.next
        if not cursor:
            break
    await c.close()
    assert len(lags) == n, f"{len(lags)} of {n} fired"
    return lags


def timers(n_daemons: int, store_args: tuple, n: int, lead_s: float) -> dict:
    d = Daemons(n_daemons, *store_args)
    try:
        at, made = asyncio.run(_burst(d.sockets, n, lead_s))
        if time.time() >= at:
            raise RuntimeError(f"creating {n} runs took {made:.0f} s, past the instant: raise --lead")
        lags = asyncio.run(_lags(d.sockets[0], n, at, lead_s + 600))
    finally:
        d.close()
    return {"p50_ms": pct(lags, 50) * 1e3, "p99_ms": pct(lags, 99) * 1e3, "max_ms": max(lags) * 1e3, "created_s": made}


# -- the bench ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs: a smoke test of the bench")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timers", type=int, default=10000, help="runs due at one instant")
    ap.add_argument("--lead", type=float, default=None, help="seconds from the burst's start to the instant")
    ap.add_argument("--plot", default=None, help="write a PNG of the figures here")
    ap.add_argument("--only", choices=["workload", "timers"], default=None, help="run one part")
    args = ap.parse_args()
    per_client = 5 if args.quick else 25
    n_timers = 1000 if args.quick else args.timers
    lead = args.lead or (20.0 if args.quick else max(60.0, n_timers / 80))
    found = bindir()
    if found is None:
        sys.exit("needs PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)")
    server = PgServer(found, durable=True, max_connections=300).start()
    out: dict = {"rounds": [], "dbos_version": dbos_version(), "per_client": per_client, "clients": 32}
    try:
        for r in range(args.rounds if args.only != "timers" else 0):
            got = {}
            for n in (1, 2, 3):
                dsn = server.create_database("ours_" + uuid.uuid4().hex[:8])
                got[f"pg{n}"] = ours(n, ("--store", "postgres", "--dsn", dsn), 32, per_client)
            got["sqlite"] = ours(1, ("--store", "sqlite"), 32, per_client)
            db = "dbos_" + uuid.uuid4().hex[:8]
            got["dbos"] = dbos(sqlalchemy_url(server, db), 32, per_client)
            out["rounds"].append(got)
            print(f"  round {r + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in got.items()) + " runs/s", flush=True)
        if out["rounds"]:
            for k in out["rounds"][0]:
                out[k] = median([g[k] for g in out["rounds"]])
            for k in ("pg1", "pg2", "pg3", "sqlite"):
                out[f"{k}_over_dbos"] = median([g[k] / g["dbos"] for g in out["rounds"]])
            print("32 clients, runs/s (median): " + ", ".join(f"{k} {out[k]:.0f}" for k in ("pg1", "pg2", "pg3", "sqlite", "dbos")))
            print("over DBOS: " + ", ".join(f"{k} {out[f'{k}_over_dbos']:.2f}x" for k in ("pg1", "pg2", "pg3", "sqlite")))
        if args.only != "workload":
            t: dict = {}
            for name, n, store in (
                ("sqlite", 1, ("--store", "sqlite")),
                ("pg1", 1, None),
                ("pg3", 3, None),
            ):
                if store is None:
                    store = ("--store", "postgres", "--dsn", server.create_database("t_" + uuid.uuid4().hex[:8]))
                t[name] = timers(n, store, n_timers, lead)
                print(f"  {n_timers} timers, {name}: p50 {t[name]['p50_ms']:.0f} ms, p99 {t[name]['p99_ms']:.0f} ms "
                      f"(created in {t[name]['created_s']:.0f} s)", flush=True)
            out["timers"] = t | {"n": n_timers}
    finally:
        server.stop()
    print(f"results: {save('postgres' if args.only is None else f'postgres_{args.only}', out)}")
    if args.plot:
        # One part at a time (--only) still plots both, from the other part's saved figures.
        import json

        results = Path(os.environ.get("ABSTRACTRUNTIME_BENCH_RESULTS") or HERE / "results")
        for part in ("workload", "timers"):
            f = results / f"postgres_{part}.json"
            if args.only not in (None, part) and f.exists():
                out = json.loads(f.read_text()) | out
        plot(out, args.plot)


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if "timers" in out else 1, figsize=(11, 4), squeeze=False)
    ax = axes[0][0]
    names = ["pg1", "pg2", "pg3", "sqlite", "dbos"]
    labels = ["1 daemon\nPostgreSQL", "2 daemons\nPostgreSQL", "3 daemons\nPostgreSQL", "1 daemon\nSQLite",
              f"DBOS {out['dbos_version']}\nPostgreSQL"]
    vals = [out[n] for n in names]
    ax.bar(labels, vals, color=["#3a6ea5", "#3a6ea5", "#3a6ea5", "#7a9a3a", "#a55a3a"])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ax.set_ylabel("runs/s (start, wait, answer, complete)")
    ax.set_title("32 clients, one PostgreSQL server (fsync on)")
    if "timers" in out:
        ax = axes[0][1]
        t = out["timers"]
        names = ["sqlite", "pg1", "pg3"]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [t[n]["p50_ms"] for n in names], 0.4, label="p50")
        ax.bar([i + 0.2 for i in x], [t[n]["p99_ms"] for n in names], 0.4, label="p99")
        ax.set_xticks(list(x), ["1 daemon\nSQLite", "1 daemon\nPostgreSQL", "3 daemons\nPostgreSQL"])
        ax.set_ylabel("ms late")
        ax.set_title(f"{t['n']:,} runs due at one instant")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
