"""CPU work per operation as instructions counted by valgrind: the same figure on a busy and on
a quiet machine, so a change of a few per cent shows (a timed bench here swings by a third).

Each case runs its operation `--n` times after a warm-up, twice (n and 2n), in a fresh
interpreter under `valgrind --tool=cachegrind --cache-sim=no`; the difference divided by n is
the cost of one operation, without start-up and imports.

    python bench/instructions.py [--n 300] [--cases kernel,resume,timer,due64]
    python bench/instructions.py --tree /tmp/old   # another checkout's src/, for a before/after

Cases: `kernel` one run of the kernel workload (start, tick, resume; in-memory stores);
`resume` one `Runtime.resume` of a run that asks again, through the daemon's Hub (in-memory
store, the event log listening); `timer` one due `WAIT_UNTIL` run resumed by
`Scheduler.poll_once`, with the start and first tick that made it wait (in-memory store);
`due64` one of 64 runs due at once resumed by one `poll_once` (the poll's cost alone, per run).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CASES = {
    "kernel": """
import sys; sys.path.insert(0, {bench!r})
from workload import WF, RunStatus, Runtime, InMemoryRunStore, InMemoryLedgerStore
rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
def op():
    rid = rt.start(workflow=WF)
    st = rt.tick(workflow=WF, run_id=rid)
    rt.resume(workflow=WF, run_id=rid, wait_key=st.waiting.wait_key, payload={{"text": "yes"}})
""",
    "resume": """
import tempfile
from abstractruntime.daemon.hub import Hub
hub = Hub(data_dir=tempfile.mkdtemp() + "/data", workflow_dirs=[{flows!r}], store="memory", workers=1)
rt = hub.runtime
rid = rt.start_and_tick(workflow=rt.workflow("again"), vars={{}}).run_id
def op():
    rt.resume(workflow=None, run_id=rid, wait_key=None, payload={{"text": "x"}})
""",
    "timer": """
import sys; sys.path.insert(0, {bench!r})
from datetime import datetime, timezone
from timers import WF
from abstractruntime import create_scheduled_runtime
from abstractruntime.core.clock import ManualClock
from abstractruntime.storage import InMemoryLedgerStore, InMemoryRunStore
clock = ManualClock(1_000_000.0)
sr = create_scheduled_runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), workflows=[WF],
                              auto_start=False, clock=clock)
def op():
    # a run starts and waits one second; the second passes; the scheduler resumes it
    until = datetime.fromtimestamp(clock.time() + 1, timezone.utc).isoformat()
    rid = sr.runtime.start(workflow=WF, vars={{"until": until}})
    sr.runtime.tick(workflow=WF, run_id=rid)
    clock.advance(2)
    assert sr.scheduler.poll_once() == 1
""",
    "due64": """
import sys; sys.path.insert(0, {bench!r})
from datetime import datetime, timezone
from timers import WF
from abstractruntime import create_scheduled_runtime
from abstractruntime.core.clock import ManualClock
from abstractruntime.storage import open_stores
clock = ManualClock(1_000_000.0)
u = open_stores("memory")
sr = create_scheduled_runtime(run_store=u.runs, ledger_store=u.ledger, workflows=[WF], auto_start=False, clock=clock)
POLL = {poll!r}
def op():
    # 64 runs start and wait one second; the second passes; the scheduler resumes them all
    # (with POLL False, only the first half: the difference is what the resumes cost)
    until = datetime.fromtimestamp(clock.time() + 1, timezone.utc).isoformat()
    for _ in range(64):
        rid = sr.runtime.start(workflow=WF, vars={{"until": until}})
        sr.runtime.tick(workflow=WF, run_id=rid)
    if POLL:
        clock.advance(2)
        assert sr.scheduler.poll_once() == 64
""",
}

DRIVER = """
import sys
sys.path.insert(0, {src!r})
{setup}
for _ in range(50):
    op()
for _ in range({n}):
    op()
"""


def count(src: Path, case: str, n: int) -> int:
    code = DRIVER.format(
        src=str(src),
        n=n,
        setup=CASES["due64" if case.startswith("due64") else case].format(
            bench=str(HERE), flows=str(HERE / "daemon_workflows"), poll=case == "due64"
        ),
    )
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cg.out"
        p = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={out}",
                sys.executable,
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONHASHSEED="0"),
        )
        m = re.search(r"I\s+refs:\s+([\d,]+)", p.stderr)
        if p.returncode != 0 or m is None:
            raise RuntimeError(f"valgrind failed for {case}:\n{p.stderr[-2000:]}")
        return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--tree", default=str(ROOT), help="a checkout whose src/ to measure")
    a = ap.parse_args()
    src = Path(a.tree) / "src"
    for case in a.cases.split(","):
        if case == "due64":  # the resumes alone: a poll of 64 due runs, less making them wait
            n = max(1, a.n // 16)
            with_poll = count(src, "due64", 2 * n) - count(src, "due64", n)
            without = count(src, "due64-setup", 2 * n) - count(src, "due64-setup", n)
            per = (with_poll - without) / n / 64
            print(f"{case:<8} {per / 1e6:.3f}M instructions per due run resumed ({a.tree})", flush=True)
            continue
        per = (count(src, case, 2 * a.n) - count(src, case, a.n)) / a.n
        print(f"{case:<8} {per / 1e6:.3f}M instructions per operation ({a.tree})", flush=True)


if __name__ == "__main__":
    main()
