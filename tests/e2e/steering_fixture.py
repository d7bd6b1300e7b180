"""What the steering tests share: a daemon serving workflows written for them, the CLI against it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from daemon_fixture import ROOT, DaemonProcess

from abstractruntime.client.connection import env_with_package

LIFE = '''
import os
from pathlib import Path

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
from abstractruntime.integrations.abstractcore import tool

HERE = Path(__file__).parent


@tool
def charge(amount: int) -> dict:
    """Charge a card: every call leaves a line in charges.log."""
    with open(HERE / "charges.log", "a") as f:
        f.write(f"{amount}\\n")
    return {"charged": amount}


def quote(run, ctx):
    calls = [{"name": "charge", "arguments": {"amount": run.vars.get("amount", 10)}, "call_id": "c1"}]
    return StepPlan(node_id="quote", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, "charge"), next_node="ask")


def ask(run, ctx):
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Ship it?"}, "ok"), next_node="book")


def book(run, ctx):
    BROKEN
    return StepPlan(node_id="book", complete_output={"ok": run.vars["ok"], "qty": run.vars.get("qty", 1)})


shop = WorkflowSpec(workflow_id="shop", entry_node="quote", nodes={"quote": quote, "ask": ask, "book": book})


def first(run, ctx):
    # A long first step: it waits for a file the test writes (never a fixed sleep).
    gate = HERE / "gate"
    deadline = __import__("time").time() + 60
    while not gate.exists() and __import__("time").time() < deadline:
        __import__("time").sleep(0.02)
    return StepPlan(node_id="first", complete_output={"passed": True})


gated = WorkflowSpec(workflow_id="gated", entry_node="first", nodes={"first": first})


def spawn(run, ctx):
    child = {"workflow_id": "greeting", "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, child, "child"), next_node="end")


parent = WorkflowSpec(
    workflow_id="parent",
    entry_node="spawn",
    nodes={"spawn": spawn, "end": lambda run, ctx: StepPlan(node_id="end", complete_output=run.vars["child"])},
)
'''


def write_workflows(folder: Path, broken: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "workflows" / "expense.py", folder / "expense.py")
    shutil.copy(ROOT / "examples" / "workflows" / "greeting.py", folder / "greeting.py")
    body = LIFE.replace("BROKEN", 'raise RuntimeError("booking API down")' if broken else "pass")
    (folder / "life.py").write_text(body)
    return folder


def cli(d: DaemonProcess, *args, stdin=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "abstractruntime", *args, "--socket", d.socket],
        cwd=d.tmp,
        env={**env_with_package(), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )



def serve_life(tmp_path: Path):
    """A daemon serving the steering workflows (the `life` fixture of tests/e2e/conftest.py)."""
    wf = write_workflows(tmp_path / "wf")
    d = DaemonProcess(tmp_path, "unix", workflows=wf).start()
    try:
        yield d
    finally:
        d.stop()


def _epoch(iso):
    from abstractruntime.core.timeutil import iso_to_epoch

    return iso_to_epoch(iso)
