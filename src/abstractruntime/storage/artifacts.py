"""Artifact stores: large payloads kept by reference, out of run state and ledgers.

An artifact is bytes plus metadata, named by an id of 32 hex characters. Without a given id
the id is derived from the content (and the run it belongs to, if any), so storing the same
bytes for the same run twice stores them once. The bytes themselves are kept once per distinct
content (a blob named by their SHA-256), however many artifacts share them. A reference in
JSON state is `{"$artifact": "<id>"}`; nodes pass references between them and read the bytes
from the runtime's `artifact_store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from abc import ABC
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Iterable, List, Optional, Union

from ..core.models import utc_now_iso
from ._durable import atomic_write, open_dir_fd

_ID = re.compile(r"^[A-Za-z0-9_-]+$")

__all__ = [
    "Artifact",
    "ArtifactDescriptor",
    "ArtifactMetadata",
    "ArtifactStore",
    "FileArtifactStore",
    "InMemoryArtifactStore",
    "artifact_ref",
    "compute_artifact_id",
    "get_artifact_id",
    "is_artifact_ref",
    "resolve_artifact",
]


def _kind_of(content_type: str) -> str:
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct == "application/json" or ct.endswith("+json"):
        return "json"
    for prefix in ("text", "image", "audio", "video"):
        if ct.startswith(prefix + "/"):
            return prefix
    return "binary"


@dataclass
class ArtifactDescriptor:
    """What an artifact is, for whoever shows or routes it: its kind (from its content type
    unless given) and where it came from (run, workflow, node, step...)."""

    schema: str = "abstractruntime.artifact_descriptor.v1"
    schema_version: int = 1
    semantic_kind: str = ""
    render_kind: str = ""
    modality: str = ""
    task: str = ""
    classification_source: str = ""
    session_id: Optional[str] = None
    workflow_id: Optional[str] = None
    node_id: Optional[str] = None
    step_id: Optional[str] = None
    effect_id: Optional[str] = None
    turn_id: Optional[str] = None
    ledger_cursor: Optional[str] = None
    parent_run_id: Optional[str] = None
    actor_id: Optional[str] = None
    producer: Dict[str, Any] = field(default_factory=dict)
    provenance: Dict[str, Any] = field(default_factory=dict)
    generation: Dict[str, Any] = field(default_factory=dict)
    media: Dict[str, Any] = field(default_factory=dict)
    source_refs: List[Dict[str, Any]] = field(default_factory=list)
    links: Dict[str, Any] = field(default_factory=dict)
    security: Dict[str, Any] = field(default_factory=dict)
    actions: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> ArtifactDescriptor:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    @classmethod
    def coerce(cls, value: Union[ArtifactDescriptor, Dict[str, Any], None], content_type: str) -> ArtifactDescriptor:
        d = value if isinstance(value, ArtifactDescriptor) else cls.from_dict(value)
        if not d.semantic_kind:
            kind = _kind_of(content_type)
            d.semantic_kind = kind
            d.render_kind = d.render_kind or kind
            d.modality = d.modality or kind
            d.classification_source = d.classification_source or "content_type"
        return d


@dataclass
class ArtifactMetadata:
    artifact_id: str
    content_type: str
    size_bytes: int
    created_at: str = field(default_factory=utc_now_iso)
    blob_id: Optional[str] = None  # SHA-256 of the bytes
    run_id: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    metadata: Dict[str, Any] = field(default_factory=dict)
    descriptor: ArtifactDescriptor = field(default_factory=ArtifactDescriptor)

    def to_dict(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["tags"], d["metadata"] = dict(self.tags), dict(self.metadata)
        d["descriptor"] = self.descriptor.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ArtifactMetadata:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["descriptor"] = ArtifactDescriptor.from_dict(d.get("descriptor"))
        return cls(**kw)


@dataclass
class Artifact:
    metadata: ArtifactMetadata
    content: bytes

    @property
    def artifact_id(self) -> str:
        return self.metadata.artifact_id

    @property
    def content_type(self) -> str:
        return self.metadata.content_type

    def as_text(self, encoding: str = "utf-8") -> str:
        return self.content.decode(encoding)

    def as_json(self) -> Any:
        return json.loads(self.content)


def compute_artifact_id(content: bytes, run_id: Optional[str] = None) -> str:
    """The id `store(content, run_id=run_id)` gives when no id is asked for: 32 hex characters."""
    h = hashlib.sha256()
    if run_id is not None:
        h.update(b"run:" + str(run_id).encode() + b"\x00")
    h.update(content)
    return h.hexdigest()[:32]


def artifact_ref(
    artifact_id: str, *, content_type: Optional[str] = None, size_bytes: Optional[int] = None
) -> Dict[str, Any]:
    """`{"$artifact": id}`, the reference nodes pass around (optionally with a hint of what it is)."""
    ref: Dict[str, Any] = {"$artifact": artifact_id}
    if content_type:
        ref["content_type"] = content_type
    if size_bytes is not None:
        ref["size_bytes"] = size_bytes
    return ref


def is_artifact_ref(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("$artifact"), str)


def get_artifact_id(ref: Dict[str, Any]) -> str:
    """The id a reference names (ValueError if `ref` is not a reference)."""
    if not is_artifact_ref(ref):
        raise ValueError(f"not an artifact reference: {ref!r}")
    return ref["$artifact"]


def resolve_artifact(ref: Dict[str, Any], store: ArtifactStore) -> Optional[Artifact]:
    """The artifact a reference names, or None if the store does not have it."""
    return store.load(get_artifact_id(ref))


def check_artifact_id(artifact_id: Any) -> str:
    if artifact_id is None or artifact_id == "":
        raise ValueError("artifact_id cannot be empty")
    if not isinstance(artifact_id, str) or not _ID.match(artifact_id):
        raise ValueError(
            f"Invalid artifact_id {artifact_id!r}: use letters, digits, '-' and '_' only (no '/' or '.'), "
            "since the id names a file"
        )
    return artifact_id


def _matches(
    m: ArtifactMetadata, run_id: Optional[str], content_type: Optional[str], tags: Optional[Dict[str, str]]
) -> bool:
    if run_id is not None and m.run_id != run_id:
        return False
    if content_type is not None and m.content_type != content_type:
        return False
    return all(m.tags.get(k) == v for k, v in (tags or {}).items())


class ArtifactStore(ABC):  # noqa: B024 - an ABC by name, as published; its hooks have defaults
    """Where artifacts live. The stores here implement five hooks (`_put`, `_content`,
    `get_metadata`, `_all`, `_drop`) and get the rest from this class; a store of one's own may
    override the public methods instead, as with the published package's base class."""

    def _put(self, meta: ArtifactMetadata, content: bytes) -> None:
        """Keep the bytes (under `meta.blob_id`) and the metadata (under `meta.artifact_id`)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither store() nor _put()")

    def _content(self, meta: ArtifactMetadata) -> Optional[bytes]:
        raise NotImplementedError(f"{type(self).__name__} implements neither load() nor _content()")

    def get_metadata(self, artifact_id: str) -> Optional[ArtifactMetadata]:
        raise NotImplementedError(f"{type(self).__name__} does not implement get_metadata()")

    def _all(self) -> Iterable[ArtifactMetadata]:
        """Every artifact's metadata (any order)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither search() nor _all()")

    def _drop(self, meta: ArtifactMetadata) -> None:
        """Forget one artifact (its bytes too when no other artifact shares them)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither delete() nor _drop()")

    # -- the published API -------------------------------------------------------------------

    def store(
        self,
        content: bytes,
        *,
        content_type: str = "application/octet-stream",
        run_id: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        descriptor: Union[ArtifactDescriptor, Dict[str, Any], None] = None,
        artifact_id: Optional[str] = None,
    ) -> ArtifactMetadata:
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"artifact content must be bytes, got {type(content).__name__}")
        content = bytes(content)
        aid = check_artifact_id(artifact_id) if artifact_id is not None else compute_artifact_id(content, run_id)
        meta = ArtifactMetadata(
            artifact_id=aid,
            content_type=content_type,
            size_bytes=len(content),
            blob_id=hashlib.sha256(content).hexdigest(),
            run_id=run_id,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            metadata=dict(metadata or {}),
            descriptor=ArtifactDescriptor.coerce(descriptor, content_type),
        )
        self._put(meta, content)
        return meta

    def load(self, artifact_id: str) -> Optional[Artifact]:
        meta = self.get_metadata(artifact_id)
        if meta is None:
            return None
        content = self._content(meta)
        return Artifact(meta, content) if content is not None else None

    def exists(self, artifact_id: str) -> bool:
        return self.get_metadata(artifact_id) is not None

    def delete(self, artifact_id: str) -> bool:
        meta = self.get_metadata(artifact_id)
        if meta is None:
            return False
        self._drop(meta)
        return True

    def list_by_run(self, run_id: str) -> List[ArtifactMetadata]:
        return self.search(run_id=run_id, limit=None)

    def list_all(self, *, limit: Optional[int] = 1000) -> List[ArtifactMetadata]:
        return self.search(limit=limit)

    def search(
        self,
        *,
        run_id: Optional[str] = None,
        content_type: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
        limit: Optional[int] = 1000,
    ) -> List[ArtifactMetadata]:
        """Artifacts matching every filter given (tags: each named tag has the value), newest first."""
        found = [m for m in self._all() if _matches(m, run_id, content_type, tags)]
        found.sort(key=lambda m: m.created_at, reverse=True)
        return found if limit is None else found[: max(0, int(limit))]

    def delete_by_run(self, run_id: str) -> int:
        gone = self.search(run_id=run_id, limit=None)
        for m in gone:
            self._drop(m)
        return len(gone)

    def update_metadata(
        self,
        artifact_id: str,
        *,
        tags: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        replace_tags: bool = False,
        replace_metadata: bool = False,
    ) -> Optional[ArtifactMetadata]:
        meta = self.get_metadata(artifact_id)
        if meta is None:
            return None
        if tags is not None:
            meta.tags = dict(tags) if replace_tags else {**meta.tags, **tags}
        if metadata is not None:
            meta.metadata = dict(metadata) if replace_metadata else {**meta.metadata, **metadata}
        content = self._content(meta)
        if content is None:
            return None
        self._put(meta, content)
        return meta

    def store_text(
        self,
        text: str,
        *,
        content_type: str = "text/plain",
        encoding: str = "utf-8",
        run_id: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        descriptor: Union[ArtifactDescriptor, Dict[str, Any], None] = None,
    ) -> ArtifactMetadata:
        return self.store(
            text.encode(encoding),
            content_type=content_type,
            run_id=run_id,
            tags=tags,
            metadata=metadata,
            descriptor=descriptor,
        )

    def store_json(
        self,
        data: Any,
        *,
        run_id: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        descriptor: Union[ArtifactDescriptor, Dict[str, Any], None] = None,
    ) -> ArtifactMetadata:
        body = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
        return self.store(
            body, content_type="application/json", run_id=run_id, tags=tags, metadata=metadata, descriptor=descriptor
        )

    def load_text(self, artifact_id: str, encoding: str = "utf-8") -> Optional[str]:
        art = self.load(artifact_id)
        return art.as_text(encoding) if art is not None else None

    def load_json(self, artifact_id: str) -> Optional[Any]:
        art = self.load(artifact_id)
        return art.as_json() if art is not None else None


class InMemoryArtifactStore(ArtifactStore):
    def __init__(self) -> None:
        self._blobs: Dict[str, bytes] = {}
        self._meta: Dict[str, ArtifactMetadata] = {}
        self._lock = threading.Lock()

    def _put(self, meta: ArtifactMetadata, content: bytes) -> None:
        with self._lock:
            self._blobs.setdefault(meta.blob_id or "", content)
            self._meta[meta.artifact_id] = ArtifactMetadata.from_dict(meta.to_dict())

    def _content(self, meta: ArtifactMetadata) -> Optional[bytes]:
        return self._blobs.get(meta.blob_id or "")

    def get_metadata(self, artifact_id: str) -> Optional[ArtifactMetadata]:
        m = self._meta.get(artifact_id)
        return ArtifactMetadata.from_dict(m.to_dict()) if m is not None else None  # a copy: edits stay local

    def _all(self) -> Iterable[ArtifactMetadata]:
        with self._lock:
            return list(self._meta.values())

    def _drop(self, meta: ArtifactMetadata) -> None:
        with self._lock:
            self._meta.pop(meta.artifact_id, None)
            if not any(m.blob_id == meta.blob_id for m in self._meta.values()):
                self._blobs.pop(meta.blob_id or "", None)


class FileArtifactStore(ArtifactStore):
    """`<base_dir>/blobs/<sha256>` holds each distinct content once; `<base_dir>/refs/<id>.json`
    each artifact's metadata. Writes are atomic (and synced unless `durable=False`)."""

    def __init__(self, base_dir: Any, *, durable: bool = True) -> None:
        self.root = os.path.abspath(str(base_dir))
        self.blobs = os.path.join(self.root, "blobs")
        self.refs = os.path.join(self.root, "refs")
        os.makedirs(self.blobs, exist_ok=True)
        os.makedirs(self.refs, exist_ok=True)
        self.durable = durable
        self._lock = threading.Lock()

    def _blob_path(self, blob_id: str) -> str:
        if len(blob_id) != 64 or any(c not in "0123456789abcdef" for c in blob_id):
            raise ValueError(f"invalid blob id {blob_id!r}")
        return os.path.join(self.blobs, blob_id)

    def _ref_path(self, artifact_id: str) -> str:
        return os.path.join(self.refs, check_artifact_id(artifact_id) + ".json")

    def _write(self, folder: str, path: str, data: bytes) -> None:
        dfd = open_dir_fd(folder)
        try:
            atomic_write(path, data, durable=self.durable, dir_fd=dfd)
        finally:
            os.close(dfd)

    def _put(self, meta: ArtifactMetadata, content: bytes) -> None:
        blob = self._blob_path(meta.blob_id or "")
        with self._lock:
            if not os.path.exists(blob):  # named by its SHA-256: an existing blob is the same bytes
                self._write(self.blobs, blob, content)
            self._write(self.refs, self._ref_path(meta.artifact_id), json.dumps(meta.to_dict()).encode())

    def _content(self, meta: ArtifactMetadata) -> Optional[bytes]:
        try:
            with open(self._blob_path(meta.blob_id or ""), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def get_metadata(self, artifact_id: str) -> Optional[ArtifactMetadata]:
        try:
            with open(self._ref_path(artifact_id), "rb") as f:
                return ArtifactMetadata.from_dict(json.loads(f.read()))
        except FileNotFoundError:
            return None

    def _all(self) -> Iterable[ArtifactMetadata]:
        out = []
        for name in os.listdir(self.refs):
            if name.endswith(".json") and not name.startswith("."):
                m = self.get_metadata(name[: -len(".json")])
                if m is not None:
                    out.append(m)
        return out

    def _drop(self, meta: ArtifactMetadata) -> None:
        with self._lock:
            try:
                os.unlink(self._ref_path(meta.artifact_id))
            except FileNotFoundError:
                pass
            if meta.blob_id and not any(m.blob_id == meta.blob_id for m in self._all()):
                try:
                    os.unlink(self._blob_path(meta.blob_id))
                except FileNotFoundError:
                    pass
