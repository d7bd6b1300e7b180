"""The kernel workload, one process, printing a JSON line: runs/s and per-run latency.

Three nodes: `step1` (pure compute) -> `ask` (ASK_USER: the run pauses) -> resume with
{"text": "yes"} -> `done`. One run at a time. Uses only the public API both packages share,
so the same file measures ours and the published package.

    python bench/workload.py --store mem|jsonfile|sqlite --n 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, pct  # noqa: E402

from abstractruntime import (  # noqa: E402
    Effect,
    EffectType,
    JsonFileRunStore,
    JsonlLedgerStore,
    RunStatus,
    Runtime,
    SqliteDatabase,
    SqliteLedgerStore,
    SqliteRunStore,
    StepPlan,
    WorkflowSpec,
)
from abstractruntime.storage import InMemoryLedgerStore, InMemoryRunStore  # noqa: E402


def step1(run, ctx):
    run.vars["x"] = sum(i * i for i in range(100))
    return StepPlan(node_id="step1", next_node="ask")


def ask(run, ctx):
    return StepPlan(
        node_id="ask",
        effect=Effect(type=EffectType.ASK_USER, payload={"prompt": "Continue?"}, result_key="answer"),
        next_node="done",
    )


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"x": run.vars.get("x"), "answer": run.vars.get("answer")})


WF = WorkflowSpec(workflow_id="bench3", entry_node="step1", nodes={"step1": step1, "ask": ask, "done": done})


def make(store: str, d: str):
    if store == "mem":
        return Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore()), []
    if store == "jsonfile":
        rs, ls = JsonFileRunStore(d), JsonlLedgerStore(d)
        return Runtime(run_store=rs, ledger_store=ls), [rs, ls]
    db = SqliteDatabase(os.path.join(d, "bench.sqlite3"))
    return Runtime(run_store=SqliteRunStore(db), ledger_store=SqliteLedgerStore(db)), [db]


def one(store: str, n: int, base: str) -> dict:
    d = tempfile.mkdtemp(prefix=f"arbench_{store}_", dir=base)
    rt, closers = make(store, d)
    lat = []
    pc = time.perf_counter
    t0 = pc()
    for _ in range(n):
        a = pc()
        rid = rt.start(workflow=WF)
        st = rt.tick(workflow=WF, run_id=rid)
        assert st.status == RunStatus.WAITING
        st = rt.resume(workflow=WF, run_id=rid, wait_key=st.waiting.wait_key, payload={"text": "yes"})
        assert st.status == RunStatus.COMPLETED and st.output["answer"] == {"text": "yes"}
        lat.append(pc() - a)
    total = pc() - t0
    for c in closers:
        if hasattr(c, "close"):
            c.close()
    shutil.rmtree(d, ignore_errors=True)
    return {"runs_s": n / total, "p50_us": median(lat) * 1e6, "p99_us": pct(lat, 99) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["mem", "jsonfile", "sqlite"], default="mem")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    n = a.n or (2000 if a.store == "mem" else 300)
    one(a.store, min(50, n), a.dir)  # warm-up: imports, first files
    r = one(a.store, n, a.dir)
    r.update(store=a.store, n=n)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
