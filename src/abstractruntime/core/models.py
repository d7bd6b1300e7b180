"""The durable data model: plain stdlib dataclasses that round-trip through JSON.

Everything a run needs to continue after a restart lives in `RunState`; nothing here
holds a Python stack, a thread or a connection. The kernel imports no third-party package.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Dict, List, Optional


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


_second_cache: tuple = (-1, "")


def utc_now_iso() -> str:
    """Now, as `datetime.now(timezone.utc).isoformat()` writes it, several times cheaper:
    ledger records take two timestamps each, so this sits on every step's path."""
    global _second_cache
    t = time.time()
    sec = int(t)
    cached = _second_cache
    if cached[0] != sec:
        cached = _second_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{int((t - sec) * 1_000_000):06d}+00:00"


class RunStatus(str, Enum):
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class WaitReason(str, Enum):
    EVENT = "event"
    UNTIL = "until"
    USER = "user"
    JOB = "job"
    SUBWORKFLOW = "subworkflow"


class EffectType(str, Enum):
    """Side effects a node can request; each is executed by a registered handler."""

    WAIT_EVENT = "wait_event"
    WAIT_UNTIL = "wait_until"
    ASK_USER = "ask_user"
    ANSWER_USER = "answer_user"
    EMIT_EVENT = "emit_event"
    LLM_CALL = "llm_call"
    TOOL_CALLS = "tool_calls"
    START_SUBWORKFLOW = "start_subworkflow"


def type_key(t: Any) -> str:
    """An effect type as the key handlers, policies and records use: the value of an
    `EffectType`, or a custom type's own string."""
    return t._value_ if isinstance(t, EffectType) else str(t)


@dataclass(frozen=True)
class Effect:
    """A request for a side effect; `result_key` names where its result lands in `run.vars`.

    `retry` (ours; the published package has no such field): an effect policy (`RetryPolicy`,
    `DefaultEffectPolicy`, ...) used for this effect instead of the runtime's."""

    type: EffectType
    payload: Dict[str, Any] = field(default_factory=dict)
    result_key: Optional[str] = None
    retry: Optional[Any] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"type": _enum_value(self.type), "payload": self.payload, "result_key": self.result_key}


@dataclass(frozen=True)
class StepPlan:
    """What a node returns: an effect to run, the node to go to next, or the run's output."""

    node_id: str
    effect: Optional[Effect] = None
    next_node: Optional[str] = None
    complete_output: Optional[Dict[str, Any]] = None


# The key in `WaitState.details` that marks a paused run: {"reason": ..., "paused_at": ...}.
PAUSED = "paused"


@dataclass
class WaitState:
    """A durable pause. `wait_key` identifies what unblocks it; `until` is for time waits."""

    reason: WaitReason
    wait_key: Optional[str] = None
    until: Optional[str] = None
    resume_to_node: Optional[str] = None
    result_key: Optional[str] = None
    prompt: Optional[str] = None
    choices: Optional[List[str]] = None
    allow_free_text: bool = True
    details: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "reason": _enum_value(self.reason),
            "wait_key": self.wait_key,
            "until": self.until,
            "resume_to_node": self.resume_to_node,
            "result_key": self.result_key,
            "prompt": self.prompt,
            "choices": self.choices,
            "allow_free_text": self.allow_free_text,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> WaitState:
        return cls(
            reason=_member(WaitReason, d["reason"]),
            wait_key=d.get("wait_key"),
            until=d.get("until"),
            resume_to_node=d.get("resume_to_node"),
            result_key=d.get("result_key"),
            prompt=d.get("prompt"),
            choices=d.get("choices"),
            allow_free_text=d.get("allow_free_text", True),
            details=d.get("details"),
        )


@dataclass
class RunState:
    """The durable checkpoint of one run."""

    run_id: str
    workflow_id: str
    status: RunStatus
    current_node: str
    vars: Dict[str, Any] = field(default_factory=dict)
    waiting: Optional[WaitState] = None
    output: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    created_at: str = field(default_factory=utc_now_iso)
    updated_at: str = field(default_factory=utc_now_iso)
    actor_id: Optional[str] = None
    session_id: Optional[str] = None
    parent_run_id: Optional[str] = None
    # The version of the workflow the run started under (a hash of its source, when known).
    workflow_version: Optional[str] = None
    # The version its latest step ran under: a daemon that hot-reloads a workflow moves
    # waiting runs on to the new code, so this can differ from `workflow_version`.
    last_version: Optional[str] = None
    # Node executions so far. Part of every idempotency key: a step replayed after a crash
    # from the same checkpoint gets the same number, so its recorded effect result is found.
    steps: int = 0

    @classmethod
    def new(
        cls,
        *,
        workflow_id: str,
        entry_node: str,
        actor_id: Optional[str] = None,
        session_id: Optional[str] = None,
        vars: Optional[Dict[str, Any]] = None,
        parent_run_id: Optional[str] = None,
        run_id: Optional[str] = None,
        workflow_version: Optional[str] = None,
    ) -> RunState:
        now = utc_now_iso()
        return cls(
            run_id=run_id or str(uuid.uuid4()),
            created_at=now,
            updated_at=now,
            workflow_id=workflow_id,
            status=RunStatus.RUNNING,
            current_node=entry_node,
            vars=dict(vars) if vars else {},
            actor_id=actor_id,
            session_id=session_id,
            parent_run_id=parent_run_id,
            workflow_version=workflow_version,
            last_version=workflow_version,
        )

    @property
    def paused(self) -> bool:
        """Held by `Runtime.pause_run`: ticks leave it, answers are refused, timers do not fire."""
        return self.waiting is not None and bool((self.waiting.details or {}).get(PAUSED))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow_id": self.workflow_id,
            "status": _enum_value(self.status),
            "current_node": self.current_node,
            "vars": self.vars,
            "waiting": self.waiting.to_dict() if self.waiting is not None else None,
            "output": self.output,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "actor_id": self.actor_id,
            "session_id": self.session_id,
            "parent_run_id": self.parent_run_id,
            "workflow_version": self.workflow_version,
            "last_version": self.last_version,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> RunState:
        w = d.get("waiting")
        return cls(
            run_id=d["run_id"],
            workflow_id=d["workflow_id"],
            status=_member(RunStatus, d["status"]),
            current_node=d["current_node"],
            vars=d.get("vars") or {},
            waiting=WaitState.from_dict(w) if w else None,
            output=d.get("output"),
            error=d.get("error"),
            created_at=d.get("created_at") or utc_now_iso(),
            updated_at=d.get("updated_at") or utc_now_iso(),
            actor_id=d.get("actor_id"),
            session_id=d.get("session_id"),
            parent_run_id=d.get("parent_run_id"),
            workflow_version=d.get("workflow_version"),
            last_version=d.get("last_version", d.get("workflow_version")),
            steps=int(d.get("steps") or 0),
        )


