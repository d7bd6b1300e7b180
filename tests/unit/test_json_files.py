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


def _crashed(*stores) -> None:
    """Leave the folder as a killed process leaves it: the stores are abandoned unclosed, and
    the next open in this process starts afresh (as a new process would), not as a second view."""
    from abstractruntime.storage._durable import shared_flusher
    from abstractruntime.storage.json_files import FileBackend

    for st in stores:
        st._closed = True
        shared_flusher().forget(st.unit.journal._marker)
    FileBackend._registry.clear()


def _open(d, durable=True):
    rs, ls = JsonFileRunStore(d, durable=durable), JsonlLedgerStore(d, durable=durable)
    return rs, ls, Runtime(run_store=rs, ledger_store=ls)


def test_layout_is_the_documented_one(tmp_path):
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    # Committed: readers see it at once, whether or not the flusher has written the files yet.
    assert rt.get_state(rid).waiting.prompt == "?"
    assert [r["seq"] for r in rt.get_ledger(rid)] == [1, 2]
    rs.flush()
    state = json.loads((tmp_path / f"run_{rid}.json").read_text())
    assert state["status"] == "waiting" and state["waiting"]["prompt"] == "?"
    assert isinstance(state["_lsn"], int)  # the journal position of the commit that wrote it
    rs.close()
    ls.close()
    names = set(os.listdir(tmp_path))
    assert {f"run_{rid}.json", f"ledger_{rid}.jsonl", "_index", "_journal"} <= names
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


_CRASHER = """
import os, sys
sys.path.insert(0, {tests!r})
from test_json_files import ASK, _open
rs, ls, rt = _open({data!r})
ids = []
for i in range(20):
    rid = rt.start(workflow=ASK, run_id=f"r{{i}}")
    rt.tick(workflow=ASK, run_id=rid)
    ids.append(rid)
if {flush_first}:
    rs.flush()  # these checkpoints reach their files; the resumes below stay in the journal
for rid in ids[:10]:
    rt.resume(workflow=ASK, run_id=rid, wait_key=None, payload={{"t": rid}})
print("committed", flush=True)
os._exit(0)  # a crash: no close, no atexit flush, the flusher thread never ran again
"""


def _crash(tmp_path, *, flush_first: bool):
    import subprocess
    import sys

    code = _CRASHER.format(tests=os.path.dirname(__file__), data=str(tmp_path), flush_first=flush_first)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "committed" in out.stdout, out.stderr


def _check_all_there(tmp_path):
    rs, ls, rt = _open(tmp_path)
    for i in range(20):
        st = rt.get_state(f"r{i}")
        recs = rt.get_ledger(f"r{i}")
        assert verify_ledger_chain(recs)["ok"]
        if i < 10:
            assert st.status == RunStatus.COMPLETED and st.output == {"ans": {"t": f"r{i}"}}
            assert [r["seq"] for r in recs] == [1, 2, 3, 4]
        else:
            assert st.status == RunStatus.WAITING and [r["seq"] for r in recs] == [1, 2]
    assert rs.count_by_status() == {"completed": 10, "waiting": 10}
    rs.close()
    ls.close()
    # Closed cleanly: the files alone hold it all now.
    for i in range(10):
        on_disk = json.loads((tmp_path / f"run_r{i}.json").read_text())
        assert on_disk["status"] == "completed"
        assert len((tmp_path / f"ledger_r{i}.jsonl").read_text().splitlines()) == 4


def test_a_crash_before_the_files_are_written_loses_no_commit(tmp_path, caplog):
    _crash(tmp_path, flush_first=False)
    # The process died with every commit in the journal and none in a run file.
    assert not list(tmp_path.glob("run_*.json"))
    with caplog.at_level(logging.WARNING, logger="abstractruntime.storage"):
        _check_all_there(tmp_path)
    assert "restored 20 checkpoint(s) and 60 ledger record(s)" in caplog.text


def test_a_run_file_torn_mid_write_is_rewritten_from_the_journal(tmp_path):
    _crash(tmp_path, flush_first=True)
    path = tmp_path / "run_r3.json"
    assert json.loads(path.read_text())["status"] == "waiting"  # the resume is in the journal only
    path.write_bytes(path.read_bytes()[:40])  # the crash tore the in-place write
    ledger = tmp_path / "ledger_r3.jsonl"
    ledger.write_bytes(ledger.read_bytes() + b'{"seq": 3, "tor')  # and an append
    _check_all_there(tmp_path)


