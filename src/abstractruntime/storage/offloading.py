"""Keep large values out of checkpoints and ledgers: they go to an artifact store, and the
JSON holds a reference in their place.

`offload_large_values` does the work on any JSON value: depth first, each value whose JSON
form still exceeds `max_inline_bytes` once its own parts are offloaded is stored (strings as
text, the rest as JSON) and replaced by `{"$artifact": id}`. The two store wrappers use it:

- `OffloadingRunStore` on `run.vars` at each save; `load` puts the values back, so nodes see
  what they left. (References it made carry a marker; references a node put in its vars itself
  are left as they are.)
- `OffloadingLedgerStore` on each record's `effect` and `result`; listings keep the references
  (a ledger is read to audit, not to replay values), while the lookups a replay makes
  (`find_step`, `find_completed`) resolve them.

Ids are content-addressed per run, so saving the same large value again writes nothing new.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..core.models import RunState, StepRecord
from .artifacts import ArtifactStore, compute_artifact_id, is_artifact_ref
from .base import LedgerStore, RunListener, RunStore

DEFAULT_MAX_INLINE_BYTES = 256 * 1024
# In a reference a wrapper made: what the artifact holds ("text" or "json"), so that the
# wrapper can put the value back. References made by `offload_large_values` itself do not
# have it (they are the caller's to resolve).
_MARK = "$offloaded"


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def _store(
    value: Any, store: ArtifactStore, run_id: str, path: str, base_tags: Optional[Dict[str, str]]
) -> Tuple[str, str]:
    kind = "text" if isinstance(value, str) else "json"
    if kind == "text":
        body, content_type = value.encode(), "text/plain"
    else:
        body = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
        content_type = "application/json"
    aid = compute_artifact_id(body, run_id)
    if not store.exists(aid):  # content-addressed: a value offloaded before is stored already
        store.store(
            body,
            content_type=content_type,
            run_id=run_id,
            tags={**(base_tags or {}), "path": path, "kind": kind},
            artifact_id=aid,
        )
    return aid, kind


def _offload(
    value: Any,
    store: ArtifactStore,
    run_id: str,
    limit: int,
    path: str,
    base_tags: Optional[Dict[str, str]],
    allow: Optional[Callable[[str, Any], bool]],
    replace_root: bool,
    mark: bool,
    root: bool,
) -> Any:
    if is_artifact_ref(value):
        return value
    if isinstance(value, dict):
        value = {
            k: _offload(v, store, run_id, limit, f"{path}.{k}" if path else str(k), base_tags, allow, True, mark, False)
            for k, v in value.items()
        }
    elif isinstance(value, list):
        value = [
            _offload(v, store, run_id, limit, f"{path}[{i}]", base_tags, allow, True, mark, False)
            for i, v in enumerate(value)
        ]
    if (root and not replace_root) or _size(value) <= limit:
        return value
    if allow is not None and not allow(path, value):
        return value
    aid, kind = _store(value, store, run_id, path, base_tags)
    return {"$artifact": aid, _MARK: kind} if mark else {"$artifact": aid}


def offload_large_values(
    value: Any,
    *,
    artifact_store: ArtifactStore,
    run_id: str,
    max_inline_bytes: int,
    base_tags: Optional[Dict[str, str]] = None,
    root_path: str = "",
    allow_offload: Optional[Callable[[str, Any], bool]] = None,
    allow_root_replace: bool = False,
) -> Any:
    """`value` with every part too large to keep inline stored in `artifact_store` and replaced
    by `{"$artifact": id}` (a new value: `value` itself is not changed).

    Paths name parts as `a.b[0]` below `root_path`; `allow_offload(path, value)` may refuse a
    part (it stays inline). The whole value is replaced only with `allow_root_replace=True`.
    Each artifact is tagged with its `path` and `kind` ("text" or "json") besides `base_tags`."""
    return _offload(
        value,
        artifact_store,
        run_id,
        int(max_inline_bytes),
        root_path,
        base_tags,
        allow_offload,
        allow_root_replace,
        False,
        True,
    )


def _restore(value: Any, store: ArtifactStore) -> Any:
    """Put back the values a wrapper offloaded (references with the marker)."""
    if isinstance(value, dict):
        if is_artifact_ref(value) and _MARK in value:
            art = store.load(value["$artifact"])
            if art is None:
                raise KeyError(
                    f"artifact {value['$artifact']!r} (an offloaded value) is missing from the artifact store"
                )
            return art.as_text() if value[_MARK] == "text" else art.as_json()
        return {k: _restore(v, store) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, store) for v in value]
    return value


class OffloadingRunStore(RunStore):
    """A run store whose checkpoints keep values above `max_inline_bytes` in `artifact_store`."""

    def __init__(
        self, inner: RunStore, *, artifact_store: ArtifactStore, max_inline_bytes: Optional[int] = None
    ) -> None:
        self._inner = inner
        self._artifacts = artifact_store
        self.max_inline_bytes = DEFAULT_MAX_INLINE_BYTES if max_inline_bytes is None else int(max_inline_bytes)

    @property
    def inner(self) -> RunStore:
        return self._inner

    def _slim(self, run: RunState) -> RunState:
        slim = copy.copy(run)
        slim.vars = _offload(
            run.vars, self._artifacts, run.run_id, self.max_inline_bytes, "vars", None, None, False, True, True
        )
        return slim

    def save(self, run: RunState) -> None:
        self._inner.save(self._slim(run))

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        return self._inner.commit(self._slim(run), records)

    @property
    def unit(self) -> Any:  # the inner store's backend: paired with its own ledger, a step commits whole
        return getattr(self._inner, "unit", None)

    def load(self, run_id: str) -> Optional[RunState]:
        run = self._inner.load(run_id)
        if run is not None:
            run.vars = _restore(run.vars, self._artifacts)
        return run

    def list_run_summaries(self, **kw: Any):
        return self._inner.list_run_summaries(**kw)

    def newest_summaries(self, **kw: Any):
        return self._inner.newest_summaries(**kw)

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


class OffloadingLedgerStore(LedgerStore):
    """A ledger whose records keep `effect` and `result` values above `max_inline_bytes` in
    `artifact_store`. It is its own unit: a Runtime appends its records, then saves the run."""

    unit = None

    def __init__(
        self, inner: LedgerStore, *, artifact_store: ArtifactStore, max_inline_bytes: Optional[int] = None
    ) -> None:
        self._inner = inner
        self._artifacts = artifact_store
        self.max_inline_bytes = DEFAULT_MAX_INLINE_BYTES if max_inline_bytes is None else int(max_inline_bytes)

    @property
    def inner(self) -> LedgerStore:
        return self._inner

    def _slim(self, rec: StepRecord) -> StepRecord:
        slim = copy.copy(rec)
        for name in ("effect", "result"):
            value = getattr(rec, name)
            if value is not None:
                setattr(
                    slim,
                    name,
                    _offload(
                        value, self._artifacts, rec.run_id, self.max_inline_bytes, name, None, None, True, True, True
                    ),
                )
        return slim

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        return self._inner.append_many(run_id, [self._slim(r) for r in records])

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return self._inner.list(run_id)

    def list_after(self, run_id: str, after: int = 0, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        return self._inner.list_after(run_id, after, limit)

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        return self._inner.head(run_id)

    def add_listener(self, listener: Any) -> None:
        self._inner.add_listener(listener)

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        found = self._inner.find_step(run_id, step)
        return _restore(found, self._artifacts) if found is not None else None

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        found = self._inner.find_completed(run_id, idempotency_key)
        return _restore(found, self._artifacts) if found is not None else None

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()
