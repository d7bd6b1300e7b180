"""Re-opening a big file store: how long until the waiting runs can be listed.

Builds a JSON-file store holding N runs, W of them waiting (the rest completed, each with a
ledger record), closes it, then times: open the stores and list every waiting run. Runs under
either package (the published one has no summaries: it lists full states).

    python bench/scale.py --runs 100000 --waiting 20000
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median  # noqa: E402

from abstractruntime import JsonFileRunStore, JsonlLedgerStore  # noqa: E402
from abstractruntime.core.models import RunState, RunStatus, StepRecord, StepStatus, WaitReason, WaitState  # noqa: E402


def _open(d, build=False):
    kw = {}
    if build and "durable" in inspect.signature(JsonFileRunStore.__init__).parameters:
        kw["durable"] = False  # how the folder was written does not change what opening it costs
    return JsonFileRunStore(d, **kw), JsonlLedgerStore(d, **kw)


def build(d: str, runs: int, waiting: int) -> None:
    rs, ls = _open(d, build=True)
    for i in range(runs):
        r = RunState.new(workflow_id="bench", entry_node="ask", vars={"i": i, "note": "x" * 64})
        if i % (runs // waiting) == 0 and waiting > 0:
            r.status = RunStatus.WAITING
            r.waiting = WaitState(
                reason=WaitReason.USER, wait_key=f"user:{r.run_id}", prompt="Continue?", choices=["yes", "no"]
            )
        else:
            r.status, r.output = RunStatus.COMPLETED, {"ok": True}
        rec = StepRecord.start(run=r, node_id="ask", effect=None)
        rec.status = StepStatus.COMPLETED
        ls.append(rec)
        rs.save(r)
    for s in (rs, ls):
        if hasattr(s, "close"):
            s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100000)
    ap.add_argument("--waiting", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="arscale_", dir=a.dir)
    t0 = time.perf_counter()
    build(d, a.runs, a.waiting)
    built = time.perf_counter() - t0
    out = {"runs": a.runs, "waiting": a.waiting, "build_s": built}
    summaries, full, page = [], [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        rs, ls = _open(d)
        if hasattr(rs, "list_run_summaries"):
            n = len(rs.list_run_summaries(status="waiting", limit=10**9))
            assert n == a.waiting, n
            summaries.append(time.perf_counter() - t)
            rs.close()
            ls.close()
        t = time.perf_counter()
        rs, ls = _open(d)
        assert len(rs.list_runs(status=RunStatus.WAITING, limit=100)) == 100
        page.append(time.perf_counter() - t)
        if hasattr(rs, "close"):
            rs.close()
            ls.close()
        t = time.perf_counter()
        rs, ls = _open(d)
        n = len(rs.list_runs(status=RunStatus.WAITING, limit=10**9))
        assert n == a.waiting, n
        full.append(time.perf_counter() - t)
        if hasattr(rs, "close"):
            rs.close()
            ls.close()
    out["reopen_list_summaries_ms"] = median(summaries) * 1e3 if summaries else None
    out["reopen_list_first_100_states_ms"] = median(page) * 1e3
    out["reopen_list_all_waiting_states_ms"] = median(full) * 1e3
    # an unclean re-open (the last process crashed): the index is checked against run files
    rs, ls = _open(d)
    if hasattr(rs, "list_run_summaries"):
        t = time.perf_counter()
        rs2, _ = _open(d)
        rs2.list_run_summaries(status="waiting", limit=10**9)
        out["unclean_reopen_list_summaries_ms"] = (time.perf_counter() - t) * 1e3
    shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
