"""The wire contract: one pydantic model per method's params and result.

Plain data only. The daemon validates every incoming params object against these models
(a failure is a JSON-RPC invalid-params error carrying pydantic's detail), the OpenRPC spec
under `protocol/` and `docs/protocol.md` are generated from them, and the TypeScript types
are generated from that spec.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..core.errors import ID_PATTERN  # ids become file names in the stores

PROTOCOL_VERSION = "1.0"

RunId = Field(pattern=ID_PATTERN, description="A run id.")
WorkflowId = Field(pattern=ID_PATTERN, description="A workflow id.")

Status = Literal["running", "waiting", "completed", "failed", "cancelled"]
WaitReasonName = Literal["user", "until", "event", "job", "subworkflow"]


# The largest integer every client can hold exactly (a JavaScript number): cursors, seqs.
MAX_SAFE_INT = 2**53 - 1


class Params(BaseModel):
    """Params objects reject unknown fields (a typo is an error, not a silent no-op) and are
    strict: a number must be a number, a string a string (no "10" for 10)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Result(BaseModel):
    """Results may gain fields in later versions; clients must ignore what they do not know."""

    model_config = ConfigDict(extra="allow")


class Empty(Params):
    pass


# -- shared shapes -----------------------------------------------------------------------------


class WaitStateModel(Result):
    reason: WaitReasonName
    wait_key: Optional[str] = None
    until: Optional[str] = Field(
        None, description="ISO-8601 time: when an `until` wait fires, or a wait's deadline (see `details.deadline`)."
    )
    resume_to_node: Optional[str] = None
    result_key: Optional[str] = None
    prompt: Optional[str] = None
    choices: Optional[List[str]] = None
    allow_free_text: bool = True
    details: Optional[Dict[str, Any]] = Field(
        None,
        description="For `job` waits: the effect to execute outside the daemon (`details.effect`). For a wait "
        "with a deadline: `details.deadline.on_timeout`, the node it goes on at when `until` passes.",
    )


class RunStateModel(Result):
    """A run's checkpoint, as `RunState.to_dict()` writes it."""

    run_id: str
    workflow_id: str
    status: Status
    current_node: str
    vars: Dict[str, Any] = Field(default_factory=dict)
    waiting: Optional[WaitStateModel] = None
    output: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    created_at: str
    updated_at: str
    actor_id: Optional[str] = None
    session_id: Optional[str] = None
    parent_run_id: Optional[str] = None
    workflow_version: Optional[str] = Field(None, description="The workflow version the run started under.")
    last_version: Optional[str] = Field(
        None, description="The version its latest step ran under (a hot reload moves waiting runs on to new code)."
    )
    steps: int = 0


class RunSummaryModel(Result):
    """What listings show of a run: no vars, but the wait's prompt and choices."""

    run_id: str
    workflow_id: str
    status: Status
    current_node: str
    created_at: str
    updated_at: str
    wait_reason: Optional[WaitReasonName] = None
    wait_key: Optional[str] = None
    until: Optional[str] = None
    prompt: Optional[str] = None
    choices: Optional[List[str]] = None
    allow_free_text: bool = True
    parent_run_id: Optional[str] = None
    session_id: Optional[str] = None
    error: Optional[str] = None
    workflow_version: Optional[str] = None
    last_version: Optional[str] = None
    resume_node: Optional[str] = Field(None, description="For waiting runs: the node an answer resumes at.")
    paused: bool = Field(
        False, description="Held (Runtime.pause_run): it takes no answer, and its timer does not fire, until resumed."
    )


class LedgerRecordModel(Result):
    """One ledger record. `seq` counts from 1 per run; `record_hash` chains to `prev_hash`."""

    run_id: str
    step_id: str
    node_id: str
    status: Literal["started", "completed", "waiting", "failed", "cancelled"]
    seq: int
    effect: Optional[Dict[str, Any]] = None
    result: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    traceback: Optional[str] = None
    started_at: str
    ended_at: Optional[str] = None
    attempt: int = 1
    idempotency_key: Optional[str] = None
    workflow_version: Optional[str] = Field(None, description="The workflow version this step ran under.")
    step: Optional[int] = Field(None, description="The run's node execution count when the record was made.")
    actor_id: Optional[str] = None
    session_id: Optional[str] = None
    prev_hash: Optional[str] = None
    record_hash: str
    signature: Optional[str] = None


# -- runtime/* -----------------------------------------------------------------------------------


class StartParams(Params):
    workflow_id: str = WorkflowId
    vars: Dict[str, Any] = Field(default_factory=dict, description="The run's initial variables.")
    session_id: Optional[str] = None
    actor_id: Optional[str] = None
    wait: bool = Field(
        True,
        description="true: answer once the run waits or ends. false: answer at once with the run as stored "
        "(status running, before its first node runs); it runs on in the daemon.",
    )


