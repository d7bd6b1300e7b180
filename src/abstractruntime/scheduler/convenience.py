"""`create_scheduled_runtime()`: a Runtime, a registry and a running Scheduler in one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..core.clock import Clock
from ..core.models import RunState
from ..core.runtime import Runtime
from ..core.spec import WorkflowSpec
from ..storage.in_memory import InMemoryLedgerStore, InMemoryRunStore
from .registry import WorkflowRegistry
from .scheduler import Scheduler, SchedulerStats


@dataclass
class ScheduledRuntime:
    runtime: Runtime
    scheduler: Scheduler
    registry: WorkflowRegistry

    def register(self, workflow: WorkflowSpec) -> None:
        self.registry.register(workflow)

    def _serve(self, workflow: WorkflowSpec) -> None:
        # run()/start() register the workflow they are given; a new version of an id served
        # already takes its place (as hot reload does), the same one is left alone.
        self.registry.register(workflow, replace=True)

    def run(
        self,
        workflow: WorkflowSpec,
        *,
        vars: Optional[Dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        session_id: Optional[str] = None,
        max_steps: int = 100,
    ) -> Tuple[str, RunState]:
        """Start a run and tick it until it waits or ends."""
        self._serve(workflow)
        state = self.runtime.start_and_tick(
            workflow=workflow, vars=vars, actor_id=actor_id, session_id=session_id, max_steps=max_steps
        )
        return state.run_id, state

    def start(
        self,
        *,
        workflow: WorkflowSpec,
        vars: Optional[Dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> str:
        """Start a run (registering its workflow); it runs at the next `tick`."""
        self._serve(workflow)
        return self.runtime.start(workflow=workflow, vars=vars, actor_id=actor_id, session_id=session_id)

    def tick(
        self, run_id: Optional[str] = None, *, workflow: Optional[WorkflowSpec] = None, max_steps: int = 100, **kw: Any
    ) -> RunState:
        run_id = run_id or kw["run_id"]
        wf = workflow or self.registry.get_or_raise(self.runtime.get_state(run_id).workflow_id)
        return self.runtime.tick(workflow=wf, run_id=run_id, max_steps=max_steps)

    def respond(self, run_id: str, payload: Dict[str, Any]) -> RunState:
        """Answer a waiting run with `payload`, whatever key it waits on."""
        state = self.runtime.get_state(run_id)
        wf = self.registry.get_or_raise(state.workflow_id)
        key = state.waiting.wait_key if state.waiting is not None else None
        return self.runtime.resume(workflow=wf, run_id=run_id, wait_key=key, payload=payload)

    def resume(
        self, *, workflow: WorkflowSpec, run_id: str, wait_key: Optional[str], payload: Dict[str, Any]
    ) -> RunState:
        return self.runtime.resume(workflow=workflow, run_id=run_id, wait_key=wait_key, payload=payload)

    def resume_event(self, *, run_id: str, wait_key: str, payload: Dict[str, Any]) -> RunState:
        return self.scheduler.resume_event(run_id=run_id, wait_key=wait_key, payload=payload)

    def emit_event(
        self, name: str, payload: Any = None, *, scope: Optional[str] = None, session_id: Optional[str] = None
    ) -> List[str]:
        return self.runtime.emit_event(name=name, payload=payload, scope=scope, session_id=session_id)

    def get_state(self, run_id: str) -> RunState:
        return self.runtime.get_state(run_id)

    def get_ledger(self, run_id: str) -> List[Dict[str, Any]]:
        return self.runtime.get_ledger(run_id)

    def cancel_run(self, run_id: str, reason: Optional[str] = None) -> RunState:
        return self.runtime.cancel_run(run_id, reason=reason)

    def pause_run(self, run_id: str, *, reason: Optional[str] = None) -> RunState:
        return self.runtime.pause_run(run_id, reason=reason)

    def resume_run(self, run_id: str) -> RunState:
        return self.runtime.resume_run(run_id)

    def cancel_with_children(self, run_id: str, *, reason: Optional[str] = None) -> List[RunState]:
        return self.scheduler.cancel_with_children(run_id, reason=reason)

    def resume_subworkflow_parent(self, *, child_run_id: str, child_output: Dict[str, Any]) -> Optional[RunState]:
        return self.scheduler.resume_subworkflow_parent(child_run_id=child_run_id, child_output=child_output)

    def find_waiting_runs(
        self, *, wait_reason: Any = None, workflow_id: Optional[str] = None, limit: int = 100
    ) -> List[RunState]:
        return self.scheduler.find_waiting_runs(wait_reason=wait_reason, workflow_id=workflow_id, limit=limit)

    @property
    def stats(self) -> SchedulerStats:
        return self.scheduler.stats

    @property
    def is_running(self) -> bool:
        return self.scheduler.is_running

    def start_scheduler(self) -> None:
        self.scheduler.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.scheduler.stop(timeout=timeout)


def create_scheduled_runtime(
    *,
    run_store: Any = None,
    ledger_store: Any = None,
    workflows: Optional[Iterable[WorkflowSpec]] = None,
    effect_handlers: Optional[Dict[Any, Any]] = None,
    poll_interval_s: float = 1.0,
    auto_start: bool = True,
    on_run_resumed: Optional[Callable[[RunState], None]] = None,
    on_run_failed: Optional[Callable[[str, Exception], None]] = None,
    artifact_store: Any = None,
    effect_policy: Any = None,
    external_effects: Optional[Iterable[Any]] = None,
    clock: Optional[Clock] = None,
) -> ScheduledRuntime:
    """A Runtime (in-memory stores unless given), a WorkflowRegistry and a Scheduler,
    started unless `auto_start=False`. `clock` (see `core.clock`) is the time both go by:
    give the stores the same one."""
    if run_store is None or ledger_store is None:
        run_store = run_store if run_store is not None else InMemoryRunStore(clock=clock)
        ledger_store = ledger_store if ledger_store is not None else InMemoryLedgerStore()
    registry = WorkflowRegistry(list(workflows or ()))
    runtime = Runtime(
        run_store=run_store,
        ledger_store=ledger_store,
        effect_handlers=effect_handlers,
        workflow_registry=registry,
        artifact_store=artifact_store,
        effect_policy=effect_policy,
        external_effects=external_effects,
        clock=clock,
    )
    scheduler = Scheduler(
        runtime=runtime,
        registry=registry,
        poll_interval_s=poll_interval_s,
        on_run_resumed=on_run_resumed,
        on_run_failed=on_run_failed,
    )
    if auto_start:
        scheduler.start()
    return ScheduledRuntime(runtime=runtime, scheduler=scheduler, registry=registry)
