"""The group-commit batcher both durable stores share: every caller returns once its item's
batch ran, concurrent callers share batches, and a failing batch reaches its callers (no hang)."""

from __future__ import annotations

import threading
import time

from abstractruntime.storage._durable import Batcher


class Item:
    def __init__(self, n: int) -> None:
        self.n, self.done, self.error = n, False, None


def test_concurrent_callers_share_batches_and_all_return():
    batches = []

    def run(batch):
        time.sleep(0.002)  # a sync: writers pile up meanwhile
        batches.append([it.n for it in batch])
        for it in batch:
            it.done = True

    b = Batcher(run)
    items = [Item(i) for i in range(64)]
    threads = [threading.Thread(target=b.submit, args=(it,)) for it in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert all(it.done for it in items)
    assert sorted(n for batch in batches for n in batch) == list(range(64))  # each exactly once
    assert len(batches) < 64  # shared


def test_a_failing_batch_reaches_every_caller_and_the_next_batch_runs():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        for it in batch:
            it.done = True

    b = Batcher(run)
    first = Item(0)
    b.submit(first)
    assert isinstance(first.error, RuntimeError) and first.done
    second = Item(1)
    b.submit(second)  # the batcher is not left "leading" by the failure
    assert second.done and second.error is None


def test_groups_land_whole_in_one_batch_among_single_callers():
    batches = []

    def run(batch):
        time.sleep(0.001)
        batches.append([it.n for it in batch])
        for it in batch:
            it.done = True

    b = Batcher(run)
    singles = [Item(i) for i in range(40)]
    groups = [[Item(100 * g + i) for i in range(10)] for g in range(1, 6)]
    threads = [threading.Thread(target=b.submit, args=(it,)) for it in singles]
    threads += [threading.Thread(target=b.submit_many, args=(grp,)) for grp in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a caller never returned (a lost wake-up)"
    assert all(it.done for it in singles) and all(it.done for g in groups for it in g)
    for grp in groups:  # each group inside one batch, in its order
        ns = [it.n for it in grp]
        assert any(ns == [n for n in batch if n in ns] for batch in batches)
    assert sorted(n for batch in batches for n in batch) == sorted(
        [it.n for it in singles] + [it.n for g in groups for it in g]
    )
