"""A workload on a durable store that prints every commit it got an acknowledgement for; run
under $ABSTRACTRUNTIME_FAULTS, it meets failing writes and is killed at an injected crash point.

    python fault_driver.py files|sqlite DATA N_RUNS PREFIX

Each run: `pay` (a host effect: its records are appended on their own) -> `ask` (waits) ->
answered -> `done`. Four threads drive the runs; a commit that fails (StorageUnavailableError) is
tried again later. Lines on stdout, flushed one by one:

    ACK <run_id> <status> <ledger records>     the commit returned: it must survive anything
    FAIL <run_id> <errno>                        it raised: it may or may not have landed
    DONE                                         every run completed
"""

from __future__ import annotations

import sys
import threading

from abstractruntime import (
    Effect,
    EffectOutcome,
    EffectType,
    JsonFileRunStore,
    JsonlLedgerStore,
    RunStatus,
    Runtime,
    SqliteDatabase,
    SqliteLedgerStore,
    SqliteRunStore,
    StepPlan,
    WorkflowSpec,
)
from abstractruntime.core.errors import RunNotWaitingError, StorageUnavailableError

KIND, DATA, N, PREFIX = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

WF = WorkflowSpec(
    workflow_id="faulty",
    entry_node="pay",
    nodes={
        "pay": lambda run, ctx: StepPlan(node_id="pay", effect=Effect("pay", {"n": 1}, "paid"), next_node="ask"),  # type: ignore[arg-type]
        "ask": lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}, "ans"), next_node="done"
        ),
        "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"ans": run.vars["ans"]}),
    },
)

_out = threading.Lock()


def say(*parts: object) -> None:
    with _out:
        sys.stdout.write(" ".join(map(str, parts)) + "\n")
        sys.stdout.flush()


def open_stores():
    if KIND == "files":
        return JsonFileRunStore(DATA), JsonlLedgerStore(DATA)
    db = SqliteDatabase(f"{DATA}/runtime.sqlite3")
    return SqliteRunStore(db), SqliteLedgerStore(db)


def main() -> None:
    try:
        rs, ls = open_stores()
    except OSError as e:  # an injected failure at open: the store refuses to open, nothing is changed
        say("OPENFAIL", e)
        sys.exit(3)
    rt = Runtime(run_store=rs, ledger_store=ls, effect_handlers={"pay": lambda run, eff: EffectOutcome.completed({"ok": 1})})

    def drive(ids) -> None:
        todo = list(ids)
        while todo:
            rid = todo.pop(0)
            try:
                st = rs.load(rid)
                if st is None:
                    st = _start(rt, rid)
                elif st.status == RunStatus.RUNNING:
                    st = rt.tick(workflow=WF, run_id=rid)
                elif st.status == RunStatus.WAITING:
                    st = rt.resume(workflow=WF, run_id=rid, wait_key=None, payload={"text": "yes"})
                say("ACK", rid, st.status.value, ls.head(rid)[0])
                if st.status != RunStatus.COMPLETED:
                    todo.append(rid)
            except StorageUnavailableError as e:
                say("FAIL", rid, e.data.get("errno"))
                todo.append(rid)
            except RunNotWaitingError:
                todo.append(rid)

    ids = [f"{PREFIX}-r{i:03d}" for i in range(N)]
    threads = [threading.Thread(target=drive, args=(ids[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say("DONE")
    rs.close()
    ls.close()


def _start(rt, rid):
    rt.start(workflow=WF, run_id=rid)
    return rt.tick(workflow=WF, run_id=rid)


if __name__ == "__main__":
    main()
