"""What the JSON-file stores promise about files on disk after a crash."""

from __future__ import annotations

import json
import logging
import os

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    JsonFileRunStore,
    JsonlLedgerStore,
    RunStatus,
    Runtime,
    StepPlan,
    WorkflowSpec,
    verify_ledger_chain,
)
from abstractruntime.storage._durable import InvalidRunIdError

ASK = WorkflowSpec(
    workflow_id="ask",
    entry_node="a",
    nodes={
        "a": lambda run, ctx: StepPlan(node_id="a", next_node="ask"),
        "ask": lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "ans"), next_node="done"
        ),
        "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"ans": run.vars.get("ans")}),
    },
)


def _open(d, durable=True):
    rs, ls = JsonFileRunStore(d, durable=durable), JsonlLedgerStore(d, durable=durable)
    return rs, ls, Runtime(run_store=rs, ledger_store=ls)


def test_layout_is_the_documented_one(tmp_path):
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    state = json.loads((tmp_path / f"run_{rid}.json").read_text())
    assert state["status"] == "waiting" and state["waiting"]["prompt"] == "?"
    # Until the flusher's next batch the step's ledger lines live in the checkpoint (which is
    # on disk already); readers see them either way.
    assert [json.loads(x)["seq"] for x in state["_ledger_tail"]] == [1, 2]
    assert [r["seq"] for r in rt.get_ledger(rid)] == [1, 2]
    rs.close()
    ls.close()
    names = set(os.listdir(tmp_path))
    assert {f"run_{rid}.json", f"ledger_{rid}.jsonl", "_index"} <= names
    lines = (tmp_path / f"ledger_{rid}.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2]  # node a, then the wait
    assert not any(n.endswith(".tmp") for n in names)


def test_torn_last_line_is_cut_with_a_warning(tmp_path, caplog):
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    rs.close()
    ls.close()
    path = tmp_path / f"ledger_{rid}.jsonl"
    good = path.read_bytes()
    path.write_bytes(good + b'{"run_id": "' + rid.encode() + b'", "seq": 3, "sta')  # a crash mid-append
    with caplog.at_level(logging.WARNING, logger="abstractruntime.storage"):
        rs, ls, rt = _open(tmp_path)
        recs = rt.get_ledger(rid)
    assert "torn line" in caplog.text
    assert [r["seq"] for r in recs] == [1, 2] and path.read_bytes() == good
    st = rt.resume(workflow=ASK, run_id=rid, wait_key=None, payload={"t": 1})
    assert st.status == RunStatus.COMPLETED and rt.verify_ledger(rid)["ok"]


def test_checkpoint_ahead_of_ledger_is_caught_up(tmp_path, caplog):
    """A crash after the checkpoint rename but before the ledger append loses no record."""
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    rt.resume(workflow=ASK, run_id=rid, wait_key=None, payload={"t": 1})
    full = rt.get_ledger(rid)
    rs.close()
    ls.close()
    path = tmp_path / f"ledger_{rid}.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))  # the last commit's records never reached the file
    with caplog.at_level(logging.WARNING, logger="abstractruntime.storage"):
        rs, ls, rt = _open(tmp_path)
        again = rt.get_ledger(rid)
    assert "restoring 2 record(s)" in caplog.text
    assert again == full and verify_ledger_chain(again)["ok"]


def test_unclean_open_corrects_an_index_that_leads(tmp_path):
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    assert [s.run_id for s in rs.list_run_summaries(status="waiting")] == [rid]
    # The process dies after writing the index line for "completed" but before the rename.
    run = rs.load(rid)
    run.status, run.waiting = RunStatus.COMPLETED, None
    from abstractruntime.storage.base import RunSummary

    rs._log.append([RunSummary.from_state(run)])
    rs._log.flush()  # the line reached the file; then the process died
    # (no close: the OPEN marker stays, as after a crash)
    rs2 = JsonFileRunStore(tmp_path)
    assert [s.run_id for s in rs2.list_run_summaries(status="waiting")] == [rid]
    assert rs2.count_by_status() == {"waiting": 1}


def test_unclean_open_finds_checkpoints_the_index_missed(tmp_path):
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    # A power loss drops the index line but the checkpoint had landed: simulate by
    # writing a newer checkpoint behind the index's back.
    run = rs.load(rid)
    run.status, run.waiting, run.output = RunStatus.COMPLETED, None, {"x": 1}
    (tmp_path / f"run_{rid}.json").write_text(json.dumps(run.to_dict()))
    rs2 = JsonFileRunStore(tmp_path)
    assert rs2.count_by_status() == {"completed": 1}


def test_reopen_of_a_foreign_folder_indexes_its_files(tmp_path):
    rs, ls, rt = _open(tmp_path)
    ids = [rt.start(workflow=ASK) for _ in range(3)]
    for i in ids:
        rt.tick(workflow=ASK, run_id=i)
    rs.close()
    ls.close()
    for p in (tmp_path / "_index").iterdir():
        p.unlink()
    rs2 = JsonFileRunStore(tmp_path)
    assert sorted(s.run_id for s in rs2.list_run_summaries(status="waiting")) == sorted(ids)


def test_relaxed_mode_works_without_fsync(tmp_path):
    rs, ls, rt = _open(tmp_path, durable=False)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    assert rt.resume(workflow=ASK, run_id=rid, wait_key=None, payload={}).status == RunStatus.COMPLETED


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "", ".hidden", "x" * 300, "a\x00b"])
def test_run_ids_never_reach_outside_the_folder(tmp_path, bad):
    rs, ls, _ = _open(tmp_path)
    with pytest.raises(InvalidRunIdError):
        rs.load(bad)
    with pytest.raises(InvalidRunIdError):
        ls.list(bad)


def test_many_runs_compact_the_index(tmp_path):
    from abstractruntime.storage import _index_log

    rs, ls, rt = _open(tmp_path, durable=False)
    old = _index_log.IndexLog.needs_compaction
    _index_log.IndexLog.needs_compaction = lambda self, live: self.lines > 50
    try:
        for _ in range(40):
            rid = rt.start(workflow=ASK)
            rt.tick(workflow=ASK, run_id=rid)
    finally:
        _index_log.IndexLog.needs_compaction = old
    rs.close()
    ls.close()
    files = sorted(os.listdir(tmp_path / "_index"))
    assert "snapshot.json" in files and len([f for f in files if f.startswith("log.")]) == 1
    rs2 = JsonFileRunStore(tmp_path)
    assert rs2.count_by_status() == {"waiting": 40}


def test_unclean_open_forgets_a_start_that_never_landed(tmp_path):
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    ghost = rs.load(rid)
    ghost.run_id = "ghost-run"
    from abstractruntime.storage.base import RunSummary

    rs._log.append([RunSummary.from_state(ghost)])  # index line written, then the crash: no checkpoint
    rs._log.flush()
    rs2 = JsonFileRunStore(tmp_path)
    assert [s.run_id for s in rs2.list_run_summaries()] == [rid]
    assert rs2.load("ghost-run") is None
    rs2.close()
    rs3 = JsonFileRunStore(tmp_path)  # the tombstone keeps it gone on later opens too
    assert [s.run_id for s in rs3.list_run_summaries()] == [rid]
