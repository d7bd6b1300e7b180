"""HashChainedLedgerStore and verify_ledger_chain, as published."""

from __future__ import annotations

import json
from dataclasses import asdict

from abstractruntime import (
    Effect,
    EffectType,
    HashChainedLedgerStore,
    InMemoryLedgerStore,
    InMemoryRunStore,
    Runtime,
    StepPlan,
    WorkflowSpec,
    verify_ledger_chain,
)

SAY = WorkflowSpec(
    workflow_id="say",
    entry_node="n",
    nodes={
        "n": lambda run, ctx: StepPlan(
            node_id="n", effect=Effect(EffectType.ANSWER_USER, {"message": "hi"}, "o"), next_node="d"
        ),
        "d": lambda run, ctx: StepPlan(node_id="d", complete_output={"ok": 1}),
    },
)


def run_once(ledger):
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=ledger)
    rid = rt.start(workflow=SAY)
    rt.tick(workflow=SAY, run_id=rid)
    return ledger.list(rid)


def test_hash_chained_ledger_store_adds_record_hash_and_prev_hash():
    recs = run_once(HashChainedLedgerStore(InMemoryLedgerStore()))
    assert all(r["record_hash"] for r in recs)
    assert recs[0]["prev_hash"] is None and all(
        b["prev_hash"] == a["record_hash"] for a, b in zip(recs, recs[1:], strict=False)
    )


def test_hash_chained_ledger_store_chains_over_a_plain_append_and_list_store():
    class Plain:  # a ledger of the host's own: it only keeps what it is given
        def __init__(self):
            self.rows = {}

        def append(self, record):
            self.rows.setdefault(record.run_id, []).append(json.loads(json.dumps(asdict(record))))

        def list(self, run_id):
            return list(self.rows.get(run_id, []))

    recs = run_once(HashChainedLedgerStore(Plain()))
    assert len(recs) >= 2 and verify_ledger_chain(recs)["ok"]


def test_verify_ledger_chain_reports_ok_count_head_and_the_first_bad_record():
    recs = run_once(HashChainedLedgerStore(InMemoryLedgerStore()))
    good = verify_ledger_chain(recs)
    assert good["ok"] and good["count"] == len(recs) and good["first_bad_index"] is None
    assert good["head_hash"] == recs[-1]["record_hash"] == good["computed_head_hash"] and good["errors"] == []
    tampered = [dict(r) for r in recs]
    tampered[1]["result"] = {"tampered": True}
    bad = verify_ledger_chain(tampered)
    assert not bad["ok"] and bad["first_bad_index"] == 1 and bad["errors"][0]["type"] == "record_hash_mismatch"
    unhashed = [dict(r) for r in recs]
    del unhashed[0]["record_hash"]
    report = verify_ledger_chain(unhashed)
    assert report["errors"][0] == {"index": 0, "type": "missing_record_hash"}
    assert verify_ledger_chain([]) == {
        "ok": True, "count": 0, "errors": [], "first_bad_index": None, "head_hash": None, "computed_head_hash": None,
    }  # fmt: skip
