"""Durability backends: one interface (`base`), one module per backend."""

from .artifacts import (
    Artifact,
    ArtifactDescriptor,
    ArtifactMetadata,
    ArtifactStore,
    FileArtifactStore,
    InMemoryArtifactStore,
    artifact_ref,
    compute_artifact_id,
    get_artifact_id,
    is_artifact_ref,
    resolve_artifact,
)
from .base import LedgerStore, QueryableRunIndexStore, QueryableRunStore, RunStore, RunSummary
from .in_memory import InMemoryLedgerStore, InMemoryRunStore
from .json_files import JsonFileRunStore, JsonlLedgerStore
from .ledger_chain import HashChainedLedgerStore, verify_ledger_chain
from .offloading import OffloadingLedgerStore, OffloadingRunStore, offload_large_values
from .snapshots import InMemorySnapshotStore, JsonSnapshotStore, Snapshot, SnapshotStore
from .sqlite import SqliteDatabase, SqliteLedgerStore, SqliteRunStore
from .stores import Stores, open_stores

__all__ = [
    "Artifact",
    "ArtifactDescriptor",
    "ArtifactMetadata",
    "ArtifactStore",
    "FileArtifactStore",
    "HashChainedLedgerStore",
    "InMemoryArtifactStore",
    "InMemoryLedgerStore",
    "InMemoryRunStore",
    "InMemorySnapshotStore",
    "JsonFileRunStore",
    "JsonSnapshotStore",
    "JsonlLedgerStore",
    "LedgerStore",
    "OffloadingLedgerStore",
    "OffloadingRunStore",
    "QueryableRunIndexStore",
    "QueryableRunStore",
    "RunStore",
    "RunSummary",
    "Snapshot",
    "SnapshotStore",
    "SqliteDatabase",
    "SqliteLedgerStore",
    "SqliteRunStore",
    "Stores",
    "artifact_ref",
    "compute_artifact_id",
    "get_artifact_id",
    "is_artifact_ref",
    "offload_large_values",
    "open_stores",
    "resolve_artifact",
    "verify_ledger_chain",
]
