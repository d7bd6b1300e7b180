"""Writes that fail (a full disk, no file descriptors left, an I/O error), injected at the stores'
file seam (`storage/_fs.py`): an acknowledged commit is never lost, a failed one leaves no
trace (no phantom run in the index), the error is typed and names its cause, everything the
background writer could not write is kept and written once the resource is back, and a store
opens and closes on a disk with no room."""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import pytest

from abstractruntime import (
    Effect,
    EffectType,
    JsonFileRunStore,
    JsonlLedgerStore,
    RunStatus,
    Runtime,
    SqliteDatabase,
    SqliteLedgerStore,
    SqliteRunStore,
    StepPlan,
    WorkflowSpec,
)
from abstractruntime.core.errors import StorageUnavailableError
from abstractruntime.storage import _fs, _journal
from abstractruntime.storage._durable import Flusher, shared_flusher
from abstractruntime.storage._index_log import IndexLog
from abstractruntime.storage.base import RunSummary
from abstractruntime.storage.json_files import FileBackend

ASK = WorkflowSpec(
    workflow_id="ask",
    entry_node="ask",
    nodes={
        "ask": lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "ok?"}, "ans"), next_node="done"
        ),
        "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"ans": run.vars.get("ans")}),
    },
)


@pytest.fixture(autouse=True)
def no_faults_after():
    yield
    _fs.configure(None)


def files(d):
    rs, ls = JsonFileRunStore(d), JsonlLedgerStore(d)
    return rs, ls, Runtime(run_store=rs, ledger_store=ls)


def close(rs, ls):
    rs.close()
    ls.close()


