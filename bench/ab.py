"""This tree against an earlier commit of itself, interleaved in the same run: did a change make
the kernel or the daemon slower?

The earlier commit is checked out into a temporary git worktree; each round runs the kernel
workload (bench/workload.py) under both trees, alternating which goes first, for each store,
and optionally the daemon bench's quick mode. Ratios are new/old, the median of the rounds.

    python bench/ab.py --base fd78523 [--rounds 5] [--stores mem,jsonfile,sqlite] [--daemon]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, median, save  # noqa: E402

SCRATCH = tempfile.mkdtemp(prefix="ar-ab-results-")


def flat(res: dict, prefix: str = "") -> dict:
    """The daemon bench's nested figures as one row: rtt.ratio, concurrent.files.median, ..."""
    row: dict = {}
    for k, v in res.items():
        if isinstance(v, dict):
            row.update(flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)):
            row[f"{prefix}{k}"] = v
    return row


def run(tree: Path, script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), ABSTRACTRUNTIME_BENCH_RESULTS=SCRATCH)
    p = subprocess.run(
        [sys.executable, str(tree / "bench" / script), *args], env=env, capture_output=True, text=True, timeout=1800
    )
    if p.returncode != 0:
        raise RuntimeError(f"{tree} {script} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the earlier commit to compare against")
    ap.add_argument(
        "--new", default=None, help="a commit to measure instead of the working tree (which can then change)"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stores", default="mem,jsonfile,sqlite")
    ap.add_argument("--n-mem", type=int, default=2000)
    ap.add_argument("--n-disk", type=int, default=300)
    ap.add_argument("--daemon", action="store_true", help="also the daemon bench (--quick) under both")
    a = ap.parse_args()
    old = Path(tempfile.mkdtemp(prefix="ar-ab-")) / "old"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), a.base], cwd=ROOT, check=True)
    new = ROOT
    if a.new:
        new = old.parent / "new"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(new), a.new], cwd=ROOT, check=True)
    try:
        rows = []
        for store in a.stores.split(","):
            n = a.n_mem if store == "mem" else a.n_disk
            ratios, new_rates, old_rates = [], [], []
            for i in range(a.rounds):
                trees = [("new", new), ("old", old)] if i % 2 == 0 else [("old", old), ("new", new)]
                got = {name: run(tree, "workload.py", "--store", store, "--n", str(n)) for name, tree in trees}
                new_rates.append(got["new"]["runs_s"])
                old_rates.append(got["old"]["runs_s"])
                ratios.append(got["new"]["runs_s"] / got["old"]["runs_s"])
            row = {
                "store": store,
                "new_runs_per_s": round(median(new_rates)),
                "old_runs_per_s": round(median(old_rates)),
                "new_over_old": round(median(ratios), 3),
                "rounds": [round(r, 3) for r in ratios],
            }
            rows.append(row)
            print(
                f"kernel {store:<9} new {row['new_runs_per_s']:>6} runs/s  old {row['old_runs_per_s']:>6} runs/s  "
                f"new/old {row['new_over_old']:.3f}  (rounds {', '.join(f'{r:.2f}' for r in ratios)})",
                flush=True,
            )
        daemon = []
        if a.daemon:
            for i in range(a.rounds):
                trees = [("new", new), ("old", old)] if i % 2 == 0 else [("old", old), ("new", new)]
                for name, tree in trees:
                    res = run(tree, "daemon_bench.py", "--quick")
                    daemon.append({"tree": name, **flat(res)})
                    d = daemon[-1]
                    print(
                        f"daemon {name}: resume RTT {d.get('rtt.daemon_p50_us', 0):.0f} us "
                        f"({d.get('rtt.ratio', 0):.2f}x echo), 32 clients files "
                        f"{d.get('concurrent.files.median', 0):.0f} runs/s, sqlite "
                        f"{d.get('concurrent.sqlite.median', 0):.0f}, memory {d.get('concurrent.memory.median', 0):.0f}; "
                        f"subscriber p99 {d.get('subscriber.p99_ms', 0):.2f} ms",
                        flush=True,
                    )
        save("ab", {"base": a.base, "kernel": rows, "daemon": daemon})
    finally:
        for tree in {old, new} - {ROOT}:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)


if __name__ == "__main__":
    main()
