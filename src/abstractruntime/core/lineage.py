"""Where a run's state comes from: the record that opens its ledger, and forks.

Every run's ledger opens with an origin record holding the state the run began from: `started`
(its entry node and initial vars) for a new run, `forked` for a fork (the source run, the seq
and hash of the source record, and the state rebuilt there). A fork's state is rebuilt by
*replay*: the source's nodes run again, under the code loaded now, from the source's origin
state, and every effect they request is answered with the result the source recorded at that
step; nothing outside the run happens again. Replay stops at the first step the source had not
finished by the fork point (an effect without a recorded result, a wait without its answer, a
failure), so the fork always begins at a node boundary and runs that step live.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .errors import InvalidParamsError
from .models import RunState, RunStatus, StepPlan, StepRecord

if TYPE_CHECKING:
    from .spec import WorkflowSpec

ORIGINS = ("started", "forked")


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (vars are JSON by contract; a record must not share them)."""
    return json.loads(json.dumps(value))


def start_record(run: RunState) -> StepRecord:
    """The record that opens a new run's ledger: the state it starts from."""
    rec = StepRecord.start(run=run, node_id=run.current_node, effect=None)
    rec.result = {"started": {"node": run.current_node, "steps": run.steps, "vars": copy_json(run.vars)}}
    rec.ended_at = rec.started_at
    return rec


def origin_of(records: List[Dict[str, Any]]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """("started" | "forked", its entry) from the record that opens a ledger, if it has one."""
    if not records:
        return None
    result = records[0].get("result")
    if isinstance(result, dict):
        for key in ORIGINS:
            if isinstance(result.get(key), dict):
                return key, result[key]
    return None


def replay(
    workflow: WorkflowSpec, source: RunState, records: List[Dict[str, Any]], seq: int, ctx: Any, new_run_id: str
) -> Tuple[RunState, int]:
    """The state `source` had after its ledger record `seq`, rebuilt for a new run under
    `workflow` (the code loaded now); returns it and the number of steps replayed.

    Raises InvalidParamsError when it cannot be rebuilt: no origin record, or the current code
    asks, at a replayed step, for another effect than the one the source recorded."""
    origin = origin_of(records)
    if origin is None:
        raise InvalidParamsError(
            f"run {source.run_id} cannot be forked: its ledger does not open with the record of its initial "
            "state (a Runtime records it with record_origin=True, as the daemon does)",
            run_id=source.run_id,
        )
    init = origin[1]
    run = RunState(
        run_id=new_run_id,
        workflow_id=source.workflow_id,
        status=RunStatus.RUNNING,
        current_node=str(init.get("node") or workflow.entry_node),
        vars=copy_json(init.get("vars") or {}),
        actor_id=source.actor_id,
        session_id=source.session_id,
        workflow_version=workflow.version,
        last_version=workflow.version,
        steps=int(init.get("steps") or 0),
    )
    by_step: Dict[int, List[Dict[str, Any]]] = {}
    for r in records[1:seq]:
        if isinstance(r.get("step"), int):
            by_step.setdefault(r["step"], []).append(r)
    replayed = 0
    while run.status == RunStatus.RUNNING:
        s = run.steps + 1
        recs = by_step.get(s)
        if not recs:
            break  # the source had not begun this step by the fork point
        if any(_key(r) == "retried" for r in recs):
            run.steps = s  # a failed attempt that a retry replaced: the retry is the next step
            continue
        before = copy_json(run.vars)
        node_id = run.current_node
        if not _replay_step(workflow, run, node_id, s, recs, ctx):
            run.vars, run.steps, run.current_node = before, s - 1, node_id  # runs live instead
            break
        replayed += 1
    return run, replayed


def _replay_step(
    workflow: WorkflowSpec, run: RunState, node_id: str, s: int, recs: List[Dict[str, Any]], ctx: Any
) -> bool:
    """Step `s` again with its recorded outcome; False: the source did not finish it (or the
    current code goes elsewhere there), so the fork runs it live."""
    handler = workflow.nodes.get(node_id)
    if handler is None:
        raise InvalidParamsError(
            f"cannot fork here: step {s} ran node {node_id!r}, which workflow {workflow.workflow_id!r} "
            f"no longer has (nodes: {', '.join(workflow.nodes)}); fork from an earlier seq",
            node_id=node_id,
        )
    run.steps = s
    try:
        plan = handler(run, ctx)
    except Exception as e:  # the node's own bug: say where, and change nothing
        raise InvalidParamsError(
            f"cannot fork here: replaying step {s}, node {node_id!r} raised {type(e).__name__}: {e}",
            node_id=node_id,
        ) from None
    if not isinstance(plan, StepPlan):
        raise InvalidParamsError(f"cannot fork here: replaying step {s}, node {node_id!r} returned no StepPlan")
    if plan.complete_output is not None:
        if not any(_key(r) == "output" for r in recs):
            return False
        run.status, run.output = RunStatus.COMPLETED, plan.complete_output
        return True
    nxt = plan.next_node
    if nxt is not None and nxt not in workflow.nodes:
        return False
    if plan.effect is None:
        if nxt is None:
            return False
        run.current_node = nxt
        return True
    asked = plan.effect.to_dict()
    done = [r for r in recs if isinstance(r.get("effect"), dict)]
    if not done:
        return False
    recorded = done[-1]["effect"]
    if (recorded.get("type"), recorded.get("payload")) != (asked["type"], asked["payload"]):
        raise InvalidParamsError(
            f"cannot fork here: at step {s} node {node_id!r} now asks for {asked['type']!r} "
            f"{json.dumps(asked['payload'], default=str)[:200]}, but run recorded {recorded.get('type')!r} "
            f"{json.dumps(recorded.get('payload'), default=str)[:200]}; fork from an earlier seq",
            node_id=node_id,
            step=s,
        )
    last = done[-1]
    if last.get("status") == "completed":
        return _continue(run, plan.effect.result_key, last.get("result"), nxt, workflow)
    if last.get("status") != "waiting":
        return False  # failed, or started and never finished: this step runs live
    answer = next((r for r in recs if _key(r) in ("resumed", "timed_out")), None)
    if answer is None:
        return False  # still waiting at the fork point: the fork asks again
    body = answer["result"][_key(answer)]
    wait = (last.get("result") or {}).get("wait") or {}
    to = body.get("to_node") or wait.get("resume_to_node") or nxt
    for r in recs:  # a migration moved where the answer resumes
        if _key(r) == "migrated":
            to = r["result"]["migrated"].get("to_node") or to
    return _continue(run, wait.get("result_key") or plan.effect.result_key, body.get("payload"), to, workflow)


def _continue(
    run: RunState, result_key: Optional[str], result: Any, nxt: Optional[str], workflow: WorkflowSpec
) -> bool:
    from .runtime import set_nested  # one definition of how a result lands in vars

    if result_key and result is not None:
        set_nested(run.vars, result_key, result)
    if nxt is None:
        run.status = RunStatus.COMPLETED
        run.output = {"success": True, "result": result}
        return True
    if nxt not in workflow.nodes:
        return False
    run.current_node = nxt
    return True


def _key(rec: Dict[str, Any]) -> Optional[str]:
    """The one key of a kernel record's result (`resumed`, `output`, `retried`, ...): records
    the runtime itself writes, which carry no effect."""
    if rec.get("effect") is not None:
        return None
    result = rec.get("result")
    if isinstance(result, dict) and len(result) == 1:
        return next(iter(result))
    return None