class StartResult(Result):
    run_id: str
    state: RunStateModel = Field(
        description="The run after it ran until it waits or ends (with `wait: false`, as first stored)."
    )


class RetryParams(Params):
    run_id: str = RunId
    wait: bool = Field(True, description="false: answer at once; the run goes on in the daemon.")


class ForkParams(Params):
    run_id: str = RunId
    seq: Optional[int] = Field(
        None, ge=1, le=MAX_SAFE_INT, description="Fork after this ledger record (default: the run's last)."
    )
    vars: Optional[Dict[str, Any]] = Field(None, description="Merged over the vars the fork starts with.")
    wait: bool = Field(True, description="false: answer at once; the new run goes on in the daemon.")


class ResumeParams(Params):
    run_id: str = RunId
    payload: Dict[str, Any] = Field(description='Written to the wait\'s result_key; e.g. {"text": "yes"}.')
    wait_key: Optional[str] = Field(None, description="Defaults to the key the run waits on now.")


class RunIdParams(Params):
    run_id: str = RunId


class StateResult(Result):
    state: RunStateModel


class LedgerParams(Params):
    run_id: str = RunId
    after: int = Field(0, ge=0, le=MAX_SAFE_INT, description="Return records with seq greater than this.")
    limit: int = Field(100, ge=1, le=1000)


class LedgerResult(Result):
    records: List[LedgerRecordModel]
    next: Optional[int] = Field(description="Pass as `after` for the next page; null at the end.")


class RunsParams(Params):
    status: Optional[Status] = None
    workflow_id: Optional[str] = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: Optional[str] = Field(None, description="The `next` of the previous page.")
    order: Literal["oldest", "newest"] = Field(
        "oldest", description="By creation: `oldest` first (the default), or `newest` first."
    )
    since: Optional[str] = Field(None, description="Only runs updated at or after this ISO-8601 time.")
    parent_run_id: Optional[str] = Field(
        None, pattern=ID_PATTERN, description="Only the child runs of this run (START_SUBWORKFLOW)."
    )


class RunsResult(Result):
    runs: List[RunSummaryModel]
    next: Optional[str] = Field(description="Pass as `cursor` for the next page; null at the end.")
    remaining: Optional[int] = Field(None, description="How many more runs match after this page.")


class VerifyResult(Result):
    """`runtime/verify`: the run's whole ledger checked against its hash chain, in the daemon."""

    ok: bool = Field(description="Every record's hash and link to the one before it check out.")
    count: int = Field(description="How many records were checked.")
    first_bad_seq: Optional[int] = Field(description="The first record that does not check out; null when ok.")
    problems: List[str] = Field(default_factory=list, description="What is wrong, one line per problem (at most 20).")
    head_hash: Optional[str] = Field(description="The last record's hash (null for an empty ledger).")


class CancelParams(Params):
    run_id: str = RunId
    reason: Optional[str] = None


class MigrateParams(Params):
    run_id: str = RunId
    to_node: Optional[str] = Field(
        None,
        min_length=1,
        description="The node to resume at under the current version. Default: the run's resume node if the "
        "current version still has it, else the workflow's entry node.",
    )


class EmitEventParams(Params):
    name: str = Field(min_length=1)
    payload: Any = None
    scope: Optional[Literal["global", "session", "run"]] = Field(
        None, description="Default: `run` when `run_id` is given, else `global`."
    )
    session_id: Optional[str] = Field(None, description="For scope `session`: the session whose runs wait on it.")
    run_id: Optional[str] = Field(
        None, pattern=ID_PATTERN, description="For scope `run`: the run that waits on it (required there)."
    )


class EmitEventResult(Result):
    resumed: List[str] = Field(description="Ids of the runs the event resumed.")


class SubscribeParams(Params):
    run_id: Optional[str] = Field(None, pattern=ID_PATTERN, description="Omit for every run.")
    after: Optional[int] = Field(
        None,
        ge=0,
        le=MAX_SAFE_INT,
        description="Replay every event with a greater cursor first; omit for live events only.",
    )


class SubscribeResult(Result):
    subscription_id: str
    cursor: int = Field(description="The newest cursor at the time of subscribing.")


class UnsubscribeParams(Params):
    subscription_id: str


class ProgressModel(Result):
    node_id: str
    text: str = Field(description="The next piece of a model's streamed answer.")


class EventNotification(Result):
    """`runtime/event`: one per ledger append (`kind` record), per run status change (`kind` state),
    and per streamed piece of a model's answer (`kind` progress: not in the ledger, whose record of
    the call holds the whole answer)."""

    subscription_id: str
    cursor: int
    run_id: str
    kind: Literal["record", "state", "progress"]
    record: Optional[LedgerRecordModel] = None
    state: Optional[RunSummaryModel] = None
    progress: Optional[ProgressModel] = None
    committed_at: Optional[float] = Field(
        None, description="When the daemon published the event, right after the commit (epoch seconds)."
    )


