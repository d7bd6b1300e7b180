"""Helpers shared by the benchmarks: percentiles, the peer's venv, running a bench script
under either package. Stdlib only: these scripts also run inside the peer's venv."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_VERSION = "0.13.0"
PEER_VENV = Path(os.environ.get("AR_PEER_VENV", ROOT / ".bench-venvs" / f"peer-{PEER_VERSION}"))


def pct(xs, p):
    s = sorted(xs)
    if not s:
        return float("nan")
    return s[max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))]


def median(xs):
    return statistics.median(xs)


def peer_python() -> str:
    """The interpreter of a venv holding the published package (installed --no-deps: its kernel
    needs nothing else)."""
    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        venv.create(PEER_VENV, with_pip=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--no-deps", f"abstractruntime=={PEER_VERSION}"], check=True
        )
    return str(py)


def run_json(impl: str, script: str, *args: str, timeout: float = 1800) -> dict:
    """Run `bench/<script>` under `impl` ('ours' or 'peer'); it prints one JSON line last."""
    env = dict(os.environ)
    if impl == "ours":
        py = sys.executable
        env["PYTHONPATH"] = str(ROOT / "src")
    else:
        py = peer_python()
        env.pop("PYTHONPATH", None)
    p = subprocess.run([py, str(HERE / script), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{impl} {script} {' '.join(args)} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def save(name: str, payload: dict) -> Path:
    # A driver running other benches (bench/ab.py) points them elsewhere, so that their partial
    # runs do not overwrite the figures the docs quote.
    out = Path(os.environ.get("ABSTRACTRUNTIME_BENCH_RESULTS") or HERE / "results")
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path
