"""Canonical JSON and the checks that keep durable state JSON-safe."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

try:  # optional: the kernel needs only the standard library (see `loads` and `wire`)
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson comes with the daemon's dependencies
    _orjson = None  # type: ignore[assignment]

_dumps_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_dumps_canonical = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False).encode


def dumps(obj: Any) -> str:
    """Compact JSON; raises TypeError/ValueError on anything JSON cannot carry."""
    return _dumps_compact(obj)


def canonical(obj: Any) -> str:
    """Sorted-key compact JSON: the byte form ledger hashes are computed over."""
    return _dumps_canonical(obj)


def loads(text: Any) -> Any:
    """`json.loads`, through orjson when it is installed: the same values for any JSON this
    package writes, several times faster; what orjson refuses (integers beyond 64 bits, lone
    surrogates) goes through the standard library, which takes it."""
    if _orjson is not None:
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(text)


def wire(obj: Any) -> bytes:
    """Compact JSON as UTF-8 bytes, for messages and events built from data that was already
    stored (so JSON-safe): through orjson when it is installed, else the standard library.
    Not for hashes (`canonical` is their byte form) nor for checkpoints (`dumps` refuses NaN,
    which orjson would write as null)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except TypeError:  # beyond what orjson encodes (integers over 64 bits, non-string keys)
            pass
    return json.dumps(obj, separators=(",", ":")).encode()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def find_unserializable(obj: Any, path: str = "vars") -> Optional[str]:
    """Return a readable path to the first value JSON cannot carry, e.g. `vars['a'][2]` (set)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return None
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return f"{path} (float {obj!r} is not valid JSON)"
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                return f"{path} (key {k!r} of type {type(k).__name__} is not a string)"
            found = find_unserializable(v, f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = find_unserializable(v, f"{path}[{i}]")
            if found:
                return found
        return None
    return f"{path} ({type(obj).__name__})"
