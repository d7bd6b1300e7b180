"""The generated protocol files are current, and the golden messages match the models."""

from __future__ import annotations

import json

import pytest

from abstractruntime.protocol import METHODS
from abstractruntime.protocol.spec import outputs
from conftest import ROOT


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in outputs(ROOT)))
def test_generated_file_is_current(path):
    want = outputs(ROOT)[ROOT / path]
    have = (ROOT / path).read_text()
    assert have == want, f"{path} is stale: run `python -m abstractruntime.protocol.spec`"


def test_golden_messages_match_the_models():
    golden = json.loads((ROOT / "protocol" / "golden.json").read_text())["messages"]
    assert set(golden) == {m.name for m in METHODS}
    for m in METHODS:
        msg = golden[m.name] if m.notification else golden[m.name]["request"]
        assert msg["method"] == m.name
        m.params.model_validate(msg["params"])
        if not m.notification and m.result is not None:
            m.result.model_validate(golden[m.name]["response"]["result"])


def test_spec_lists_every_method_and_error():
    spec = json.loads((ROOT / "protocol" / "openrpc.json").read_text())
    assert [x["name"] for x in spec["methods"]] == [m.name for m in METHODS]
    codes = {e["code"] for e in spec["components"]["x-errors"].values()}
    assert {-32700, -32600, -32601, -32602, -32002, 1001, 1003, 1004, 1005} <= codes


def test_the_wire_models_name_every_field_the_kernel_writes():
    # The kernel stays free of pydantic, so its dataclasses and the protocol's models are
    # written twice: this keeps the two from drifting apart.
    from abstractruntime import RunState, StepRecord
    from abstractruntime.protocol import models as m
    from abstractruntime.storage.base import RunSummary

    run = RunState.new(workflow_id="w", entry_node="a")
    assert set(run.to_dict()) == set(m.RunStateModel.model_fields)
    assert set(RunSummary.from_state(run).to_dict()) == set(m.RunSummaryModel.model_fields)
    rec = StepRecord.start(run=run, node_id="a", effect=None).to_dict()
    assert set(rec) == set(m.LedgerRecordModel.model_fields)
