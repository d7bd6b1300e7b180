"""Every benchmark of the kernel, with the published package measured in the same run.

Prints a markdown summary (pasted into docs/performance.md) and keeps raw JSON in
bench/results/. Takes several minutes; the disk of a shared machine is noisy, so each
comparison is a same-round ratio (see compare.py).

    python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import HERE, median, run_json, save  # noqa: E402


def timers(quick: bool) -> list:
    rows = []
    reps = 1 if quick else 3
    for impl, n, stagger in [
        ("ours", 10000, None),
        ("ours", 1000, None),
        ("peer", 1000, None),
        ("ours", 10000, "1.0"),
        ("peer", 1000, "1.0"),
    ]:
        args = ["--n", str(n)] + (["--stagger", stagger] if stagger else [])
        got = [run_json(impl, "timers.py", *args) for _ in range(reps)]
        row = {
            "impl": impl,
            "n": n,
            "mode": got[0]["mode"],
            "p50_ms": median([g["lag_p50_ms"] for g in got]),
            "p99_ms": median([g["lag_p99_ms"] for g in got]),
            "all_resumed": all(g["all_resumed"] for g in got),
        }
        print(
            f"  timers {impl} n={n} {row['mode']}: p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms", flush=True
        )
        rows.append(row)
    return rows


def scale(quick: bool) -> list:
    rows = []
    plan = [("peer", 20000, 4000), ("ours", 20000, 4000)] + ([] if quick else [("ours", 100000, 20000)])
    for impl, runs, waiting in plan:
        got = run_json(impl, "scale.py", "--runs", str(runs), "--waiting", str(waiting), "--repeats", "3")
        got["impl"] = impl
        print(f"  scale {impl} {runs}/{waiting}: {got}", flush=True)
        rows.append(got)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, no 100k-run store")
    a = ap.parse_args()
    print("== kernel workload (bench/compare.py)", flush=True)
    subprocess.run([sys.executable, str(HERE / "compare.py"), "--rounds", "3" if a.quick else "7"], check=True)
    print("\n== timers (bench/timers.py)", flush=True)
    t = timers(a.quick)
    print("\n== store scale (bench/scale.py)", flush=True)
    s = scale(a.quick)
    print("\n== hot reload (bench/reload_bench.py)", flush=True)
    subprocess.run([sys.executable, str(HERE / "reload_bench.py"), "--edits", "20" if a.quick else "50"], check=True)
    print("\n== the speed targets, their floors and peers, and the plot (bench/targets.py)", flush=True)
    subprocess.run([sys.executable, str(HERE / "targets.py"), *(["--quick"] if a.quick else [])], check=True)
    save("timers", {"rows": t})
    save("scale", {"rows": s})
    print("\n| timers: runs resumed by the scheduler | p50 lag | p99 lag |")
    print("|---|---|---|")
    for r in t:
        print(f"| {r['impl']}, {r['n']} runs, {r['mode']} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms |")
    print(
        "\n| file store re-open | runs / waiting | open + list waiting summaries | open + first 100 states | open + all waiting states | unclean open + summaries |"
    )
    print("|---|---|---|---|---|---|")
    for r in s:
        summ = r.get("reopen_list_summaries_ms")
        unclean = r.get("unclean_reopen_list_summaries_ms")
        print(
            f"| {r['impl']} | {r['runs']} / {r['waiting']} | {f'{summ:.0f} ms' if summ else 'n/a'} | "
            f"{r['reopen_list_first_100_states_ms']:.0f} ms | {r['reopen_list_all_waiting_states_ms']:.0f} ms | "
            f"{f'{unclean:.0f} ms' if unclean else 'n/a'} |"
        )


if __name__ == "__main__":
    main()
