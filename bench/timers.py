"""Timer lag: N runs wait on WAIT_UNTIL for the *same instant*; how late does each resume?

The scheduler runs from the start (as in a daemon). Every run is created and waiting before
the deadline (the script checks); lag = the moment `on_run_resumed` sees the run completed
minus the deadline. Runs under either package.

    python bench/timers.py --store mem --n 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import pct  # noqa: E402

from abstractruntime import (  # noqa: E402
    Effect,
    EffectType,
    JsonFileRunStore,
    JsonlLedgerStore,
    RunStatus,
    SqliteDatabase,
    SqliteLedgerStore,
    SqliteRunStore,
    StepPlan,
    WorkflowSpec,
    create_scheduled_runtime,
)
from abstractruntime.storage import InMemoryLedgerStore, InMemoryRunStore  # noqa: E402


def wait(run, ctx):
    until = run.vars.get("until")
    if until is None:  # staggered: due `delay` seconds after this run's own first tick
        until = datetime.fromtimestamp(time.time() + run.vars["delay"], timezone.utc).isoformat()
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="done")


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"ok": True})


WF = WorkflowSpec(workflow_id="same_instant", entry_node="wait", nodes={"wait": wait, "done": done})


def stores(kind, d):
    if kind == "mem":
        return InMemoryRunStore(), InMemoryLedgerStore()
    if kind == "jsonfile":
        return JsonFileRunStore(d), JsonlLedgerStore(d)
    db = SqliteDatabase(os.path.join(d, "t.sqlite3"))
    return SqliteRunStore(db), SqliteLedgerStore(db)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["mem", "jsonfile", "sqlite"], default="mem")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--lead", type=float, default=None, help="seconds from now to the deadline")
    ap.add_argument("--poll", type=float, default=0.2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--dir", default=None, help="where the data goes (default: a new temporary folder)")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="leave the data in place: deleting 10,000 runs' files makes the next creates in that "
        "file system slow for minutes (see daemon_bench.py), which a driver running other benches avoids",
    )
    ap.add_argument(
        "--stagger",
        type=float,
        default=None,
        help="instead of one instant, each run is due this many seconds after its own tick "
        "(the method of the peer harness ar_timer_bench.py)",
    )
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="artimers_", dir=a.dir)
    rs, ls = stores(a.store, d)
    resumed = {}
    lock = threading.Lock()
    all_done = threading.Event()

    def on_resumed(state):
        t = time.time()
        if state.status == RunStatus.COMPLETED:
            with lock:
                resumed[state.run_id] = t
                if len(resumed) >= a.n:
                    all_done.set()

    sr = create_scheduled_runtime(
        run_store=rs,
        ledger_store=ls,
        workflows=[WF],
        poll_interval_s=a.poll,
        auto_start=True,
        on_run_resumed=on_resumed,
    )
    lead = a.lead if a.lead is not None else max(2.0, a.n * (0.00012 if a.store == "mem" else 0.004))
    deadline = time.time() + lead
    until = datetime.fromtimestamp(deadline, timezone.utc).isoformat()
    due = {}
    t0 = time.time()
    for _ in range(a.n):
        vars_ = {"until": until} if a.stagger is None else {"delay": a.stagger}
        rid = sr.runtime.start(workflow=WF, vars=vars_)
        st = sr.runtime.tick(workflow=WF, run_id=rid)
        assert st.status == RunStatus.WAITING, "deadline passed before every run was waiting: raise --lead"
        due[rid] = datetime.fromisoformat(st.waiting.until).timestamp()
    created_s = time.time() - t0
    ok = all_done.wait(a.timeout)
    sr.stop()
    if hasattr(rs, "close"):
        rs.close()
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)
    lags = [t - due[rid] for rid, t in resumed.items()]
    print(
        json.dumps(
            {
                "store": a.store,
                "n": a.n,
                "mode": "same instant" if a.stagger is None else f"staggered {a.stagger}s",
                "all_resumed": ok,
                "resumed": len(resumed),
                "create_s": created_s,
                "lag_p50_ms": pct(lags, 50) * 1e3,
                "lag_p99_ms": pct(lags, 99) * 1e3,
                "lag_max_ms": max(lags) * 1e3,
            }
        )
    )


if __name__ == "__main__":
    main()