class StepStatus(str, Enum):
    STARTED = "started"
    COMPLETED = "completed"
    WAITING = "waiting"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class StepRecord:
    """One append-only ledger entry.

    `seq`, `prev_hash` and `record_hash` are filled in by the ledger store when the record
    is appended: `seq` counts from 1 per run and each hash covers the previous one, so a
    changed, removed or reordered record breaks the chain (`verify_ledger_chain`).
    """

    run_id: str
    step_id: str
    node_id: str
    status: StepStatus
    effect: Optional[Dict[str, Any]] = None
    result: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    started_at: str = field(default_factory=utc_now_iso)
    ended_at: Optional[str] = None
    actor_id: Optional[str] = None
    session_id: Optional[str] = None
    attempt: int = 1
    idempotency_key: Optional[str] = None
    traceback: Optional[str] = None
    workflow_version: Optional[str] = None
    # The run's node execution count (RunState.steps) when the record was made: a replay of
    # that step looks its host effect up by it (a changed effect there is an error).
    step: Optional[int] = None
    seq: Optional[int] = None
    prev_hash: Optional[str] = None
    record_hash: Optional[str] = None
    signature: Optional[str] = None

    @classmethod
    def start(
        cls,
        *,
        run: RunState,
        node_id: str,
        effect: Optional[Effect],
        attempt: int = 1,
        idempotency_key: Optional[str] = None,
    ) -> StepRecord:
        return cls(
            run_id=run.run_id,
            step_id=os.urandom(16).hex(),
            node_id=node_id,
            status=StepStatus.STARTED,
            effect=effect.to_dict() if effect is not None else None,
            actor_id=run.actor_id,
            session_id=run.session_id,
            attempt=attempt,
            idempotency_key=idempotency_key,
            workflow_version=run.last_version or run.workflow_version,
            step=run.steps,
        )

    def finish_success(self, result: Optional[Dict[str, Any]] = None, *, instant: bool = False) -> StepRecord:
        """`instant`: nothing happened between start and end (a transition decided in memory),
        so the record ends when it started (one clock reading fewer on every step)."""
        self.status = StepStatus.COMPLETED
        self.result = result
        self.ended_at = self.started_at if instant else utc_now_iso()
        return self

    def finish_waiting(self, wait_state: WaitState, *, instant: bool = False) -> StepRecord:
        self.status = StepStatus.WAITING
        self.result = {"wait": wait_state.to_dict()}
        self.ended_at = self.started_at if instant else utc_now_iso()
        return self

    def finish_failure(self, error: str, traceback: Optional[str] = None) -> StepRecord:
        self.status = StepStatus.FAILED
        self.error = error
        self.traceback = traceback
        self.ended_at = utc_now_iso()
        return self

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> StepRecord:
        """A record as a ledger lists it, back as a StepRecord (unknown keys are dropped)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["status"] = _member(StepStatus, known["status"])
        return cls(**known)

    def to_dict(self, *, hashed_only: bool = False) -> Dict[str, Any]:
        """`hashed_only`: without `record_hash` and `signature`, the keys the hash covers."""
        d = {
            "run_id": self.run_id,
            "step_id": self.step_id,
            "node_id": self.node_id,
            "status": _enum_value(self.status),
            "effect": self.effect,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "actor_id": self.actor_id,
            "session_id": self.session_id,
            "attempt": self.attempt,
            "idempotency_key": self.idempotency_key,
            "traceback": self.traceback,
            "workflow_version": self.workflow_version,
            "step": self.step,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
        }
        if not hashed_only:
            d["record_hash"] = self.record_hash
            d["signature"] = self.signature
        return d


def _enum_value(v: Any) -> Any:
    # `_value_`, not `.value`: the property goes through Enum's descriptor machinery in Python,
    # and every checkpoint and record asks for a few of these.
    return v._value_ if isinstance(v, Enum) else v


def _member(enum: Any, value: Any) -> Any:
    """`enum(value)`, by a dict lookup first: a load decodes a status or two per run."""
    found = enum._value2member_map_.get(value) if isinstance(value, str) else None
    return found if found is not None else enum(value)
