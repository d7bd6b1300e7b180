"""Runs that act on other runs: `EMIT_EVENT` resumes the runs waiting on an event,
`START_SUBWORKFLOW` starts a child run and waits for it, and a child that ends wakes its parent.

Each handler works inside the tick of the run that asked, which it is given explicitly: the
resumes it causes are queued on that tick's `after` list, so they happen once the asking run
has committed and released its lock (two runs that signal each other cannot deadlock).
"""

from __future__ import annotations

import logging
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from .effects import EffectHandler, EffectOutcome, event_wait_key
from .errors import WorkflowNotFoundError
from .models import Effect, EffectType, RunState, RunStatus, WaitReason, WaitState
from .spec import WorkflowSpec
from .tick import Tick

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("abstractruntime.runtime")


class Composition:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def handler(self, etype: str, t: Tick) -> Optional[EffectHandler]:
        """The built-in handler of a composition effect, bound to the tick it runs in."""
        if etype == EffectType.EMIT_EVENT.value:
            return partial(self.emit, t=t)
        if etype == EffectType.START_SUBWORKFLOW.value:
            return partial(self.start_child, t=t)
        return None

    def emit(self, run: RunState, effect: Effect, default_next_node: Optional[str], *, t: Tick) -> EffectOutcome:
        p = effect.payload
        name = p.get("name")
        if not name and not p.get("wait_key"):
            return EffectOutcome.failed("emit_event needs payload.name", retryable=False)
        try:
            key = p.get("wait_key") or event_wait_key(
                str(name), p.get("scope"), session_id=p.get("session_id") or run.session_id, run_id=p.get("run_id")
            )
        except ValueError as e:
            return EffectOutcome.failed(f"emit_event: {e}", retryable=False)
        targets = [r for r in self.rt._runs.find_waiting_on(key) if r != run.run_id]
        body = p.get("payload")
        t.after.append(lambda: self.rt.emit_event(wait_key=key, payload=body))
        return EffectOutcome.completed({"name": name, "wait_key": key, "resumed": targets})

    def start_child(self, run: RunState, effect: Effect, default_next_node: Optional[str], *, t: Tick) -> EffectOutcome:
        rt = self.rt
        p = effect.payload
        wf_id = p.get("workflow_id")
        if not wf_id:
            return EffectOutcome.failed("start_subworkflow needs payload.workflow_id", retryable=False)
        if rt.workflow_registry is None:
            return EffectOutcome.failed(
                "start_subworkflow needs a workflow_registry: Runtime(workflow_registry=WorkflowRegistry(...))",
                retryable=False,
            )
        try:
            child_wf = rt.workflow(str(wf_id))
        except WorkflowNotFoundError:
            known = ", ".join(sorted(rt.workflow_registry.list_ids())) or "none"
            return EffectOutcome.failed(
                f"start_subworkflow: workflow {wf_id!r} not found in the registry (registered: {known})",
                retryable=False,
            )
        vars_ = p.get("vars") or {}
        if not isinstance(vars_, dict):
            return EffectOutcome.failed("start_subworkflow: payload.vars must be an object", retryable=False)
        # The child's id is derived from the parent's step, so a replay after a crash finds
        # the child it already started instead of starting a second one.
        key = rt.effect_policy.idempotency_key(run=run, node_id=run.current_node, effect=effect)
        child_id = str(uuid.UUID(key[:32]))
        if rt._runs.load(child_id) is None:
            rt.start(
                workflow=child_wf,
                vars=vars_,
                actor_id=run.actor_id,
                session_id=run.session_id,
                parent_run_id=run.run_id,
                run_id=child_id,
            )
        details = {"sub_run_id": child_id, "sub_workflow_id": wf_id}
        resume_to = p.get("resume_to_node") or default_next_node

        def wait_for_child(**more: Any) -> EffectOutcome:
            return EffectOutcome.waiting(
                WaitState(
                    reason=WaitReason.SUBWORKFLOW,
                    wait_key=f"subworkflow:{child_id}",
                    resume_to_node=resume_to,
                    result_key=effect.result_key,
                    details={**details, **more},
                )
            )

        if p.get("async"):
            # The child runs once the parent's step is committed and its lock released (on
            # this thread, before `tick` returns); with `wait`, its ending wakes the parent.
            t.after.append(partial(self._tick_child, child_wf, child_id))
            if not p.get("wait"):
                return EffectOutcome.completed({"sub_run_id": child_id, "async": True})
            return wait_for_child(**{"async": True})
        # A sync parent handles its child's ending right here, so the child must not also
        # wake the parent (which is mid-tick and holds its own lock).
        child_t = Tick(notify_parent=False)
        with rt._guard(child_id):
            state = rt._advance(child_wf, rt.get_state(child_id), 100, child_t)
        t.after.extend(child_t.after)
        if state.status == RunStatus.COMPLETED:
            return EffectOutcome.completed({"sub_run_id": child_id, "output": state.output})
        if state.status.is_terminal:
            return EffectOutcome.failed(
                f"subworkflow run {child_id} ({wf_id}) {state.status.value}: {state.error or 'no error given'}",
                retryable=False,
            )
        cw = state.waiting
        return wait_for_child(sub_waiting={"reason": cw.reason.value, "wait_key": cw.wait_key} if cw else None)

    def _tick_child(self, workflow: WorkflowSpec, child_id: str) -> None:
        # tick() wakes a parent that waits for this child once it ends (notify_parent).
        self.rt.tick(workflow=workflow, run_id=child_id)

    def notify_parent(self, child: RunState) -> None:
        """A child run ended: tick its parent if the parent waits for it."""
        rt = self.rt
        parent = rt._runs.load(child.parent_run_id) if child.parent_run_id else None
        if parent is None or parent.status != RunStatus.WAITING or parent.waiting is None:
            return
        if (parent.waiting.details or {}).get("sub_run_id") != child.run_id:
            return
        try:
            wf = rt.workflow(parent.workflow_id)
        except WorkflowNotFoundError as e:
            log.warning("child %s finished but its parent cannot continue: %s", child.run_id, e)
            return
        rt.tick(workflow=wf, run_id=parent.run_id)
