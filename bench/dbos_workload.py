"""The 32-client workload through DBOS Transact, for bench/postgres_bench.py (which runs this
script in a venv holding `dbos`: .bench-venvs/dbos).

Each client thread starts a workflow that waits on `DBOS.recv`, resumes it with `DBOS.send`,
and waits for its result: the same start -> wait -> answer -> complete as our "ask" runs.
DBOS is a library inside the application's process, so there is no socket between the
clients and the engine (ours has one: its clients are other processes).

    python bench/dbos_workload.py --url postgresql://postgres@/db?host=/sock --clients 32 --per-client 20
"""

from __future__ import annotations

import argparse
import json
import threading
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the system database (SQLAlchemy URL)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    import logging

    from dbos import DBOS

    DBOS(config={"name": "arbench", "system_database_url": args.url, "log_level": "WARNING"})
    logging.getLogger("dbos").setLevel(logging.WARNING)

    @DBOS.workflow()
    def ask(x: int) -> dict:
        answer = DBOS.recv("answer", timeout_seconds=120)
        return {"answer": answer, "x": x}

    DBOS.launch()

    def one(x: int) -> bool:
        handle = DBOS.start_workflow(ask, x)
        DBOS.send(handle.get_workflow_id(), {"text": "yes"}, "answer")
        return handle.get_result()["answer"] == {"text": "yes"}

    for i in range(args.warmup):
        one(i)
    done = [0] * args.clients

    def client(n: int) -> None:
        for i in range(args.per_client):
            done[n] += one(n * 100000 + i)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.perf_counter() - t
    DBOS.destroy()
    print(json.dumps({"runs": sum(done), "seconds": took, "runs_s": sum(done) / took}))


if __name__ == "__main__":
    main()
