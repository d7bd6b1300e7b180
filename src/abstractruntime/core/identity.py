"""`ActorFingerprint`: a stable id for whoever acts on runs (a person, an agent, a service),
derived from what describes it, so the same description always gives the same `actor_id`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from .jsonutil import canonical, sha256_hex


@dataclass(frozen=True)
class ActorFingerprint:
    actor_id: str
    kind: str
    display_name: Optional[str] = None
    metadata: Optional[Dict[str, Any]] = None

    @classmethod
    def from_metadata(
        cls, *, kind: str, display_name: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None
    ) -> ActorFingerprint:
        """`ar_` and 24 hex characters of a hash of the kind, name and metadata."""
        meta = dict(metadata or {})
        digest = sha256_hex(canonical({"kind": kind, "display_name": display_name, "metadata": meta}))
        return cls(actor_id=f"ar_{digest[:24]}", kind=kind, display_name=display_name, metadata=meta)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "actor_id": self.actor_id,
            "kind": self.kind,
            "display_name": self.display_name,
            "metadata": dict(self.metadata or {}),
        }
