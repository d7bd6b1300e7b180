"""The per-run hash chain over ledger records, and its verifier.

Each record's `record_hash` is the SHA-256 of its canonical JSON (sorted keys, compact,
without `record_hash` and `signature`) with `prev_hash` set to the previous record's hash.
Changing, removing or reordering any record breaks the chain from that point on.
The chain is tamper-evident, not tamper-proof: whoever can rewrite every later record can
forge it; signatures are out of scope.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from .jsonutil import canonical, sha256_hex
from .models import StepRecord


def compute_record_hash(*, record: Dict[str, Any], prev_hash: Optional[str]) -> str:
    clean = {k: v for k, v in record.items() if k not in ("record_hash", "signature")}
    clean["prev_hash"] = prev_hash
    return sha256_hex(canonical(clean))


def chain_records(
    records: Iterable[StepRecord], seq: int, prev_hash: Optional[str]
) -> List[Tuple[Dict[str, Any], str]]:
    """Assign seq/prev_hash/record_hash; return (stored dict, JSON line without newline) pairs.

    Raises TypeError/ValueError if a record holds a value JSON cannot carry; nothing is
    assigned to the store in that case, the caller decides what fails.
    """
    out: List[Tuple[Dict[str, Any], str]] = []
    for rec in records:
        seq += 1
        rec.seq = seq
        rec.prev_hash = prev_hash
        d = rec.to_dict(hashed_only=True)
        canon = canonical(d)
        h = sha256_hex(canon)
        rec.record_hash = h
        # The line is the canonical text plus the hash: one JSON encoding per record.
        line = canon[:-1] + ',"record_hash":"' + h + '","signature":null}'
        d["record_hash"] = h
        d["signature"] = None
        out.append((d, line))
        prev_hash = h
    return out


def verify_ledger_chain(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Check seq numbering and the hash chain; returns {ok, count, errors, first_bad_index,
    head_hash (as stored), computed_head_hash (the last record's hash recomputed; None when a
    record has no hash)}."""
    errors: List[Dict[str, Any]] = []
    prev: Optional[str] = None
    for i, r in enumerate(records):
        if r.get("seq") is not None and r.get("seq") != i + 1:
            errors.append({"index": i, "type": "seq_mismatch", "expected": i + 1, "actual": r.get("seq")})
        if r.get("prev_hash") != prev:
            errors.append({"index": i, "type": "prev_hash_mismatch", "expected": prev, "actual": r.get("prev_hash")})
        stored = r.get("record_hash")
        if not stored:
            errors.append({"index": i, "type": "missing_record_hash"})
            break
        computed = compute_record_hash(record=r, prev_hash=r.get("prev_hash"))
        if computed != stored:
            errors.append({"index": i, "type": "record_hash_mismatch", "stored": stored, "computed": computed})
        prev = stored
    computed_head = None
    if records and all(r.get("record_hash") for r in records):
        last = records[-1]
        computed_head = compute_record_hash(record=last, prev_hash=last.get("prev_hash"))
    return {
        "ok": not errors,
        "count": len(records),
        "errors": errors,
        "first_bad_index": errors[0]["index"] if errors else None,
        "head_hash": records[-1].get("record_hash") if records else None,
        "computed_head_hash": computed_head,
    }
