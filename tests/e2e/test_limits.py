"""Real limits, not injected ones: a daemon with 128 file descriptors under a crowd of clients,
and a daemon whose disk fills up (a small tmpfs). What it acknowledged survives; while the
resource is short it answers `storage_unavailable` (not an internal error), keeps serving reads,
logs the trouble a bounded number of times, stops cleanly, starts again, and catches up."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_fixture import WORKFLOWS

from abstractruntime import JsonFileRunStore, JsonlLedgerStore, SqliteDatabase, SqliteRunStore, verify_ledger_chain
from abstractruntime.client import Client
from abstractruntime.client.aio import AsyncClient, Target
from abstractruntime.client.connection import env_with_package
from abstractruntime.core.errors import AbstractRuntimeError, StorageUnavailableError

RANK = {"running": 0, "waiting": 1, "completed": 2}


class Served:
    def __init__(self, tmp: Path, data: Path, *extra: str, nofile: int = 0) -> None:
        self.socket = str(tmp / f"d{time.monotonic_ns()}.sock")
        self.log = tmp / "daemon.log"
        argv = [sys.executable, "-m", "abstractruntime", "serve", "--data", str(data), "--workflows", str(WORKFLOWS),
                "--socket", self.socket, *extra]

        def limit() -> None:
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env_with_package(), stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=limit)
        deadline = time.monotonic() + 20
        while not self._up():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.02)

    def _up(self) -> bool:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def client(self, timeout: float = 120.0) -> Client:
        return Client(AsyncClient(Target("unix", path=self.socket)), timeout=timeout).connect()


def load(served: Served, acked: dict, seconds: float, workers: int = 24) -> dict:
    """Clients starting and answering runs; every answer that came back is recorded in `acked`."""
    outcome = {"ok": 0, "unavailable": 0, "other": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def note(rid: str, status: str) -> None:
        with lock:
            if RANK[status] >= RANK.get(acked.get(rid, "running"), 0):
                acked[rid] = status
            outcome["ok"] += 1

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                with served.client(timeout=5.0) as c:
                    while time.monotonic() < stop:
                        st = c.start("ask").state
                        note(st.run_id, st.status)
                        note(st.run_id, c.resume(st.run_id, {"text": "yes"}).status)
            except StorageUnavailableError:
                with lock:
                    outcome["unavailable"] += 1
            except (AbstractRuntimeError, OSError, TimeoutError, Exception):  # noqa: BLE001 - a crowd at the limit
                with lock:
                    outcome["other"] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return outcome


def check_acked(kind: str, data: Path, acked: dict) -> None:
    if kind == "files":
        rs, ls = JsonFileRunStore(data / "runs"), JsonlLedgerStore(data / "runs")
    else:
        db = SqliteDatabase(data / "runtime.sqlite3")
        rs = SqliteRunStore(db)
        from abstractruntime import SqliteLedgerStore

        ls = SqliteLedgerStore(db)
    try:
        for rid, status in acked.items():
            st = rs.load(rid)
            assert st is not None, f"acknowledged run {rid} ({status}) is gone"
            assert RANK[st.status.value] >= RANK[status], (rid, status, st.status.value)
            assert verify_ledger_chain(ls.list(rid))["ok"]
        listed = {s.run_id for s in rs.list_run_summaries(limit=10**9)}
        assert set(acked) <= listed, sorted(set(acked) - listed)[:5]
    finally:
        rs.close()
        ls.close()


def test_128_file_descriptors_a_crowd_of_clients_then_sigkill_then_sigterm(tmp_path):
    data = tmp_path / "data"
    acked: dict = {}
    # Kill it while descriptors run short: nothing it acknowledged may be lost.
    d = Served(tmp_path, data, nofile=128)
    hogs = []
    try:
        for _ in range(100):  # idle connections eat most of the 128 descriptors
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket)
            hogs.append(s)
        first = load(d, acked, seconds=3.0)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(30)
    finally:
        for s in hogs:
            s.close()
    assert first["ok"] > 0 and (first["unavailable"] + first["other"]) > 0, first  # it really ran short
    check_acked("files", data, acked)

    # Again, then let the crowd go: it catches up by itself and stops cleanly.
    d = Served(tmp_path, data, nofile=128)
    hogs = []
    try:
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket)
            hogs.append(s)
        load(d, acked, seconds=3.0)
    finally:
        for s in hogs:
            s.close()
    with d.client() as c:  # descriptors are back: writes work again
        st = c.start("ask").state
        acked[st.run_id] = st.status
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    check_acked("files", data, acked)
    errors = [line for line in d.log.read_text().splitlines() if " ERROR " in line]
    assert len(errors) < 60, f"{len(errors)} ERROR lines, e.g. {errors[:3]}"


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()})")


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    try:
        f = open(filler, "wb", buffering=0)  # unbuffered: nothing is left to flush (and fail) at close
    except OSError as e:  # the disk filled up before we did: say with what
        st = os.statvfs(folder)
        sizes = sorted((p.stat().st_size, str(p)) for p in folder.rglob("*") if p.is_file())[-8:]
        raise AssertionError(
            f"{folder} was full before the test filled it ({e}); free blocks {st.f_bfree}, free inodes "
            f"{st.f_ffree}; largest files {sizes}"
        ) from e
    with f:
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
    return filler


@pytest.mark.skipif(os.geteuid() != 0, reason="a real full disk needs root to mount a small tmpfs")
@pytest.mark.parametrize("store", ["files", "sqlite"])
def test_a_full_disk(tmp_path, store):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "16m")
    d = None
    try:
        data = disk / "data"
        acked: dict = {}
        d = Served(tmp_path, data, "--store", store)
        with d.client() as c:
            for _ in range(20):
                st = c.start("ask").state
                acked[st.run_id] = st.status
            done = acked and next(iter(acked))
            acked[done] = c.resume(done, {"text": "yes"}).status
            filler = _fill(disk)
            refused = 0
            for _ in range(30):  # writes are refused with the resource error, naming the cause
                try:
                    st = c.start("ask", {"pad": "x" * 20000}).state
                    acked[st.run_id] = st.status
                except StorageUnavailableError as e:
                    refused += 1
                    assert "ENOSPC" in str(e) or "full" in str(e).lower(), e
            assert refused > 0
            assert c.state(done).status == "completed"  # reads still work
            assert len(c.runs(limit=1000).runs) >= len(acked)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0  # it stops cleanly on a full disk
        d = Served(tmp_path, data, "--store", store)  # and starts again on it
        with d.client() as c:
            for rid, status in acked.items():
                assert RANK[c.state(rid).status] >= RANK[status]
            filler.unlink()  # room again: it catches up by itself
            deadline = time.monotonic() + 20
            while True:
                try:
                    st = c.start("ask").state
                    acked[st.run_id] = st.status
                    break
                except StorageUnavailableError:
                    assert time.monotonic() < deadline, "writes did not work again once there was room"
                    time.sleep(0.1)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
        check_acked(store, data, acked)
    finally:
        if d is not None and d.proc.poll() is None:  # a failed assertion must not leave it running
            d.proc.kill()
            d.proc.wait()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
