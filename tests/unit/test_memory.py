"""Memory is bounded by bytes, not only by counts: the stores' checkpoint caches, the daemon's
event log, and the per-run maps that used to grow with every run ever seen."""

from __future__ import annotations

import pytest

from abstractruntime import Effect, EffectType, JsonFileRunStore, JsonlLedgerStore, Runtime, StepPlan, WorkflowSpec
from abstractruntime.daemon.hub import Hub
from abstractruntime.protocol.errors import CursorExpiredError
from abstractruntime.storage._cache import BoundedCache

ASK = WorkflowSpec(
    workflow_id="ask",
    entry_node="ask",
    nodes={
        "ask": lambda run, ctx: StepPlan(
            node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "ans"), next_node="done"
        ),
        "done": lambda run, ctx: StepPlan(node_id="done", complete_output={"n": len(str(run.vars))}),
    },
)
MB = 1 << 20


def test_bounded_cache_evicts_by_bytes_and_by_count():
    c: BoundedCache[bytes] = BoundedCache(max_bytes=100, max_entries=3)
    for k in "abc":
        c.put(k, b"x" * 30)
    assert len(c) == 3 and c.bytes == 90
    c.put("d", b"x" * 30)  # over the count: the oldest goes
    assert c.get("a") is None and len(c) == 3
    c.put("e", b"x" * 60)  # over the bytes: the oldest go until it fits
    assert c.bytes <= 100 and c.get("e") is not None and c.get("b") is None
    c.put("huge", b"x" * 101)  # larger than the whole budget: not kept, nothing else lost
    assert c.get("huge") is None and c.get("e") is not None
    c.pop("e")
    assert c.get("e") is None and c.bytes == sum(len(c.get(k) or b"") for k in "abcd")


def test_the_file_stores_checkpoint_cache_stays_within_its_budget(tmp_path):
    rs, ls = JsonFileRunStore(tmp_path, cache_bytes=2 * MB), JsonlLedgerStore(tmp_path)
    rt = Runtime(run_store=rs, ledger_store=ls)
    ids = [rt.start_and_tick(workflow=ASK, vars={"blob": "x" * MB}).run_id for _ in range(10)]
    assert rs._recent.bytes <= 2 * MB
    for rid in ids:  # what the cache let go is read from the journal or the file, whole
        assert len(rt.get_state(rid).vars["blob"]) == MB
    rs.close()
    ls.close()


@pytest.fixture
def hub(tmp_path):
    (tmp_path / "workflows").mkdir()
    h = Hub(
        data_dir=str(tmp_path / "data"),
        workflow_dirs=[str(tmp_path / "workflows")],
        store="memory",
        workers=2,
        event_log_bytes=1 * MB,
    )
    h.registry.register(ASK)
    yield h
    h.close()


def test_the_event_log_is_bounded_by_bytes_and_says_so_to_a_late_subscriber(hub):
    rt = hub.runtime
    log = hub.events
    first = log.cursor
    ids = []
    for _ in range(8):  # each resume records a 512 KB payload
        st = rt.start_and_tick(workflow=ASK)
        rt.resume(workflow=ASK, run_id=st.run_id, wait_key=None, payload={"text": "y" * (512 << 10)})
        ids.append(st.run_id)
    assert log.bytes <= 1 * MB and len(log) >= 1
    with pytest.raises(CursorExpiredError):
        log.subscribe(None, first, lambda e: None)  # the oldest events were dropped
    # A subscriber from the oldest kept cursor on gets everything after it, once, in order.
    oldest = log.oldest()
    _, now, backlog = log.subscribe(None, oldest, lambda e: None)
    cursors = [e["cursor"] for e in backlog]
    assert cursors == sorted(set(cursors)) and cursors[-1] == now and len(cursors) == len(log) - 1


def test_state_events_come_once_per_change_with_no_per_run_map(hub):
    # The stores announce a change of status or wait only (a lease release announces nothing),
    # so the daemon keeps no map of every run's last state to weed out repeats.
    seen = []
    hub.events.subscribe(
        None, None, lambda e: seen.append((e["run_id"], e["kind"], (e.get("state") or {}).get("status")))
    )
    rt = hub.runtime
    st = rt.start_and_tick(workflow=ASK)
    rt.resume(workflow=ASK, run_id=st.run_id, wait_key=None, payload={"text": "y"})
    states = [x[2] for x in seen if x[1] == "state"]
    assert states == ["waiting", "completed"]
    assert not [k for k in vars(hub) if "last_seen" in k]


_ALLOCATOR_SCRIPT = """
import sys, threading
from abstractruntime.daemon import _malloc
tuned = _malloc.tune() if sys.argv[1] == "tune" else False

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))

kept = []
def resumes():  # as the tick pool does: big payloads in a worker thread, small objects kept
    first = b"a" * (4 << 20)
    del first  # glibc's dynamic threshold rises past 4 MB here
    payloads = []
    for i in range(50):
        payloads.append(b"b" * (4 << 20) + bytes([i]))
        kept.append(bytes(2000) + bytes([i]))
    del payloads

before = rss_mb()
t = threading.Thread(target=resumes)
t.start()
t.join()
print(tuned, rss_mb() - before)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's allocator (Linux only)")
def test_big_payloads_go_back_to_the_system_once_freed(tmp_path):
    import subprocess
    import sys

    def grown(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _ALLOCATOR_SCRIPT, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0], int(out[1])

    tuned, after = grown("tune")
    if tuned != "True":
        pytest.skip("this libc has no mallopt (not glibc): nothing to tune")
    assert after < 40, f"RSS grew {after} MB after 200 MB of payloads were freed"
    # The control: glibc's default keeps most of them (this is what the daemon's tune() undoes).
    assert grown("default")[1] > 100
