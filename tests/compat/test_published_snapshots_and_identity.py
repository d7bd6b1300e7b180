"""Snapshots and ActorFingerprint, as published."""

from __future__ import annotations

import re

import pytest

from abstractruntime import ActorFingerprint, RunState
from abstractruntime.storage.snapshots import InMemorySnapshotStore, JsonSnapshotStore, Snapshot


@pytest.fixture(params=["memory", "json"])
def snaps(request, tmp_path):
    return InMemorySnapshotStore() if request.param == "memory" else JsonSnapshotStore(tmp_path / "snaps")


def test_a_snapshot_copies_a_runs_state_under_a_name(snaps):
    run = RunState.new(workflow_id="w", entry_node="a", vars={"x": 1})
    s = Snapshot.from_run(run=run, name="first", description="before the change", tags=["a", "b"])
    run.vars["x"] = 2  # later changes to the run do not reach the snapshot
    assert (s.name, s.run_id, s.tags) == ("first", run.run_id, ["a", "b"]) and s.snapshot_id
    assert isinstance(s.run_state, dict) and s.run_state["vars"] == {"x": 1}
    snaps.save(s)
    snaps.save(Snapshot.from_run(run=run, name="second one", tags=["b"]))
    assert snaps.load(s.snapshot_id).run_state["vars"] == {"x": 1}
    assert [x.name for x in snaps.list()] == ["second one", "first"]
    assert [x.name for x in snaps.list(tag="a")] == ["first"]
    assert [x.name for x in snaps.list(query="second")] == ["second one"]
    assert [x.name for x in snaps.list(query="BEFORE")] == ["first"]
    assert snaps.delete(s.snapshot_id) is True and snaps.delete(s.snapshot_id) is False
    assert snaps.load(s.snapshot_id) is None


def test_actor_fingerprint_from_metadata_is_a_stable_id():
    a = ActorFingerprint.from_metadata(kind="human", display_name="Ann")
    assert re.fullmatch(r"ar_[0-9a-f]{24}", a.actor_id)
    assert a.actor_id == ActorFingerprint.from_metadata(kind="human", display_name="Ann").actor_id
    assert a.actor_id != ActorFingerprint.from_metadata(kind="agent", display_name="Ann").actor_id
    assert a.to_dict() == {"actor_id": a.actor_id, "kind": "human", "display_name": "Ann", "metadata": {}}