def test_replay_never_moves_a_run_back(tmp_path):
    """A stale entry (in a reused segment, say) older than the run file is not applied."""
    from abstractruntime.storage._journal import _Entry

    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    rs.flush()
    old = (tmp_path / f"run_{rid}.json").read_bytes()
    old_lsn = json.loads(old)["_lsn"]
    rt.resume(workflow=ASK, run_id=rid, wait_key=None, payload={"t": 1})
    rs.close()
    ls.close()
    (tmp_path / "_journal" / "wal.9").write_bytes(_Entry(rid, old_lsn, old, []).frame)
    rs, ls, rt = _open(tmp_path)
    assert rt.get_state(rid).status == RunStatus.COMPLETED
    assert json.loads((tmp_path / f"run_{rid}.json").read_text())["status"] == "completed"
    assert [r["seq"] for r in rt.get_ledger(rid)] == [1, 2, 3, 4]
    rs.close()
    ls.close()


def test_a_script_that_exits_without_closing_leaves_its_files_written(tmp_path):
    import subprocess
    import sys

    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_json_files import ASK, _open\n"
        f"rs, ls, rt = _open({str(tmp_path)!r})\n"
        "rid = rt.start(workflow=ASK, run_id='solo')\n"
        "rt.tick(workflow=ASK, run_id=rid)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run_solo.json").read_text())["status"] == "waiting"
    assert len((tmp_path / "ledger_solo.jsonl").read_text().splitlines()) == 2


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
    _crashed(rs, ls)
    rs2 = JsonFileRunStore(tmp_path)
    assert [s.run_id for s in rs2.list_run_summaries(status="waiting")] == [rid]
    assert rs2.count_by_status() == {"waiting": 1}


def test_unclean_open_finds_checkpoints_the_index_missed(tmp_path):
    rs, ls, rt = _open(tmp_path)
    rid = rt.start(workflow=ASK)
    rt.tick(workflow=ASK, run_id=rid)
    # A power loss drops the index line but the checkpoint had landed: simulate by
    # writing a newer checkpoint behind the index's back.
    rs.flush()
    run = rs.load(rid)
    run.status, run.waiting, run.output = RunStatus.COMPLETED, None, {"x": 1}
    (tmp_path / f"run_{rid}.json").write_text(json.dumps(run.to_dict()))
    _crashed(rs, ls)
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
    _crashed(rs, ls)
    rs2 = JsonFileRunStore(tmp_path)
    assert [s.run_id for s in rs2.list_run_summaries()] == [rid]
    assert rs2.load("ghost-run") is None
    rs2.close()
    rs3 = JsonFileRunStore(tmp_path)  # the tombstone keeps it gone on later opens too
    assert [s.run_id for s in rs3.list_run_summaries()] == [rid]


def test_reads_stay_whole_while_the_flusher_writes_the_files(tmp_path):
    """Readers race the flusher's cycles: every ledger they read is whole and chained, and
    every state is the newest committed one, whether it comes from memory or the files."""
    import random
    import threading
    import time

    rs, ls, rt = _open(tmp_path)
    done: list = []
    errors: list = []
    stop = threading.Event()

    def writer(k):
        for i in range(25):
            rid = rt.start(workflow=ASK, run_id=f"w{k}-{i}")
            rt.tick(workflow=ASK, run_id=rid)
            rt.resume(workflow=ASK, run_id=rid, wait_key=None, payload={"t": i})
            done.append(rid)

    def reader():
        rng = random.Random(7)
        while not stop.is_set():
            if not done:
                continue
            rid = rng.choice(done[-8:])  # the newest: their files are being written now
            try:
                recs = rt.get_ledger(rid)
                assert [r["seq"] for r in recs] == [1, 2, 3, 4], [r["seq"] for r in recs]
                assert verify_ledger_chain(recs)["ok"]
                assert rt.get_state(rid).status == RunStatus.COMPLETED
            except AssertionError as e:
                errors.append((rid, e))

    def cycles():
        while not stop.is_set():
            rs.flush()  # cycles every few milliseconds, not every quarter second
            time.sleep(0.003)

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    others = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=cycles)]
    for t in writers + others:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in others:
        t.join()
    assert not errors, errors[:3]
    assert rs._journal.cycles >= 3
    rs.close()
    ls.close()
    rs, ls, rt = _open(tmp_path)
    assert rs.count_by_status() == {"completed": 100}
    rs.close()
    ls.close()


def test_a_durable_store_makes_a_shared_folder_durable(tmp_path):
    rs = JsonFileRunStore(tmp_path, durable=False)
    ls = JsonlLedgerStore(tmp_path)  # durable
    assert rs.unit is ls.unit and ls.unit.journal.durable  # one unit: one journal
    rs.close()
    ls.close()