def wait_for(cond, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_seam_parses_and_counts():
    _fs.configure("pwrite:ENOSPC@2, write:EIO@3+")
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        _fs.pwrite(fd, b"x", 0)
        with pytest.raises(OSError) as e:
            _fs.pwrite(fd, b"x", 0)
        assert e.value.errno == errno.ENOSPC and "injected" in str(e.value)
        _fs.pwrite(fd, b"x", 0)  # only the 2nd
        _fs.write(fd, b"x")
        _fs.write(fd, b"x")
        for _ in range(3):
            with pytest.raises(OSError):
                _fs.write(fd, b"x")  # the 3rd and every one after
    finally:
        os.close(fd)
    with pytest.raises(ValueError, match="unknown errno 'ENOPE'"):
        _fs.configure("write:ENOPE@1")
    with pytest.raises(ValueError, match="only crash rules"):
        _fs.configure("sqlite_committed:EIO@1")
    _fs.configure(None)
    assert _fs.pwrite is os.pwrite  # no fault: the seam costs nothing


def test_a_commit_that_cannot_get_a_segment_fails_typed_and_leaves_no_trace(tmp_path):
    rs, ls, rt = files(tmp_path)
    _fs.configure("open:EMFILE@1+")  # the first commit needs a new journal segment
    with pytest.raises(StorageUnavailableError) as e:
        rt.start_and_tick(workflow=ASK)
    assert e.value.data["errno"] == "EMFILE" and "journal" in str(e.value)
    assert e.value.CODE == 1013 and isinstance(e.value, OSError)
    assert rs.list_run_summaries() == [] and rs.count_by_status() == {}  # no phantom run
    _fs.configure(None)  # descriptors are back: it works again, by itself
    st = rt.start_and_tick(workflow=ASK)
    assert st.status == RunStatus.WAITING and [s.run_id for s in rs.list_run_summaries()] == [st.run_id]
    close(rs, ls)
    rs, ls, rt = files(tmp_path)
    assert [s.run_id for s in rs.list_run_summaries()] == [st.run_id]
    close(rs, ls)


def test_a_failed_journal_write_fails_only_its_commit_and_the_next_one_overwrites_it(tmp_path):
    rs, ls, rt = files(tmp_path)
    acked = [rt.start_and_tick(workflow=ASK).run_id for _ in range(3)]
    _fs.configure("pwrite:ENOSPC@1")
    with pytest.raises(StorageUnavailableError, match="ENOSPC"):
        rt.start_and_tick(workflow=ASK)
    acked += [rt.start_and_tick(workflow=ASK).run_id for _ in range(3)]
    _fs.configure(None)
    close(rs, ls)
    rs, ls, rt = files(tmp_path)
    assert sorted(s.run_id for s in rs.list_run_summaries()) == sorted(acked)
    for rid in acked:
        assert rt.get_state(rid).status == RunStatus.WAITING and rt.verify_ledger(rid)["ok"]
    close(rs, ls)


def test_a_failed_flusher_cycle_keeps_everything_and_is_retried_without_new_commits(tmp_path):
    rs, ls, rt = files(tmp_path)
    _fs.configure("write:ENOSPC@1-4")  # the run files cannot be written for a while
    ids = [rt.start_and_tick(workflow=ASK).run_id for _ in range(5)]  # the journal takes them
    for rid in ids:  # reads never wait for the files
        assert rt.get_state(rid).status == RunStatus.WAITING
    # Nothing more is committed: the flusher retries by itself until the files are written.
    wait_for(lambda: all((tmp_path / f"run_{rid}.json").exists() for rid in ids), "the retried cycle")
    wait_for(lambda: shared_flusher().pending == 0 and rs.unit.journal.pending == 0, "everything written")
    assert _fs.calls("write") > 4
    close(rs, ls)
    for rid in ids:
        assert json.loads((tmp_path / f"run_{rid}.json").read_text())["status"] == "waiting"


def test_index_lines_stay_queued_until_written(tmp_path):
    log = IndexLog(str(tmp_path), durable=True)
    log.load()
    summaries = [RunSummary(f"r{i}", "w", "waiting", "ask", "t", "t", "user", f"k{i}") for i in range(5)]
    log.append(summaries)
    _fs.configure("write:ENOSPC@1")
    with pytest.raises(OSError):
        log.flush()
    assert log.unwritten == 5  # not dropped
    _fs.configure(None)
    log.flush()
    assert log.unwritten == 0
    log.close()
    entries, _, found = IndexLog(str(tmp_path), durable=True).load()
    assert found and sorted(entries) == [f"r{i}" for i in range(5)]


def test_a_close_that_could_not_write_leaves_the_folder_to_be_replayed_and_rechecked(tmp_path):
    rs, ls, rt = files(tmp_path)
    done = rt.start_and_tick(workflow=ASK).run_id
    rt.resume(workflow=ASK, run_id=done, wait_key=None, payload={"t": 1})
    rs.flush()
    # The disk fills: journal appends still fit in the segment's old room, files do not.
    _fs.configure("write:ENOSPC@1+,ftruncate:ENOSPC@1+")
    waiting = [rt.start_and_tick(workflow=ASK).run_id for _ in range(10)]
    close(rs, ls)  # does not raise
    assert (tmp_path / "_index" / "OPEN").exists()  # marked: the next open re-checks
    # (Their files may exist, created and left empty by the failed writes.)
    assert not any(
        (tmp_path / f"run_{r}.json").exists() and (tmp_path / f"run_{r}.json").stat().st_size for r in waiting
    )
    _fs.configure(None)
    rs, ls, rt = files(tmp_path)
    assert sorted(rs.find_waiting_on(rt.get_state(r).waiting.wait_key)[0] for r in waiting) == sorted(waiting)
    assert rs.count_by_status() == {"completed": 1, "waiting": 10}
    close(rs, ls)
    assert not (tmp_path / "_index" / "OPEN").exists()
    assert all((tmp_path / f"run_{r}.json").exists() for r in waiting)


def test_a_store_opens_and_closes_on_a_disk_with_no_room(tmp_path):
    rs, ls, rt = files(tmp_path)
    ids = [rt.start_and_tick(workflow=ASK).run_id for _ in range(5)]
    # A crash with everything still in the journal: the folder is left as a killed process
    # leaves it (no close, the flusher never ran).
    _fs.configure("write:ENOSPC@1+,pwrite:ENOSPC@1+,ftruncate:ENOSPC@1+,replace:ENOSPC@1+")
    rs._closed = ls._closed = True
    FileBackend._registry.clear()
    shared_flusher().forget(rs.unit.journal._marker)
    # Every write fails: it opens all the same (replay in place), and serves reads.
    rs, ls, rt = files(tmp_path)
    assert [rt.get_state(r).status for r in ids] == [RunStatus.WAITING] * 5
    with pytest.raises(StorageUnavailableError):
        rt.resume(workflow=ASK, run_id=ids[0], wait_key=None, payload={"t": 1})
    close(rs, ls)  # and closes without raising
    _fs.configure(None)
    rs, ls, rt = files(tmp_path)  # room again: it catches up
    assert rt.resume(workflow=ASK, run_id=ids[0], wait_key=None, payload={"t": 1}).status == RunStatus.COMPLETED
    close(rs, ls)
    assert json.loads((tmp_path / f"run_{ids[1]}.json").read_text())["status"] == "waiting"


def test_journal_segments_are_bounded_and_reclaimed(tmp_path, monkeypatch):
    monkeypatch.setattr(_journal, "RECLAIM_BYTES", 64 << 10)
    rs, ls, rt = files(tmp_path)
    big = {"blob": "x" * 20_000}
    for _ in range(3):  # bursts that outgrow a segment, each followed by a cycle
        for _ in range(10):
            rt.start_and_tick(workflow=ASK, vars=big)
        rs.flush()
        rs.flush()  # the second cycle's sync frees the first one's segments
    sizes = [os.path.getsize(p) for p in (tmp_path / "_journal").iterdir()]
    assert len(sizes) <= _journal.MAX_FREE + 1
    assert max(sizes) < 64 << 10 or sorted(sizes)[-2] < 64 << 10  # only the current one may be large
    close(rs, ls)


def test_one_failing_path_does_not_hold_up_the_others():
    fl = Flusher(delay_s=60)  # a private flusher: its thread waits; the test drives flush()
    wrote, synced = [], []

    def bad():
        raise OSError(errno.ENOSPC, "no room")

    fl.mark(os.devnull, before_sync=bad, on_synced=lambda: synced.append("bad"))
    fl.mark("/", before_sync=lambda: wrote.append("good"), on_synced=lambda: synced.append("good"))
    with pytest.raises(OSError):
        fl.flush()
    assert wrote == ["good"] and synced == ["good"] and fl.pending == 1  # the failed one stays marked
    fl._dirty[os.devnull][0] = lambda: wrote.append("fixed")
    fl.flush()
    assert wrote == ["good", "fixed"] and synced == ["good", "bad"] and fl.pending == 0
    fl.close()


@pytest.mark.parametrize("point, existing", [("sqlite_commit:EIO@1", False), ("sqlite_commit:ENOSPC@1", True)])
def test_sqlite_a_failed_commit_is_typed_and_changes_nothing(tmp_path, point, existing):
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    rs, ls = SqliteRunStore(db), SqliteLedgerStore(db)
    rt = Runtime(run_store=rs, ledger_store=ls)
    first = rt.start_and_tick(workflow=ASK).run_id if existing else None
    _fs.configure(point)
    with pytest.raises(StorageUnavailableError):
        rt.start_and_tick(workflow=ASK)
    _fs.configure(None)
    assert [s.run_id for s in rs.list_run_summaries()] == ([first] if first else [])
    st = rt.start_and_tick(workflow=ASK)
    assert rt.verify_ledger(st.run_id)["ok"] and st.status == RunStatus.WAITING
    rs.close()


def test_concurrent_commits_under_intermittent_failures_lose_nothing_acknowledged(tmp_path):
    rs, ls, rt = files(tmp_path)
    _fs.configure("pwrite:EIO@5-8,fdatasync:EIO@20-22,write:ENOSPC@3-9,open:EMFILE@2-6")
    acked, failed = [], []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            try:
                rid = rt.start_and_tick(workflow=ASK).run_id
            except StorageUnavailableError:
                with lock:
                    failed.append(1)
                continue
            with lock:
                acked.append(rid)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _fs.configure(None)
    assert failed and acked
    close(rs, ls)
    rs, ls, rt = files(tmp_path)
    assert sorted(s.run_id for s in rs.list_run_summaries()) == sorted(acked)  # none lost, no phantom
    for rid in acked:
        assert rt.verify_ledger(rid)["ok"]
    close(rs, ls)


@pytest.mark.parametrize("kind", ["files", "sqlite"])
def test_a_failed_batch_commit_of_due_timers_commits_none_and_they_fire_later(tmp_path, kind):
    """The scheduler writes due runs' steps together; when that write fails every run of the
    batch keeps its checkpoint (still waiting, still due), and the next poll resumes them."""
    from datetime import datetime, timezone

    from abstractruntime import create_scheduled_runtime
    from abstractruntime.core.clock import ManualClock

    clock = ManualClock()
    until = datetime.fromtimestamp(clock.time() + 5, timezone.utc).isoformat()
    wf = WorkflowSpec(
        workflow_id="t",
        entry_node="wait",
        nodes={
            "wait": lambda run, ctx: StepPlan(
                node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="done"
            ),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"ok": True}),
        },
    )
    if kind == "files":
        rs, ls = JsonFileRunStore(tmp_path, clock=clock), JsonlLedgerStore(tmp_path)
    else:
        db = SqliteDatabase(tmp_path / "db.sqlite3")
        rs, ls = SqliteRunStore(db, clock=clock), SqliteLedgerStore(db)
    sr = create_scheduled_runtime(run_store=rs, ledger_store=ls, workflows=[wf], auto_start=False, clock=clock)
    ids = [sr.runtime.start_and_tick(workflow=wf).run_id for _ in range(10)]
    clock.advance(10)
    if kind == "files":
        # The journal's flusher works in the background: let it finish first, or the fault's
        # first pwrite may be its segment reset instead of the batch's commit.
        rs.flush()
        ls.flush()
    _fs.configure("pwrite:ENOSPC@1" if kind == "files" else "sqlite_commit:ENOSPC@1")
    assert sr.scheduler.poll_once() == 10
    assert sr.scheduler.stats.runs_failed == 10 and "ENOSPC" in sr.scheduler.stats.errors[-1]
    assert all(rs.load(r).status == RunStatus.WAITING for r in ids)
    assert all(len(ls.list(r)) == 1 for r in ids)  # the wait's record only
    _fs.configure(None)
    assert sr.scheduler.poll_once() == 10  # still due, claimed again
    assert all(rs.load(r).status == RunStatus.COMPLETED and sr.runtime.verify_ledger(r)["ok"] for r in ids)
    rs.close()
    ls.close()
