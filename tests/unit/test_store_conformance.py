"""One conformance suite, run against every store backend (in-memory, JSON files, SQLite)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from abstractruntime import InMemoryLedgerStore, RunState, RunStatus, StepRecord, StepStatus, WaitReason, WaitState
from abstractruntime.core.clock import ManualClock
from abstractruntime.core.errors import NotJsonSerializableError
from abstractruntime.storage import RunSummary, verify_ledger_chain


def _run(workflow_id="wf", status=RunStatus.RUNNING, **kw) -> RunState:
    r = RunState.new(workflow_id=workflow_id, entry_node="a")
    r.status = status
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def _waiting(reason=WaitReason.USER, key="k", until=None, prompt="Continue?", workflow_id="wf") -> RunState:
    return _run(
        workflow_id=workflow_id,
        status=RunStatus.WAITING,
        waiting=WaitState(reason=reason, wait_key=key, until=until, prompt=prompt, choices=["yes", "no"]),
    )


def _rec(run: RunState, node="a", status=StepStatus.COMPLETED, **kw) -> StepRecord:
    r = StepRecord.start(run=run, node_id=node, effect=None)
    r.status = status
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_save_load_roundtrip_and_isolation(stores):
    rs, _ = stores.open()
    run = _waiting()
    run.vars = {"a": [1, 2, {"b": "c"}], "n": None, "f": 1.5}
    rs.save(run)
    loaded = rs.load(run.run_id)
    assert loaded.to_dict() == run.to_dict()
    loaded.vars["a"].append(99)  # a caller's mutation must not reach the store
    assert rs.load(run.run_id).vars["a"] == [1, 2, {"b": "c"}]
    assert rs.load("no-such-run") is None


def test_save_rejects_unserializable_without_writing(stores):
    rs, _ = stores.open()
    run = _run()
    run.vars = {"ok": 1}
    rs.save(run)
    run.vars = {"bad": {1, 2}}
    with pytest.raises((TypeError, ValueError, NotJsonSerializableError)):
        rs.save(run)
    assert rs.load(run.run_id).vars == {"ok": 1}


def test_listing_by_status_reason_workflow_and_pages(stores):
    rs, _ = stores.open()
    ids = {"running": [], "waiting": [], "completed": []}
    for i in range(5):
        r = _run(workflow_id="a" if i % 2 else "b")
        rs.save(r)
        ids["running"].append(r.run_id)
    for i in range(4):
        r = _waiting(reason=WaitReason.USER if i < 3 else WaitReason.EVENT, key=f"k{i}")
        rs.save(r)
        ids["waiting"].append(r.run_id)
    done = _run(status=RunStatus.COMPLETED)
    rs.save(done)

    assert [s.run_id for s in rs.list_run_summaries(status="waiting")] == ids["waiting"]
    assert {s.run_id for s in rs.list_run_summaries(status=RunStatus.WAITING, wait_reason=WaitReason.USER)} == set(
        ids["waiting"][:3]
    )
    assert len(rs.list_run_summaries(workflow_id="a", status="running")) == 2
    assert rs.count_by_status() == {"running": 5, "waiting": 4, "completed": 1}
    page1 = rs.list_run_summaries(status="running", limit=2)
    page2 = rs.list_run_summaries(status="running", limit=2, after=page1[-1].run_id)
    page3 = rs.list_run_summaries(status="running", limit=2, after=page2[-1].run_id)
    assert [s.run_id for s in page1 + page2 + page3] == ids["running"]
    states = rs.list_runs(status=RunStatus.WAITING, limit=10)
    assert all(isinstance(s, RunState) and s.status == RunStatus.WAITING for s in states)
    s = rs.list_run_summaries(status="waiting", limit=1)[0]
    assert isinstance(s, RunSummary) and s.prompt == "Continue?" and s.choices == ["yes", "no"]

    # a status change moves the run between listings
    moved = rs.load(ids["waiting"][0])
    moved.status, moved.waiting = RunStatus.COMPLETED, None
    rs.save(moved)
    assert ids["waiting"][0] not in [x.run_id for x in rs.list_run_summaries(status="waiting")]
    assert rs.count_by_status()["completed"] == 2


def test_find_waiting_on(stores):
    rs, _ = stores.open()
    a, b, c = _waiting(key="event:global:go"), _waiting(key="event:global:go"), _waiting(key="other")
    for r in (a, b, c):
        rs.save(r)
    assert set(rs.find_waiting_on("event:global:go")) == {a.run_id, b.run_id}
    a.status, a.waiting = RunStatus.RUNNING, None
    rs.save(a)
    assert rs.find_waiting_on("event:global:go") == [b.run_id]


def test_due_timers_claims_and_leases(stores):
    rs, _ = stores.open()
    now = time.time()
    past = datetime.fromtimestamp(now - 5, timezone.utc).isoformat()
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    due = [_waiting(reason=WaitReason.UNTIL, key=f"u{i}", until=past, prompt=None) for i in range(3)]
    later = _waiting(reason=WaitReason.UNTIL, key="later", until=future, prompt=None)
    for r in due + [later]:
        rs.save(r)
    assert rs.next_due_at() == pytest.approx(now - 5, abs=1)
    assert {r.run_id for r in rs.list_due_wait_until(now_iso=datetime.now(timezone.utc).isoformat())} == {
        r.run_id for r in due
    }
    claimed = rs.claim_due_runs(now=now, owner="A", lease_s=60, limit=2)
    assert len(claimed) == 2
    rest = rs.claim_due_runs(now=now, owner="B", lease_s=60, limit=10)
    assert len(rest) == 1 and not set(rest) & set(claimed)
    assert rs.claim_due_runs(now=now, owner="B", lease_s=60, limit=10) == []
    # a held lease excludes other owners, not its own
    assert rs.try_lease(claimed[0], "A", 60) and not rs.try_lease(claimed[0], "B", 60)
    # released while still due: claimable again
    rs.release_lease(claimed[0], "A")
    assert rs.claim_due_runs(now=now, owner="B", lease_s=60, limit=10) == [claimed[0]]
    # a run that moved on is never claimed
    moved = rs.load(rest[0])
    moved.status, moved.waiting = RunStatus.RUNNING, None
    rs.save(moved)
    rs.release_lease(rest[0], "B")
    assert rs.claim_due_runs(now=now + 10, owner="C", lease_s=60, limit=10) == []
    assert rs.claim_due_runs(now=now + 7200, owner="C", lease_s=60, limit=10) == [later.run_id]


def test_expired_lease_can_be_taken(stores):
    stores.clock = clock = ManualClock()
    rs, _ = stores.open()
    r = _run()
    rs.save(r)
    assert rs.try_lease(r.run_id, "A", 5)
    clock.advance(4.9)
    assert not rs.try_lease(r.run_id, "B", 10)
    clock.advance(0.1)
    assert rs.try_lease(r.run_id, "B", 10)


def test_listener_sees_every_save(stores):
    rs, _ = stores.open()
    seen = []
    rs.add_listener(lambda s: seen.append((s.run_id, s.status)))
    r = _run()
    rs.save(r)
    r.status = RunStatus.COMPLETED
    rs.save(r)
    assert seen == [(r.run_id, "running"), (r.run_id, "completed")]


def test_ledger_chain_seq_and_listing(stores):
    rs, ls = stores.open()
    run = _run()
    rs.save(run)
    got = []
    ls.add_listener(lambda rid, recs: got.extend(r["seq"] for r in recs))
    stored = ls.append_many(run.run_id, [_rec(run, "a"), _rec(run, "b")])
    ls.append(_rec(run, "c", StepStatus.FAILED, error="boom"))
    recs = ls.list(run.run_id)
    assert [r["seq"] for r in recs] == [1, 2, 3] and [r["node_id"] for r in recs] == ["a", "b", "c"]
    assert stored[0]["record_hash"] == recs[0]["record_hash"]
    assert recs[1]["prev_hash"] == recs[0]["record_hash"]
    assert ls.head(run.run_id) == (3, recs[2]["record_hash"])
    assert [r["seq"] for r in ls.list_after(run.run_id, 1)] == [2, 3]
    assert [r["seq"] for r in ls.list_after(run.run_id, 0, limit=2)] == [1, 2]
    assert got == [1, 2, 3]
    assert verify_ledger_chain(recs)["ok"]
    assert ls.list("other-run") == [] and ls.head("other-run") == (0, None)


@pytest.mark.parametrize("tamper", ["change", "remove", "reorder"])
def test_verify_detects_tampering(stores, tamper):
    rs, ls = stores.open()
    run = _run()
    rs.save(run)
    ls.append_many(run.run_id, [_rec(run, n) for n in "abcd"])
    recs = ls.list(run.run_id)
    if tamper == "change":
        recs[1]["result"] = {"forged": True}
    elif tamper == "remove":
        del recs[2]
    else:
        recs[1], recs[2] = recs[2], recs[1]
    report = verify_ledger_chain(recs)
    assert not report["ok"] and report["first_bad_index"] in (1, 2)


def test_commit_writes_records_and_checkpoint_together(stores):
    rs, ls = stores.open()
    run = _run()
    rs.save(run)
    run.status = RunStatus.COMPLETED
    run.output = {"x": 1}
    stored = rs.commit(run, [_rec(run, "a"), _rec(run, "b")])  # the run store commits to its own unit
    assert [r["seq"] for r in stored] == [1, 2]
    assert rs.load(run.run_id).status == RunStatus.COMPLETED
    assert len(ls.list(run.run_id)) == 2


def test_commit_of_unserializable_writes_nothing(stores):
    rs, ls = stores.open()
    run = _run()
    rs.save(run)
    run.vars = {"bad": object()}
    with pytest.raises((TypeError, ValueError)):
        rs.commit(run, [_rec(run, "a")])
    assert rs.load(run.run_id).vars == {}
    assert ls.list(run.run_id) == []


def test_reopen_keeps_everything(stores):
    if not stores.durable_across_reopen:
        pytest.skip("in-memory stores do not outlive their objects")
    rs, ls = stores.open()
    w = _waiting(
        reason=WaitReason.UNTIL, key="t", until=(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    )
    done = _run(status=RunStatus.COMPLETED)
    for r in (w, done):
        rs.commit(r, [_rec(r, "a")])
    stores.close_all()
    rs2, ls2 = stores.open()
    assert rs2.load(w.run_id).to_dict() == w.to_dict()
    assert [s.run_id for s in rs2.list_run_summaries(status="waiting")] == [w.run_id]
    assert rs2.claim_due_runs(now=time.time(), owner="x", lease_s=5, limit=5) == [w.run_id]
    assert ls2.head(done.run_id)[0] == 1
    ls2.append(_rec(done, "b"))
    assert verify_ledger_chain(ls2.list(done.run_id))["ok"]


def test_concurrent_appends_to_many_runs(stores):
    rs, ls = stores.open()
    runs = [_run() for _ in range(8)]
    for r in runs:
        rs.save(r)

    def work(r):
        for i in range(25):
            r.steps = i
            rs.commit(r, [_rec(r, f"n{i}")])

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in runs:
        recs = ls.list(r.run_id)
        assert [x["seq"] for x in recs] == list(range(1, 26))
        assert verify_ledger_chain(recs)["ok"]
        assert rs.load(r.run_id).steps == 24


# -- the ports the kernel uses, on every backend ------------------------------------------------------


def test_a_unit_commits_records_and_checkpoint_and_knows_its_pair(stores):
    rs, ls = stores.open()
    from abstractruntime.core.ports import same_unit

    assert same_unit(rs, ls)  # opened together: one unit
    assert not same_unit(rs, InMemoryLedgerStore())  # another backend's ledger: not its pair


def test_find_step_and_find_completed_answer_from_the_index(stores):
    rs, ls = stores.open()
    run = _run()
    rs.save(run)
    run.steps = 3
    started = _rec(run, "pay", status=StepStatus.STARTED, idempotency_key="k3", step=3)
    done = _rec(run, "pay", idempotency_key="k3", step=3, result={"ok": 1})
    plain = _rec(run, "next", step=4)  # no key: not a host effect
    ls.append_many(run.run_id, [started, done, plain])
    assert ls.find_step(run.run_id, 3)["status"] == "completed" and ls.find_step(run.run_id, 3)["result"] == {"ok": 1}
    assert ls.find_step(run.run_id, 4) is None and ls.find_step(run.run_id, 9) is None
    assert ls.find_completed(run.run_id, "k3")["seq"] == 2 and ls.find_completed(run.run_id, "nope") is None
    if stores.durable_across_reopen:
        stores.close_all()
        rs, ls = stores.open()
        assert ls.find_step(run.run_id, 3)["seq"] == 2  # the index is rebuilt from what was stored


def test_timers_have_their_own_signal_and_a_lease_release_announces_no_state(stores):
    rs, _ = stores.open()
    states, timers = [], []
    rs.add_listener(lambda s: states.append(s.status))
    rs.add_timer_listener(timers.append)
    due = datetime.now(timezone.utc) - timedelta(seconds=1)
    r = _waiting(reason=WaitReason.UNTIL, key="t", until=due.isoformat())
    rs.save(r)
    assert states == ["waiting"] and timers == [pytest.approx(due.timestamp())]
    [claimed] = rs.claim_due_runs(now=due.timestamp() + 1, owner="A", lease_s=60, limit=10)
    rs.release_lease(claimed, "A")
    # The run did not change: no state; its timer is due again: the timer signal.
    assert states == ["waiting"] and len(timers) == 2
    rs.save(r)  # saved again unchanged: nothing to announce
    assert states == ["waiting"]


# -- several runs' steps in one commit (the scheduler's due timers) -------------------------------


def test_commit_many_commits_each_run_with_its_records(stores):
    rs, ls = stores.open()
    seen_records, seen_states = [], []
    ls.add_listener(lambda run_id, recs: seen_records.append((run_id, [r["seq"] for r in recs])))
    rs.add_listener(lambda s: seen_states.append((s.run_id, s.status)))
    runs = [_run() for _ in range(5)]
    rs.commit(runs[0], [_rec(runs[0], "first")])  # one with a ledger already
    seen_records.clear()
    seen_states.clear()
    for r in runs:
        r.status = RunStatus.COMPLETED
        r.output = {"id": r.run_id}
    out = rs.commit_many([(r, [_rec(r, "a"), _rec(r, "b")]) for r in runs])
    assert [[d["seq"] for d in stored] for stored in out] == [[2, 3]] + [[1, 2]] * 4
    for r in runs:
        assert rs.load(r.run_id).output == {"id": r.run_id}
        assert verify_ledger_chain(ls.list(r.run_id))["ok"]
    assert sorted(seen_records) == sorted([(runs[0].run_id, [2, 3])] + [(r.run_id, [1, 2]) for r in runs[1:]])
    assert sorted(seen_states) == sorted((r.run_id, "completed") for r in runs)
    if stores.durable_across_reopen:
        stores.close_all()
        rs2, ls2 = stores.open()
        assert all(rs2.load(r.run_id).status == RunStatus.COMPLETED for r in runs)
        assert all(verify_ledger_chain(ls2.list(r.run_id))["ok"] for r in runs)


def test_commit_many_keeps_an_unserializable_run_out_and_commits_the_others(stores):
    rs, ls = stores.open()
    good, bad = _run(), _run()
    rs.save(good)
    rs.save(bad)
    good.status = RunStatus.COMPLETED
    bad.vars = {"bad": object()}
    out = rs.commit_many([(bad, [_rec(bad, "a")]), (good, [_rec(good, "a")])])
    assert isinstance(out[0], (TypeError, ValueError))
    assert [d["seq"] for d in out[1]] == [1]
    assert rs.load(bad.run_id).vars == {} and ls.list(bad.run_id) == []
    assert rs.load(good.run_id).status == RunStatus.COMPLETED
