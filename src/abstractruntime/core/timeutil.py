"""ISO-8601 helpers: every `until` is compared as epoch seconds, whatever its offset."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_to_epoch(value: str) -> float:
    """Parse an ISO-8601 timestamp; a naive one is taken as UTC. Raises ValueError if bad."""
    dt = datetime.fromisoformat(str(value).strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def epoch_to_iso(epoch: float) -> str:
    """Epoch seconds as ISO-8601 in UTC (`2026-01-01T00:00:00+00:00`)."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()
