"""Every name the published package's users import, from where they import it."""

from __future__ import annotations

import importlib

import pytest

ROOT_NAMES = [
    "ActorFingerprint", "Artifact", "ArtifactDescriptor", "ArtifactMetadata", "ArtifactStore",
    "InMemoryArtifactStore", "FileArtifactStore", "artifact_ref", "is_artifact_ref", "get_artifact_id",
    "resolve_artifact", "compute_artifact_id", "OffloadingRunStore", "OffloadingLedgerStore",
    "offload_large_values", "RetryPolicy", "DefaultEffectPolicy", "NoRetryPolicy", "compute_idempotency_key",
    "Scheduler", "SchedulerStats", "ScheduledRuntime", "WorkflowRegistry", "create_scheduled_runtime",
    # the seed's names
    "Effect", "EffectType", "RunState", "RunStatus", "Runtime", "StepPlan", "WaitReason", "WaitState",
    "WorkflowSpec", "InMemoryRunStore", "InMemoryLedgerStore", "JsonFileRunStore", "JsonlLedgerStore",
    "SqliteDatabase", "SqliteRunStore", "SqliteLedgerStore", "HashChainedLedgerStore", "verify_ledger_chain",
    "QueryableRunStore", "Snapshot", "InMemorySnapshotStore", "JsonSnapshotStore",
]  # fmt: skip

MODULE_NAMES = {
    "abstractruntime.core.models": [
        "Effect", "EffectType", "RunState", "RunStatus", "StepPlan", "StepRecord", "WaitReason", "WaitState",
    ],
    "abstractruntime.core.spec": ["WorkflowSpec"],
    "abstractruntime.core.runtime": ["Runtime", "EffectOutcome"],
    "abstractruntime.core.policy": ["DefaultEffectPolicy", "NoRetryPolicy", "RetryPolicy", "compute_idempotency_key"],
    "abstractruntime.storage.artifacts": [
        "Artifact", "ArtifactMetadata", "ArtifactStore", "InMemoryArtifactStore", "FileArtifactStore", "artifact_ref",
        "resolve_artifact", "is_artifact_ref", "get_artifact_id", "compute_artifact_id",
    ],
    "abstractruntime.storage.offloading": ["OffloadingRunStore", "OffloadingLedgerStore", "offload_large_values"],
    "abstractruntime.scheduler": [
        "WorkflowRegistry", "Scheduler", "SchedulerStats", "ScheduledRuntime", "create_scheduled_runtime",
    ],
    "abstractruntime.storage.base": ["RunStore", "LedgerStore", "QueryableRunStore", "QueryableRunIndexStore"],
    "abstractruntime.storage.in_memory": ["InMemoryRunStore", "InMemoryLedgerStore"],
    "abstractruntime.storage.json_files": ["JsonFileRunStore", "JsonlLedgerStore"],
    "abstractruntime.storage.sqlite": ["SqliteDatabase", "SqliteRunStore", "SqliteLedgerStore"],
    "abstractruntime.storage.ledger_chain": ["HashChainedLedgerStore", "verify_ledger_chain", "compute_record_hash"],
    "abstractruntime.storage.snapshots": ["Snapshot", "InMemorySnapshotStore", "JsonSnapshotStore"],
}  # fmt: skip


@pytest.mark.parametrize("name", ROOT_NAMES)
def test_the_package_root_exports_every_published_name(name):
    import abstractruntime

    assert getattr(abstractruntime, name) is not None
    assert name in abstractruntime.__all__


@pytest.mark.parametrize("module,names", sorted(MODULE_NAMES.items()))
def test_published_module_paths_hold_their_names(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_effect_outcome_completed_and_failed_build_outcomes():
    from abstractruntime.core.runtime import EffectOutcome

    done = EffectOutcome.completed({"x": 1})
    assert (done.status, done.result) == ("completed", {"x": 1})
    failed = EffectOutcome.failed("boom")
    assert (failed.status, failed.error, failed.retryable) == ("failed", "boom", True)
    assert EffectOutcome.failed("bad input", retryable=False).retryable is False
