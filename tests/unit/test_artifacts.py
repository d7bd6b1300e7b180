"""Artifact stores (content-addressed) and offloading large values out of checkpoints.
(The published API, with its full behaviour, is tested in tests/compat/.)"""

from __future__ import annotations

import json

import pytest

from abstractruntime import Effect, EffectType, RunStatus, Runtime, StepPlan, WorkflowSpec
from abstractruntime.storage import (
    FileArtifactStore,
    InMemoryArtifactStore,
    InMemoryLedgerStore,
    JsonFileRunStore,
    JsonlLedgerStore,
    artifact_ref,
    is_artifact_ref,
)
from abstractruntime.storage.artifacts import resolve_artifact
from abstractruntime.storage.offloading import OffloadingRunStore


@pytest.fixture(params=["memory", "file", "postgres"])
def artifacts(request, tmp_path):
    if request.param == "postgres":  # a schema of its own on the session's server
        import uuid

        from abstractruntime.storage import open_stores

        stores = open_stores("postgres", request.getfixturevalue("pg_server").dsn, schema="t_" + uuid.uuid4().hex[:16])
        yield stores.artifacts
        stores.close()
        return
    yield InMemoryArtifactStore() if request.param == "memory" else FileArtifactStore(tmp_path)


def test_content_addressed_store_and_load(artifacts):
    m1 = artifacts.store(b"hello", content_type="text/plain", run_id="r1", tags={"k": "v"})
    m2 = artifacts.store(b"hello", content_type="text/plain", run_id="r1")
    assert m1.artifact_id == m2.artifact_id and len(m1.artifact_id) == 32 and m1.size_bytes == 5
    art = artifacts.load(m1.artifact_id)
    assert art.content == b"hello" and art.metadata.content_type == "text/plain"
    assert [m.artifact_id for m in artifacts.list_by_run("r1")] == [m1.artifact_id]
    assert artifacts.exists(m1.artifact_id)
    j = artifacts.store_json({"a": [1, 2]}, run_id="r2")
    assert artifacts.load_json(j.artifact_id) == {"a": [1, 2]}
    ref = artifact_ref(j.artifact_id, content_type="application/json")
    assert is_artifact_ref(ref) and not is_artifact_ref({"a": 1})
    assert resolve_artifact(ref, artifacts).as_json() == {"a": [1, 2]}
    assert artifacts.delete(m1.artifact_id) and artifacts.load(m1.artifact_id) is None


def test_file_store_rejects_ids_that_would_name_another_file(tmp_path):
    store = FileArtifactStore(tmp_path)
    with pytest.raises(ValueError):
        store.load("../../etc/passwd")


def test_offloading_keeps_big_values_out_of_the_checkpoint(tmp_path):
    arts = FileArtifactStore(tmp_path)
    rs = OffloadingRunStore(JsonFileRunStore(tmp_path), artifact_store=arts, max_inline_bytes=1024)
    ls = JsonlLedgerStore(tmp_path)
    rt = Runtime(run_store=rs, ledger_store=ls, artifact_store=arts)

    def fetch(run, ctx):
        run.vars["page"] = {"html": "x" * 50_000, "url": "https://example.org"}
        run.vars["small"] = 1
        return StepPlan(
            node_id="fetch", effect=Effect(EffectType.ASK_USER, {"prompt": "Keep it?"}, "ok"), next_node="done"
        )

    def done(run, ctx):
        return StepPlan(node_id="done", complete_output={"len": len(run.vars["page"]["html"])})

    wf = WorkflowSpec(workflow_id="big", entry_node="fetch", nodes={"fetch": fetch, "done": done})
    rid = rt.start(workflow=wf)
    rt.tick(workflow=wf, run_id=rid)
    ls.flush()  # commits reach the run files in the flusher's next cycle; now, here
    on_disk = json.loads((tmp_path / f"run_{rid}.json").read_text())
    assert on_disk["vars"]["small"] == 1
    assert is_artifact_ref(on_disk["vars"]["page"]["html"]) or is_artifact_ref(on_disk["vars"]["page"])
    assert len((tmp_path / f"run_{rid}.json").read_bytes()) < 20_000
    assert rt.get_state(rid).vars["page"]["html"] == "x" * 50_000  # resolved again on load
    st = rt.resume(workflow=wf, run_id=rid, wait_key=None, payload={})
    assert st.status == RunStatus.COMPLETED and st.output == {"len": 50_000}


def test_offloading_over_memory_stores():
    from abstractruntime.storage import InMemoryRunStore

    arts = InMemoryArtifactStore()
    rs = OffloadingRunStore(InMemoryRunStore(), artifact_store=arts, max_inline_bytes=100)
    rt = Runtime(run_store=rs, ledger_store=InMemoryLedgerStore())
    wf = WorkflowSpec(
        workflow_id="w", entry_node="a", nodes={"a": lambda run, ctx: StepPlan(node_id="a", complete_output={})}
    )
    rid = rt.start(workflow=wf, vars={"blob": list(range(1000))})
    assert rt.get_state(rid).vars["blob"] == list(range(1000))
    assert rs._inner.load(rid).vars["blob"]["$artifact"]
    assert [s.run_id for s in rs.list_run_summaries(status="running")] == [rid]