# -- workflows/* and daemon/* ---------------------------------------------------------------------


class LoadError(Result):
    file: str = Field(description="Where the error is: the workflow module, or a helper module it imports.")
    line: Optional[int] = None
    message: str
    module: Optional[str] = Field(
        None, description="The workflow module that failed to load (differs from `file` for an error in a helper)."
    )


class WorkflowInfo(Result):
    workflow_id: str
    entry_node: str
    nodes: List[str]
    source: Optional[str] = Field(None, description="The file that defines it.")
    version: Optional[str] = Field(None, description="A hash of the defining module's source (the version serving).")
    load_error: Optional[LoadError] = Field(
        None, description="Set when the file's latest edit failed to load: the previous version keeps serving."
    )
    stranded: int = Field(0, description="Waiting runs whose resume node this version lacks.")


class WorkflowChangeModel(Result):
    workflow_id: str
    file: str
    old_version: Optional[str] = Field(description="null: the workflow is new.")
    new_version: Optional[str] = Field(description="null: the workflow was removed (its file or its spec is gone).")


class StrandedRun(Result):
    run_id: str
    workflow_id: str
    node_id: Optional[str] = Field(description="The node the run would resume at.")
    reason: Literal["node_missing", "workflow_removed"]
    run_version: Optional[str] = Field(description="The version the run waits under.")
    workflow_version: Optional[str] = Field(description="The version now serving (null when removed).")


class WorkflowsChanged(Result):
    """`workflows/changed` (and the result of `workflows/reload`): what a reload did."""

    changed: List[WorkflowChangeModel] = Field(description="Workflows added, replaced or removed.")
    load_errors: List[LoadError] = Field(description="Every file that currently fails to load.")
    new_errors: List[LoadError] = Field(default_factory=list, description="The load errors this reload found.")
    stranded: List[StrandedRun] = Field(description="Waiting runs of the changed workflows that can't resume.")
    reloaded_at: float
    elapsed_ms: Optional[float] = Field(None, description="How long the reload took, in the daemon.")
    retry_after: Optional[float] = Field(
        None,
        description="Seconds until a held-back save is looked at again: a save that would remove workflows "
        "(a file left empty or cut short for a moment) applies only once it has stood for a grace period.",
    )


class WorkflowsListResult(Result):
    workflows: List[WorkflowInfo]
    load_errors: List[LoadError] = Field(
        default_factory=list, description="Workflow files that failed to load: the file, the line, the error."
    )


class Peer(Result):
    """A daemon serving the same database (`--store postgres`)."""

    daemon_id: str
    host: str
    pid: int
    started_at: float = Field(description="When it started (epoch seconds).")
    heartbeat_age_s: float = Field(
        description="Seconds since its last heartbeat; past the lease time, its runs go to the others."
    )
    address: Optional[str] = Field(None, description="Its unix socket or HOST:PORT.")
    workflows: Dict[str, str] = Field(default_factory=dict, description="The workflows it serves: id -> version.")
    this: bool = Field(False, description="This is the daemon that answered.")


class WebLinkResult(Result):
    url: str = Field(description="Opened once, it signs a browser in to the page (an HttpOnly cookie).")
    expires_in_s: float = Field(description="Seconds the link stays good if nobody opens it.")


class DaemonStatusResult(Result):
    version: str
    protocol_version: str
    pid: int
    uptime_s: float
    store: str
    data_dir: str
    socket: Optional[str] = Field(None, description="The unix socket the daemon listens on, if any.")
    tcp: Optional[str] = Field(None, description="HOST:PORT the daemon listens on over TCP, if any.")
    http: Optional[str] = Field(None, description="HOST:PORT of the web page (`serve --http`), if served.")
    project_root: Optional[str] = Field(None, description="The project folder the daemon serves.")
    config_file: Optional[str] = Field(None, description="The config file in effect (None: defaults and flags).")
    workflow_dirs: List[str] = Field(default_factory=list, description="The workflow folders it loads.")
    model: Optional[str] = Field(None, description="`provider/model` that LLM_CALL uses; null: none configured.")
    runs: Dict[str, int] = Field(description="Number of runs by status.")
    clients: int
    subscriptions: int
    scheduler: Dict[str, Any]
    cursor: int = Field(description="The newest event cursor.")
    daemon_id: Optional[str] = Field(None, description="This daemon's id (the owner of its leases).")
    peers: List[Peer] = Field(
        default_factory=list, description="With --store postgres: every daemon serving the database, this one included."
    )
