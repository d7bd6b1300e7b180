"""Our kernel against the published package (the peer) on the same workload, interleaved.

Each round runs the peer and ours back to back (alternating which goes first), each in a
fresh interpreter, and the reported ratio is the median of the per-round ratios: this machine
is shared and its disk swings several-fold within minutes, so only same-round ratios mean much.

    python bench/compare.py [--rounds 5] [--stores mem,jsonfile,sqlite]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, run_json, save  # noqa: E402

TARGETS = {"mem": 2.0, "jsonfile": 1.5, "sqlite": 1.0}
NOTES = {
    "mem": "in-memory stores",
    "jsonfile": "JSON files; ours fsyncs every commit, the peer never fsyncs",
    "sqlite": "SQLite; ours synchronous=FULL (every commit durable), the peer NORMAL",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stores", default="mem,jsonfile,sqlite")
    ap.add_argument("--n-mem", type=int, default=2000)
    ap.add_argument("--n-disk", type=int, default=300)
    a = ap.parse_args()
    table = []
    for store in a.stores.split(","):
        n = a.n_mem if store == "mem" else a.n_disk
        rounds = []
        for i in range(a.rounds):
            order = ["peer", "ours"] if i % 2 == 0 else ["ours", "peer"]
            got = {impl: run_json(impl, "workload.py", "--store", store, "--n", str(n)) for impl in order}
            rounds.append(got)
            ratio = got["ours"]["runs_s"] / got["peer"]["runs_s"]
            print(
                f"  {store} round {i + 1}: peer {got['peer']['runs_s']:.0f} runs/s, ours {got['ours']['runs_s']:.0f} runs/s, x{ratio:.2f}",
                flush=True,
            )
        row = {
            "store": store,
            "n": n,
            "peer_runs_s": median([r["peer"]["runs_s"] for r in rounds]),
            "ours_runs_s": median([r["ours"]["runs_s"] for r in rounds]),
            "peer_p50_us": median([r["peer"]["p50_us"] for r in rounds]),
            "ours_p50_us": median([r["ours"]["p50_us"] for r in rounds]),
            "ratio": median([r["ours"]["runs_s"] / r["peer"]["runs_s"] for r in rounds]),
            "ratio_min": min(r["ours"]["runs_s"] / r["peer"]["runs_s"] for r in rounds),
            "ratio_max": max(r["ours"]["runs_s"] / r["peer"]["runs_s"] for r in rounds),
            "target": TARGETS[store],
            "rounds": rounds,
        }
        table.append(row)
    save("compare", {"rows": table})
    print()
    print("| workload | peer runs/s | ours runs/s | ours/peer (median, range) | target |")
    print("|---|---|---|---|---|")
    for r in table:
        print(
            f"| {NOTES[r['store']]}, seq, N={r['n']} | {r['peer_runs_s']:.0f} | {r['ours_runs_s']:.0f} | "
            f"**{r['ratio']:.2f}x** ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | >= {r['target']}x |"
        )


if __name__ == "__main__":
    main()
