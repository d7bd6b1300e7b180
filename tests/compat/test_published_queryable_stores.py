"""Run stores are queryable as published: newest first, earliest timer first, after a re-open too."""

from __future__ import annotations

from abstractruntime import QueryableRunStore, RunState, RunStatus, WaitReason, WaitState
from abstractruntime.storage.base import QueryableRunIndexStore


def fill(runs):
    """Four runs, saved in order 0..3 (so 3 is the most recently updated)."""
    ids = []
    for i in range(4):
        r = RunState.new(workflow_id=f"w{i % 2}", entry_node="n", vars={"i": i})
        if i == 1:
            r.status, r.waiting = (
                RunStatus.WAITING,
                WaitState(reason=WaitReason.UNTIL, until="2000-01-03T00:00:00+00:00"),
            )
        if i == 2:
            r.status, r.waiting = (
                RunStatus.WAITING,
                WaitState(reason=WaitReason.UNTIL, until="2000-01-01T00:00:00+00:00"),
            )
        if i == 3:
            r.status, r.waiting = RunStatus.WAITING, WaitState(reason=WaitReason.USER, wait_key="k")
        r.updated_at = f"2026-01-0{i + 1}T00:00:00+00:00"
        runs.save(r)
        ids.append(r.run_id)
    return ids


def order(runs_found):
    return [r.vars["i"] for r in runs_found]


def test_every_run_store_is_a_queryable_run_store_and_a_run_index_store(published):
    runs, _ = published.open()
    assert isinstance(runs, QueryableRunStore) and isinstance(runs, QueryableRunIndexStore)


def test_list_runs_is_newest_updated_first_with_filters_and_a_limit(published):
    runs, _ = published.open()
    fill(runs)
    assert order(runs.list_runs()) == [3, 2, 1, 0]
    assert order(runs.list_runs(status=RunStatus.WAITING)) == [3, 2, 1]
    assert order(runs.list_runs(wait_reason=WaitReason.UNTIL)) == [2, 1]
    assert order(runs.list_runs(workflow_id="w1")) == [3, 1]
    assert order(runs.list_runs(limit=2)) == [3, 2]
    oldest = runs.list_runs()[-1]
    oldest.updated_at = "2026-02-01T00:00:00+00:00"
    runs.save(oldest)
    assert order(runs.list_runs()) == [0, 3, 2, 1]


def test_list_due_wait_until_is_earliest_due_first(published):
    runs, _ = published.open()
    fill(runs)
    assert order(runs.list_due_wait_until(now_iso="2001-01-01T00:00:00+00:00")) == [2, 1]
    assert order(runs.list_due_wait_until(now_iso="2000-01-02T00:00:00+00:00")) == [2]
    assert runs.list_due_wait_until(now_iso="1999-01-01T00:00:00+00:00") == []


def test_listings_survive_a_reopen(published):
    if published.kind == "memory":
        return  # nothing to re-open
    runs, ledger = published.open()
    fill(runs)
    for store in (runs, ledger):
        getattr(store, "close", lambda: None)()  # the published stores have no close()
    runs, _ = published.open()
    assert order(runs.list_runs()) == [3, 2, 1, 0]
    assert order(runs.list_due_wait_until(now_iso="2001-01-01T00:00:00+00:00")) == [2, 1]


def test_a_second_store_on_the_same_folder_sees_the_first_ones_runs(published):
    if published.kind == "memory":
        return
    runs, _ = published.open()
    fill(runs)
    again, _ = published.open()
    assert order(again.list_runs()) == [3, 2, 1, 0]


def test_list_run_index_lists_summaries_without_loading_runs(published):
    runs, _ = published.open()
    ids = fill(runs)
    rows = runs.list_run_index(limit=10)
    assert [r["run_id"] for r in rows] == ids[::-1]
    assert [r["run_id"] for r in runs.list_run_index(oldest_first=True, limit=2)] == ids[:2]
    assert [r["status"] for r in runs.list_run_index(status=RunStatus.WAITING)] == ["waiting"] * 3
