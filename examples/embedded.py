"""The example workflows embedded in one process, without a daemon: the workflows of
examples/workflows/ on durable file stores under ./embedded-data/, with a scheduler (from
create_scheduled_runtime) resuming timers. `make serve` runs the same workflows in the daemon.

It starts one run of each workflow, then answers every waiting prompt: from the terminal
when there is one, otherwise with the first choice. Runs survive a restart: run it again and
it first lists what is already stored. (agent.py needs a model: without an LLM_CALL handler
its run fails, which the summary shows.)
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from abstractruntime import (
    JsonFileRunStore,
    JsonlLedgerStore,
    RunStatus,
    WaitReason,
    WorkflowSpec,
    create_scheduled_runtime,
)

HERE = Path(__file__).resolve().parent
DATA = Path.cwd() / "embedded-data"


def load_workflows(folder: Path) -> list[WorkflowSpec]:
    found = []
    for path in sorted(folder.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"_example_workflow_{path.stem}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found += [v for v in vars(module).values() if isinstance(v, WorkflowSpec)]
    return found


def answer_for(prompt: str, choices: list[str] | None) -> str:
    if sys.stdin.isatty():
        hint = f" [{'/'.join(choices)}]" if choices else ""
        return input(f"? {prompt}{hint} ").strip() or (choices[0] if choices else "")
    reply = choices[0] if choices else "world"
    print(f"? {prompt} -> {reply} (no terminal: answered automatically)")
    return reply


def _waits_for_an_event(st) -> bool:
    return st.status == RunStatus.WAITING and st.waiting.reason == WaitReason.EVENT and not st.waiting.prompt


def main() -> None:
    workflows = load_workflows(HERE / "workflows")
    rs, ls = JsonFileRunStore(DATA), JsonlLedgerStore(DATA)
    sr = create_scheduled_runtime(run_store=rs, ledger_store=ls, workflows=workflows, poll_interval_s=0.2)
    print(f"stores: {DATA}   workflows: {', '.join(w.workflow_id for w in workflows)}")
    print(f"already stored: {rs.count_by_status() or 'nothing'}")
    started = [sr.run(wf)[0] for wf in workflows]
    try:
        while True:
            states = [sr.get_state(r) for r in started]
            for st in states:
                if st.status == RunStatus.WAITING and st.waiting.prompt:
                    text = answer_for(st.waiting.prompt, st.waiting.choices)
                    sr.respond(st.run_id, {"text": text})
            # Done when every run ended or waits for an event nobody here sends (the expense
            # example waits to be paid: `abstractruntime emit expense_paid --run RUN_ID`).
            if all(s.status.is_terminal or _waits_for_an_event(s) for s in states):
                break
            time.sleep(0.1)
    finally:
        sr.stop()
        rs.close()
        ls.close()
    for rid in started:
        st = sr.get_state(rid)
        print(f"{st.workflow_id:<10} {st.status.value:<10} {st.output or st.error or st.waiting.wait_key}")


if __name__ == "__main__":
    main()
