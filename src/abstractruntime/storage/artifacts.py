"""Content-addressed artifact stores: large payloads kept by reference, out of run state.

An artifact's id is the SHA-256 of its bytes, so storing the same content twice stores it
once, and a reference is stable across processes. A reference in JSON state looks like
`{"$artifact": "<id>", "content_type": ..., "size_bytes": ...}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..core.models import utc_now_iso
from ._durable import atomic_write, open_dir_fd


@dataclass
class ArtifactMetadata:
    artifact_id: str
    content_type: str
    size_bytes: int
    created_at: str = field(default_factory=utc_now_iso)
    run_id: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Artifact:
    metadata: ArtifactMetadata
    content: bytes

    @property
    def artifact_id(self) -> str:
        return self.metadata.artifact_id


def compute_artifact_id(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def artifact_ref(
    artifact_id: str, *, content_type: Optional[str] = None, size_bytes: Optional[int] = None
) -> Dict[str, Any]:
    ref: Dict[str, Any] = {"$artifact": artifact_id}
    if content_type:
        ref["content_type"] = content_type
    if size_bytes is not None:
        ref["size_bytes"] = size_bytes
    return ref


def is_artifact_ref(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("$artifact"), str)


class ArtifactStore(ABC):
    @abstractmethod
    def store(
        self,
        content: bytes,
        *,
        content_type: str = "application/octet-stream",
        run_id: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
    ) -> ArtifactMetadata: ...

    @abstractmethod
    def load(self, artifact_id: str) -> Optional[Artifact]: ...

    @abstractmethod
    def get_metadata(self, artifact_id: str) -> Optional[ArtifactMetadata]: ...

    @abstractmethod
    def delete(self, artifact_id: str) -> bool: ...

    @abstractmethod
    def list_by_run(self, run_id: str) -> List[ArtifactMetadata]: ...

    def exists(self, artifact_id: str) -> bool:
        return self.get_metadata(artifact_id) is not None

    def store_json(
        self, value: Any, *, run_id: Optional[str] = None, tags: Optional[Dict[str, str]] = None
    ) -> ArtifactMetadata:
        body = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        return self.store(body, content_type="application/json", run_id=run_id, tags=tags)

    def load_json(self, artifact_id: str) -> Any:
        art = self.load(artifact_id)
        if art is None:
            raise KeyError(f"no artifact {artifact_id!r}")
        return json.loads(art.content)


def resolve_artifact(value: Any, store: ArtifactStore) -> Any:
    """The bytes (or, for JSON artifacts, the value) a reference points at."""
    if not is_artifact_ref(value):
        return value
    art = store.load(value["$artifact"])
    if art is None:
        raise KeyError(f"no artifact {value['$artifact']!r}")
    if art.metadata.content_type == "application/json":
        return json.loads(art.content)
    return art.content


class InMemoryArtifactStore(ArtifactStore):
    def __init__(self) -> None:
        self._blobs: Dict[str, bytes] = {}
        self._meta: Dict[str, ArtifactMetadata] = {}
        self._lock = threading.Lock()

    def store(self, content, *, content_type="application/octet-stream", run_id=None, tags=None):
        aid = compute_artifact_id(content)
        meta = ArtifactMetadata(aid, content_type, len(content), run_id=run_id, tags=dict(tags or {}))
        with self._lock:
            self._blobs.setdefault(aid, bytes(content))
            self._meta[aid] = meta
        return meta

    def load(self, artifact_id):
        with self._lock:
            blob, meta = self._blobs.get(artifact_id), self._meta.get(artifact_id)
        return Artifact(meta, blob) if blob is not None and meta is not None else None

    def get_metadata(self, artifact_id):
        return self._meta.get(artifact_id)

    def delete(self, artifact_id):
        with self._lock:
            self._meta.pop(artifact_id, None)
            return self._blobs.pop(artifact_id, None) is not None

    def list_by_run(self, run_id):
        return [m for m in list(self._meta.values()) if m.run_id == run_id]


class FileArtifactStore(ArtifactStore):
    """`<base>/artifacts/<id[:2]>/<id>` holds the bytes, `<id>.meta.json` the metadata."""

    def __init__(self, base_dir: Any, *, durable: bool = True) -> None:
        self.root = os.path.join(os.path.abspath(str(base_dir)), "artifacts")
        os.makedirs(self.root, exist_ok=True)
        self.durable = durable

    def _paths(self, artifact_id: str) -> tuple[str, str]:
        if len(artifact_id) != 64 or any(c not in "0123456789abcdef" for c in artifact_id):
            raise ValueError(f"invalid artifact id {artifact_id!r}")
        d = os.path.join(self.root, artifact_id[:2])
        return os.path.join(d, artifact_id), os.path.join(d, artifact_id + ".meta.json")

    def store(self, content, *, content_type="application/octet-stream", run_id=None, tags=None):
        aid = compute_artifact_id(content)
        blob, meta_path = self._paths(aid)
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        dfd = open_dir_fd(os.path.dirname(blob))
        try:
            if not os.path.exists(blob):  # content-addressed: an existing blob is the same bytes
                atomic_write(blob, bytes(content), durable=self.durable, dir_fd=dfd)
            meta = ArtifactMetadata(aid, content_type, len(content), run_id=run_id, tags=dict(tags or {}))
            atomic_write(meta_path, json.dumps(meta.to_dict()).encode(), durable=self.durable, dir_fd=dfd)
        finally:
            os.close(dfd)
        return meta

    def load(self, artifact_id):
        meta = self.get_metadata(artifact_id)
        if meta is None:
            return None
        with open(self._paths(artifact_id)[0], "rb") as f:
            return Artifact(meta, f.read())

    def get_metadata(self, artifact_id):
        try:
            with open(self._paths(artifact_id)[1], "rb") as f:
                return ArtifactMetadata(**json.loads(f.read()))
        except FileNotFoundError:
            return None

    def delete(self, artifact_id):
        blob, meta = self._paths(artifact_id)
        found = False
        for p in (blob, meta):
            try:
                os.unlink(p)
                found = True
            except FileNotFoundError:
                pass
        return found

    def list_by_run(self, run_id):
        out = []
        for sub in os.listdir(self.root):
            d = os.path.join(self.root, sub)
            for name in os.listdir(d) if os.path.isdir(d) else ():
                if name.endswith(".meta.json"):
                    m = self.get_metadata(name[: -len(".meta.json")])
                    if m is not None and m.run_id == run_id:
                        out.append(m)
        return out
