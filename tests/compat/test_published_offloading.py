"""offload_large_values and the offloading stores, as published."""

from __future__ import annotations

import json

from abstractruntime import (
    Effect,
    EffectType,
    FileArtifactStore,
    InMemoryArtifactStore,
    JsonFileRunStore,
    JsonlLedgerStore,
    OffloadingLedgerStore,
    OffloadingRunStore,
    RunStatus,
    Runtime,
    StepPlan,
    WorkflowSpec,
    is_artifact_ref,
    offload_large_values,
)


def test_large_values_become_references_and_small_ones_stay():
    arts = InMemoryArtifactStore()
    out = offload_large_values(
        {"big": "x" * 5000, "small": "y"}, artifact_store=arts, run_id="r", max_inline_bytes=1000
    )
    assert out["small"] == "y" and is_artifact_ref(out["big"])
    assert arts.load_text(out["big"]["$artifact"]) == "x" * 5000
    meta = arts.get_metadata(out["big"]["$artifact"])
    assert meta.run_id == "r" and meta.tags["path"] == "big"


def test_the_deepest_large_part_goes_first_and_the_root_only_when_allowed():
    arts = InMemoryArtifactStore()
    nested = offload_large_values({"a": {"b": ["z" * 3000]}}, artifact_store=arts, run_id="r", max_inline_bytes=100)
    assert (
        is_artifact_ref(nested["a"]["b"][0])
        and arts.get_metadata(nested["a"]["b"][0]["$artifact"]).tags["path"] == "a.b[0]"
    )
    assert offload_large_values("z" * 3000, artifact_store=arts, run_id="r", max_inline_bytes=100) == "z" * 3000
    assert is_artifact_ref(
        offload_large_values("z" * 3000, artifact_store=arts, run_id="r", max_inline_bytes=100, allow_root_replace=True)
    )


def test_allow_offload_and_root_path_decide_and_name_the_parts():
    arts = InMemoryArtifactStore()
    seen = []

    def only_a(path, value):
        seen.append(path)
        return path.endswith("a")

    out = offload_large_values(
        {"a": "z" * 3000, "b": "q" * 3000},
        artifact_store=arts,
        run_id="r",
        max_inline_bytes=100,
        root_path="vars",
        allow_offload=only_a,
    )
    assert is_artifact_ref(out["a"]) and out["b"] == "q" * 3000
    assert "vars.a" in seen and "vars.b" in seen


def test_offloading_stores_keep_large_values_out_of_the_files_and_resolve_them_after_a_restart(tmp_path):
    arts = FileArtifactStore(tmp_path / "artifacts")
    folder = tmp_path / "runs"
    rs = OffloadingRunStore(JsonFileRunStore(folder), artifact_store=arts, max_inline_bytes=256)
    ls = OffloadingLedgerStore(JsonlLedgerStore(folder), artifact_store=arts, max_inline_bytes=256)
    w = WorkflowSpec(
        workflow_id="off",
        entry_node="n",
        nodes={
            "n": lambda run, ctx: StepPlan(
                node_id="n", effect=Effect(EffectType.ANSWER_USER, {"message": "x" * 2000}, "out"), next_node="d"
            ),
            "d": lambda run, ctx: StepPlan(node_id="d", complete_output={"n": len(run.vars["blob"])}),
        },
    )
    rt = Runtime(run_store=rs, ledger_store=ls, artifact_store=arts)
    rid = rt.start(workflow=w, vars={"blob": "y" * 5000, "small": "s"})
    st = rt.tick(workflow=w, run_id=rid)
    assert st.status == RunStatus.COMPLETED and st.output == {"n": 5000}
    for store in (rs, ls):
        getattr(store, "close", lambda: None)()  # the published stores have no close()
    raw = json.loads((folder / f"run_{rid}.json").read_text())
    assert is_artifact_ref(raw["vars"]["blob"]) and raw["vars"]["small"] == "s"
    assert max(len(line) for line in (folder / f"ledger_{rid}.jsonl").read_text().splitlines()) < 2000
    # A new process: new stores on the same folders resolve the references again.
    arts2 = FileArtifactStore(tmp_path / "artifacts")
    rs2 = OffloadingRunStore(JsonFileRunStore(folder), artifact_store=arts2, max_inline_bytes=256)
    ls2 = OffloadingLedgerStore(JsonlLedgerStore(folder), artifact_store=arts2, max_inline_bytes=256)
    try:
        assert rs2.load(rid).vars["blob"] == "y" * 5000
        said = [r for r in ls2.list(rid) if r.get("effect")][-1]["effect"]["payload"]["message"]
        assert arts2.load_text(said["$artifact"]) == "x" * 2000
    finally:
        for store in (rs2, ls2):
            getattr(store, "close", lambda: None)()
