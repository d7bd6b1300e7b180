"""Durability backends: one interface (`base`), one module per backend."""

from .artifacts import ArtifactStore, FileArtifactStore, InMemoryArtifactStore, artifact_ref, is_artifact_ref
from .base import LedgerStore, QueryableRunStore, RunStore, RunSummary
from .in_memory import InMemoryLedgerStore, InMemoryRunStore
from .json_files import JsonFileRunStore, JsonlLedgerStore
from .ledger_chain import HashChainedLedgerStore, verify_ledger_chain
from .sqlite import SqliteDatabase, SqliteLedgerStore, SqliteRunStore
from .stores import Stores, open_stores

__all__ = [
    "ArtifactStore",
    "FileArtifactStore",
    "HashChainedLedgerStore",
    "InMemoryArtifactStore",
    "InMemoryLedgerStore",
    "InMemoryRunStore",
    "JsonFileRunStore",
    "JsonlLedgerStore",
    "LedgerStore",
    "QueryableRunStore",
    "RunStore",
    "RunSummary",
    "SqliteDatabase",
    "SqliteLedgerStore",
    "SqliteRunStore",
    "Stores",
    "artifact_ref",
    "is_artifact_ref",
    "open_stores",
    "verify_ledger_chain",
]
