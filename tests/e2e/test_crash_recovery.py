"""SIGKILL at random moments, restart, again and again: nothing committed is lost, nothing
recorded runs twice, every run finishes exactly once, every ledger verifies."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from abstractruntime import JsonFileRunStore, JsonlLedgerStore, RunStatus, verify_ledger_chain
from conftest import ROOT

DRIVER = Path(__file__).with_name("crash_driver.py")
N = 200


def _spawn(data: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(data), str(N)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_again_and_again(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(int(os.environ.get("CRASH_SEED", "1234")))
    kills = 0
    for _ in range(25):
        p = _spawn(data)
        time.sleep(rng.uniform(0.2, 0.7))
        if p.poll() is not None:
            out, err = p.communicate()
            assert p.returncode == 0, err
            break
        p.send_signal(signal.SIGKILL)
        p.communicate()
        kills += 1
    p = _spawn(data)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0 and "ALL DONE" in out, err
    assert kills >= 8, "the driver finished too fast to be killed mid-flight"

    rs, ls = JsonFileRunStore(data), JsonlLedgerStore(data)
    executions = collections.Counter(line.split()[0] for line in (data / "effects.log").read_text().splitlines())
    for i in range(N):
        rid = f"run-{i:03d}"
        st = rs.load(rid)
        assert st.status == RunStatus.COMPLETED, (rid, st.status, st.error)
        assert st.output == {"receipt": {"charged": i}, "answer": {"text": "ok"}}
        recs = ls.list(rid)
        assert verify_ledger_chain(recs)["ok"], rid
        assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
        assert sum(1 for r in recs if r["node_id"] == "done" and r["status"] == "completed") == 1, rid
        charge = [r for r in recs if r["node_id"] == "charge"]
        done_at = [k for k, r in enumerate(charge) if r["status"] == "completed"]
        assert len(done_at) == 1, (rid, [r["status"] for r in charge])
        # Every execution was preceded by a durable "started" record, and once the result was
        # recorded no further attempt started: a recorded effect never ran again.
        started = sum(1 for r in charge if r["status"] == "started")
        assert executions[rid] <= started, (rid, executions[rid], started)
        assert all(r["status"] != "started" for r in charge[done_at[0] + 1 :]), rid
    assert len(list(data.glob("run_*.json"))) == N
    assert rs.count_by_status() == {"completed": N}
    rs.close()
    ls.close()
