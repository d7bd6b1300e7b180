"""The method table: every method of the wire protocol, defined once.

The daemon dispatches from it, the spec and docs are generated from it, and its examples are
the golden messages that the Python and TypeScript tests both read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type

from pydantic import BaseModel

from . import models as m


@dataclass(frozen=True)
class Method:
    name: str
    params: Type[BaseModel]
    result: Optional[Type[BaseModel]]
    summary: str
    errors: List[str] = field(default_factory=list)
    example_params: Dict[str, Any] = field(default_factory=dict)
    notification: bool = False  # sent by the daemon, not answered


_STATE: Dict[str, Any] = {
    "run_id": "7b0f6c1e-2a57-4c1b-9d52-0c7e8f6b1a23",
    "workflow_id": "approval",
    "status": "waiting",
    "current_node": "ask",
    "vars": {"amount": 120},
    "waiting": {
        "reason": "user",
        "wait_key": "user:7b0f6c1e-2a57-4c1b-9d52-0c7e8f6b1a23:1",
        "until": None,
        "resume_to_node": "cool_off",
        "result_key": "decision",
        "prompt": "Approve an expense of 120 EUR?",
        "choices": ["approve", "reject"],
        "allow_free_text": False,
        "details": None,
    },
    "output": None,
    "error": None,
    "created_at": "2026-11-26T10:00:00.000000+00:00",
    "updated_at": "2026-11-26T10:00:00.004000+00:00",
    "actor_id": None,
    "session_id": None,
    "parent_run_id": None,
    "workflow_version": None,
    "last_version": None,
    "steps": 1,
}

METHODS: List[Method] = [
    Method(
        "runtime/start",
        m.StartParams,
        m.StartResult,
        "Start a run of a workflow: it is stored at once, then runs until it waits or ends "
        "(`wait: false` answers as soon as it is stored).",
        ["workflow_not_found", "not_json_serializable", "storage_unavailable"],
        {"workflow_id": "approval", "vars": {"amount": 120}},
    ),
    Method(
        "runtime/retry",
        m.RetryParams,
        m.StateResult,
        "Run a failed run again from the node that failed, under the code loaded now.",
        ["run_not_found", "run_not_failed", "workflow_not_found", "invalid_workflow", "storage_unavailable"],
        {"run_id": _STATE["run_id"]},
    ),
    Method(
        "runtime/fork",
        m.ForkParams,
        m.StartResult,
        "A new run whose state is a run's state after ledger record `seq` (default: its last), with `vars` "
        "merged in, continuing under the code loaded now; recorded effects before that point are not run again.",
        ["run_not_found", "invalid_params", "workflow_not_found", "not_json_serializable", "storage_unavailable"],
        {"run_id": _STATE["run_id"], "seq": 2, "vars": {"amount": 90}},
    ),
    Method(
        "runtime/resume",
        m.ResumeParams,
        m.StateResult,
        "Answer a waiting run: the payload is written to the wait's result_key and the run continues.",
        [
            "run_not_found",
            "run_not_waiting",
            "run_already_finished",
            "run_paused",
            "wait_key_mismatch",
            "invalid_params",
            "workflow_not_found",
            "run_stranded",
            "storage_unavailable",
        ],
        {"run_id": _STATE["run_id"], "payload": {"text": "approve"}},
    ),
    Method(
        "runtime/state",
        m.RunIdParams,
        m.StateResult,
        "A run's current checkpoint.",
        ["run_not_found"],
        {"run_id": _STATE["run_id"]},
    ),
    Method(
        "runtime/ledger",
        m.LedgerParams,
        m.LedgerResult,
        "A page of a run's ledger records, in seq order.",
        ["run_not_found"],
        {"run_id": _STATE["run_id"], "after": 0, "limit": 100},
    ),
    Method(
        "runtime/verify",
        m.RunIdParams,
        m.VerifyResult,
        "Check a run's whole ledger against its hash chain (in the daemon, over the records as stored).",
        ["run_not_found"],
        {"run_id": _STATE["run_id"]},
    ),
    Method(
        "runtime/runs",
        m.RunsParams,
        m.RunsResult,
        "A page of run summaries (waiting runs carry their prompt and choices), oldest or newest first.",
        [],
        {"status": "waiting", "limit": 50},
    ),
    Method(
        "runtime/migrate",
        m.MigrateParams,
        m.StateResult,
        "Move a waiting run (one a reload stranded) on to the current version, resuming at `to_node`.",
        [
            "run_not_found",
            "run_not_waiting",
            "run_already_finished",
            "workflow_not_found",
            "invalid_workflow",
            "storage_unavailable",
        ],
        {"run_id": _STATE["run_id"], "to_node": "ask"},
    ),
    Method(
        "runtime/cancel",
        m.CancelParams,
        m.StateResult,
        "Cancel a run that has not finished (and a child it waits on).",
        ["run_not_found", "run_already_finished", "storage_unavailable"],
        {"run_id": _STATE["run_id"], "reason": "no longer needed"},
    ),
    Method(
        "runtime/emitEvent",
        m.EmitEventParams,
        m.EmitEventResult,
        "Resume every run waiting on a named event (scope `run`: the one run `run_id`).",
        ["invalid_params", "storage_unavailable"],
        {"name": "payment_received", "payload": {"amount": 120}},
    ),
    Method(
        "runtime/subscribe",
        m.SubscribeParams,
        m.SubscribeResult,
        "Receive `runtime/event` notifications for one run or all runs; `after` replays what was missed.",
        ["cursor_expired", "too_many_subscriptions"],
        {"after": 41},
    ),
    Method(
        "runtime/unsubscribe",
        m.UnsubscribeParams,
        None,
        "Stop a subscription of this connection.",
        ["subscription_not_found"],
        {"subscription_id": "s-1"},
    ),
    Method(
        "workflows/list",
        m.Empty,
        m.WorkflowsListResult,
        "The workflows the daemon serves, with their versions, load errors and stranded runs.",
        [],
        {},
    ),
    Method(
        "workflows/reload",
        m.Empty,
        m.WorkflowsChanged,
        "Re-import the workflow files that changed now (for filesystems without change events).",
        [],
        {},
    ),
    Method(
        "daemon/status",
        m.Empty,
        m.DaemonStatusResult,
        "Version, uptime, store, run counts, clients and scheduler figures.",
        [],
        {},
    ),
    Method(
        "daemon/webLink",
        m.Empty,
        m.WebLinkResult,
        "A one-time URL that signs a browser in to the web page (`serve --http`); `abstractruntime ui` opens it.",
        ["web_not_served"],
        {},
    ),
    Method(
        "daemon/shutdown",
        m.Empty,
        None,
        "Stop the daemon: in-flight steps finish and are committed, then every connection closes.",
        [],
        {},
    ),
    Method(
        "runtime/event",
        m.EventNotification,
        None,
        "Notification: a ledger append (`kind: record`) or a run status change (`kind: state`).",
        [],
        {"subscription_id": "s-1", "cursor": 42, "run_id": _STATE["run_id"], "kind": "state", "state": None},
        notification=True,
    ),
    Method(
        "workflows/changed",
        m.WorkflowsChanged,
        None,
        "Notification to every client after a reload changed something: versions, load errors, stranded runs.",
        [],
        {
            "changed": [
                {"workflow_id": "approval", "file": "/srv/wf/approval.py", "old_version": "3f2a", "new_version": "9c41"}
            ],
            "load_errors": [],
            "new_errors": [],
            "stranded": [],
            "reloaded_at": 1795687200.0,
        },
        notification=True,
    ),
]

BY_NAME: Dict[str, Method] = {x.name: x for x in METHODS}
# Commands an editor runs with `workspace/executeCommand` (see docs/editors.md).
EDITOR_COMMANDS = [
    "abstractruntime.start",
    "abstractruntime.answer",
    "abstractruntime.cancel",
    "abstractruntime.retry",
    "abstractruntime.fork",
    "abstractruntime.showRun",
]
REQUEST_NAMES = [x.name for x in METHODS if not x.notification]
NOTIFICATION_NAMES = [x.name for x in METHODS if x.notification]
EXAMPLE_STATE = _STATE
