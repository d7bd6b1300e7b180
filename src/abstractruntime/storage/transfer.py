"""Moving runs between stores: every run's checkpoint and ledger as JSON lines, and back.

One line per run: `{"run": <RunState.to_dict()>, "ledger": [<records as stored>]}`, after a
first line `{"abstractruntime_export": 1, "runs": N}`. Importing appends the records to the
target's ledger in order: a record's hash covers its content, its seq and the previous hash,
so the target recomputes exactly the chain the source had, and `verify_ledger_chain` holds
there too. A run the target already has is skipped (an import can be run again).

The same pair is the documented backup: `abstractruntime export > backup.jsonl`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, TextIO

from ..core.models import RunState, StepRecord
from .base import LedgerStore, RunStore

FORMAT = 1


def export_runs(runs: RunStore, ledger: LedgerStore, out: TextIO) -> int:
    """Write every run of `runs` (oldest first) with its ledger to `out`; returns the count."""
    summaries = runs.list_run_summaries(limit=None)
    out.write(json.dumps({"abstractruntime_export": FORMAT, "runs": len(summaries)}) + "\n")
    n = 0
    for s in summaries:
        run = runs.load(s.run_id)
        if run is None:
            continue
        out.write(json.dumps({"run": run.to_dict(), "ledger": ledger.list(s.run_id)}, separators=(",", ":")) + "\n")
        n += 1
    return n


class ExportFormatError(ValueError):
    """A line that is not an export line (the message names the line)."""


def read_export(lines: TextIO) -> Iterator[Dict[str, Any]]:
    """The run entries of an export, checked line by line."""
    first = lines.readline()
    try:
        head = json.loads(first) if first.strip() else None
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("abstractruntime_export") != FORMAT:
        raise ExportFormatError('line 1: not an abstractruntime export (expected {"abstractruntime_export": 1, ...})')
    for n, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("run"), dict):
                raise ValueError("no run")
            if not isinstance(entry.get("ledger"), list):
                raise ValueError("no ledger list")
        except ValueError as e:
            raise ExportFormatError(f"line {n}: not a run entry ({e})") from None
        yield entry


def import_runs(runs: RunStore, lines: TextIO, *, on_skip: Optional[Any] = None) -> Dict[str, int]:
    """Commit every run of an export into `runs` (a unit with its ledger): the checkpoint and
    its records together, in their order. Returns {"imported": n, "skipped": n}."""
    done = {"imported": 0, "skipped": 0}
    for entry in read_export(lines):
        run = RunState.from_dict(entry["run"])
        if runs.load(run.run_id) is not None:
            done["skipped"] += 1
            if on_skip is not None:
                on_skip(run.run_id)
            continue
        records: List[StepRecord] = [StepRecord.from_dict(r) for r in entry["ledger"]]
        runs.commit(run, records)
        done["imported"] += 1
    return done
