"""Artifact stores and references, as published."""

from __future__ import annotations

import re

import pytest

from abstractruntime import (
    Artifact,
    ArtifactMetadata,
    FileArtifactStore,
    InMemoryArtifactStore,
    InMemoryLedgerStore,
    InMemoryRunStore,
    Runtime,
    StepPlan,
    WorkflowSpec,
    artifact_ref,
    compute_artifact_id,
    create_scheduled_runtime,
    get_artifact_id,
    is_artifact_ref,
    resolve_artifact,
)


@pytest.fixture(params=["memory", "files", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":  # our PostgreSQL artifact store against the published behaviour
        import uuid

        from abstractruntime.storage import open_stores

        stores = open_stores("postgres", request.getfixturevalue("pg_server").dsn, schema="t_" + uuid.uuid4().hex[:16])
        yield stores.artifacts
        stores.close()
        return
    yield InMemoryArtifactStore() if request.param == "memory" else FileArtifactStore(tmp_path / "artifacts")


def test_store_gives_metadata_and_load_gives_the_artifact(store):
    meta = store.store(b"hello", content_type="text/plain", run_id="r1", tags={"a": "b"})
    assert isinstance(meta, ArtifactMetadata)
    assert (meta.content_type, meta.size_bytes, meta.run_id, meta.tags) == ("text/plain", 5, "r1", {"a": "b"})
    art = store.load(meta.artifact_id)
    assert isinstance(art, Artifact) and art.as_text() == "hello" and art.content == b"hello"
    assert store.load("missing") is None
    assert store.exists(meta.artifact_id) and not store.exists("missing")
    assert store.get_metadata(meta.artifact_id).tags == {"a": "b"}
    assert ArtifactMetadata.from_dict(meta.to_dict()) == meta


def test_compute_artifact_id_is_32_characters_and_the_id_store_gives(store):
    assert re.fullmatch(r"[0-9a-f]{32}", compute_artifact_id(b"hello"))
    assert store.store(b"hello").artifact_id == compute_artifact_id(b"hello")
    assert store.store(b"hello", run_id="r1").artifact_id == compute_artifact_id(b"hello", run_id="r1")
    assert compute_artifact_id(b"hello", run_id="r1") != compute_artifact_id(b"hello")


def test_listing_searching_and_deleting(store):
    a = store.store(b"one", content_type="text/plain", run_id="r1", tags={"kind": "x"})
    b = store.store_json({"k": [1, 2]}, run_id="r1")
    c = store.store_text("hé", run_id="r2")
    assert {m.artifact_id for m in store.list_by_run("r1")} == {a.artifact_id, b.artifact_id}
    assert len(store.list_all(limit=10)) == 3 and len(store.list_all(limit=2)) == 2
    assert [m.artifact_id for m in store.search(run_id="r1", content_type="text/plain", tags={"kind": "x"})] == [
        a.artifact_id
    ]
    assert store.load_json(b.artifact_id) == {"k": [1, 2]} and store.load_text(c.artifact_id) == "hé"
    assert store.load(b.artifact_id).as_json() == {"k": [1, 2]}
    assert store.delete_by_run("r1") == 2 and store.list_by_run("r1") == []
    assert store.delete(c.artifact_id) is True and store.delete(c.artifact_id) is False


def test_ids_with_a_slash_or_a_dot_or_empty_are_refused(store):
    for bad in ("a/b", "a.b", "../x"):
        with pytest.raises(ValueError, match="Invalid artifact_id"):
            store.store(b"x", artifact_id=bad)
    with pytest.raises(ValueError, match="cannot be empty"):
        store.store(b"x", artifact_id="")
    assert store.store(b"x", artifact_id="my-id_1").artifact_id == "my-id_1"


def test_references_name_an_artifact_and_resolve_to_it(store):
    meta = store.store_json({"z": 1})
    ref = artifact_ref(meta.artifact_id)
    assert ref == {"$artifact": meta.artifact_id} and is_artifact_ref(ref) and not is_artifact_ref("x")
    assert get_artifact_id(ref) == meta.artifact_id
    assert resolve_artifact(ref, store).as_json() == {"z": 1}


def test_references_pass_between_nodes_and_runtimes_take_an_artifact_store(tmp_path):
    arts = FileArtifactStore(tmp_path / "artifacts")
    meta = arts.store_json({"big": [1, 2, 3]}, run_id="rX")
    w = WorkflowSpec(
        workflow_id="art",
        entry_node="a",
        nodes={
            "a": lambda run, ctx: StepPlan(node_id="a", next_node="b"),
            "b": lambda run, ctx: StepPlan(node_id="b", complete_output={"ref": run.vars["ref"]}),
        },
    )
    rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore(), artifact_store=arts)
    assert rt.artifact_store is arts
    rid = rt.start(workflow=w, vars={"ref": artifact_ref(meta.artifact_id)})
    out = rt.tick(workflow=w, run_id=rid).output["ref"]
    assert rt.artifact_store.load_json(get_artifact_id(out)) == {"big": [1, 2, 3]}
    assert create_scheduled_runtime(artifact_store=arts, auto_start=False).runtime.artifact_store is arts
