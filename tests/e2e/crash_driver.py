"""Drives N runs on the JSON-file stores to completion; meant to be SIGKILLed and restarted.

Each run: prep (pure) -> charge (a host effect that appends to effects.log, the outside world)
-> ask (ASK_USER, answered by this driver) -> nap (WAIT_UNTIL, resumed by the scheduler)
-> done. Run ids are fixed, so a restart continues the same 200 runs.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta, timezone

from abstractruntime import (
    Effect,
    EffectOutcome,
    EffectType,
    JsonFileRunStore,
    JsonlLedgerStore,
    RunStatus,
    StepPlan,
    WorkflowSpec,
    create_scheduled_runtime,
)

DATA, N = sys.argv[1], int(sys.argv[2])
PACE = float(os.environ.get("CRASH_PACE", "0.02"))
EFFECTS = os.path.join(DATA, "effects.log")


def charge(run, effect, next_node):
    fd = os.open(EFFECTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{run.run_id} {effect.payload['amount']}\n".encode())
    finally:
        os.close(fd)
    return EffectOutcome.completed({"charged": effect.payload["amount"]})


def prep(run, ctx):
    run.vars["amount"] = int(run.run_id.split("-")[1])
    return StepPlan(node_id="prep", next_node="charge")


def do_charge(run, ctx):
    return StepPlan(
        node_id="charge", effect=Effect("charge", {"amount": run.vars["amount"]}, "receipt"), next_node="ask"
    )  # type: ignore[arg-type]


def ask(run, ctx):
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}, "answer"), next_node="nap")


def nap(run, ctx):
    until = (datetime.now(timezone.utc) + timedelta(milliseconds=30)).isoformat()
    return StepPlan(node_id="nap", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="done")


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={"receipt": run.vars["receipt"], "answer": run.vars["answer"]})


WF = WorkflowSpec(
    workflow_id="crashy",
    entry_node="prep",
    nodes={"prep": prep, "charge": do_charge, "ask": ask, "nap": nap, "done": done},
)


def main() -> None:
    sr = create_scheduled_runtime(
        run_store=JsonFileRunStore(DATA),
        ledger_store=JsonlLedgerStore(DATA),
        workflows=[WF],
        effect_handlers={"charge": charge},
        poll_interval_s=0.05,
    )
    rt = sr.runtime
    for i in range(N):
        rid = f"run-{i:03d}"
        if rt.run_store.load(rid) is None:
            rt.start(workflow=WF, run_id=rid)
    while True:
        pending = 0
        for i in range(N):
            rid = f"run-{i:03d}"
            st = rt.get_state(rid)
            if st.status == RunStatus.COMPLETED:
                continue
            pending += 1
            if st.status == RunStatus.RUNNING:
                rt.tick(workflow=WF, run_id=rid)
            elif st.status == RunStatus.WAITING and st.waiting.prompt:
                rt.resume(workflow=WF, run_id=rid, wait_key=st.waiting.wait_key, payload={"text": "ok"})
            else:
                continue
            time.sleep(PACE)  # spread the work out so that kills land in the middle of it
        if not pending:
            break
        time.sleep(0.01)
    print("ALL DONE", flush=True)
    sr.stop()


if __name__ == "__main__":
    main()
