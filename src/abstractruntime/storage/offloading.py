"""Keep large values out of checkpoints: a run-store wrapper that stores them as artifacts.

On save, each value in `run.vars` (searched top-down) whose JSON form exceeds
`max_inline_bytes` goes to the artifact store and the checkpoint holds a reference instead.
On load the references are resolved again, so nodes see their values as they left them.
Content addressing makes this idempotent: saving the same large value again stores nothing new.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ..core.models import RunState, StepRecord
from .artifacts import ArtifactStore, artifact_ref, is_artifact_ref, resolve_artifact
from .base import RunListener, RunStore


class OffloadingRunStore(RunStore):
    def __init__(
        self,
        inner: RunStore,
        artifact_store: ArtifactStore,
        *,
        max_inline_bytes: int = 64 * 1024,
        resolve_on_load: bool = True,
    ) -> None:
        self._inner = inner
        self._artifacts = artifact_store
        self.max_inline_bytes = max_inline_bytes
        self.resolve_on_load = resolve_on_load

    def _offload(self, value: Any, run_id: str) -> Any:
        if is_artifact_ref(value):
            return value
        body = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        if len(body) <= self.max_inline_bytes:
            return value
        if isinstance(value, dict):
            smaller = {k: self._offload(v, run_id) for k, v in value.items()}
            if len(json.dumps(smaller, separators=(",", ":")).encode()) <= self.max_inline_bytes:
                return smaller
        meta = self._artifacts.store(
            body, content_type="application/json", run_id=run_id, tags={"kind": "offloaded_var"}
        )
        return artifact_ref(meta.artifact_id, content_type="application/json", size_bytes=len(body))

    def _resolve(self, value: Any) -> Any:
        if is_artifact_ref(value) and value.get("content_type") == "application/json":
            return resolve_artifact(value, self._artifacts)
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        return value

    def _slim(self, run: RunState) -> RunState:
        slim = RunState.from_dict(run.to_dict())
        slim.vars = {k: self._offload(v, run.run_id) for k, v in run.vars.items()}
        return slim

    def save(self, run: RunState) -> None:
        self._inner.save(self._slim(run))

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        return self._inner.commit(self._slim(run), records)

    @property
    def unit(self) -> Any:  # the inner store's backend: paired with its ledger, a step commits whole
        return getattr(self._inner, "unit", None)

    def load(self, run_id: str) -> Optional[RunState]:
        run = self._inner.load(run_id)
        if run is not None and self.resolve_on_load:
            run.vars = self._resolve(run.vars)
        return run

    def list_run_summaries(self, **kw: Any):
        return self._inner.list_run_summaries(**kw)

    def count_by_status(self):
        return self._inner.count_by_status()

    def find_waiting_on(self, wait_key: str):
        return self._inner.find_waiting_on(wait_key)

    def next_due_at(self):
        return self._inner.next_due_at()

    def claim_due_runs(self, **kw: Any):
        return self._inner.claim_due_runs(**kw)

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        return self._inner.try_lease(run_id, owner, lease_s)

    def release_lease(self, run_id: str, owner: str) -> None:
        self._inner.release_lease(run_id, owner)

    def add_listener(self, listener: RunListener) -> None:
        self._inner.add_listener(listener)

    def add_timer_listener(self, listener: Any) -> None:
        self._inner.add_timer_listener(listener)

    def close(self) -> None:
        self._inner.close()
