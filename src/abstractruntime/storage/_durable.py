"""Small file primitives with the fsync discipline the file stores rely on."""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from typing import Optional

from ..core.errors import AbstractRuntimeError

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


class InvalidRunIdError(AbstractRuntimeError, ValueError):
    CODE = -32011
    NAME = "invalid_run_id"


def check_run_id(run_id: str) -> str:
    """Run ids become file names: letters, digits and `_.:-` only, so no id can name a
    path outside the store's folder."""
    if not isinstance(run_id, str) or not _SAFE_ID.match(run_id) or ".." in run_id:
        raise InvalidRunIdError(
            f"invalid run id {run_id!r}: use letters, digits and _.:- (max 200)", run_id=str(run_id)[:200]
        )
    return run_id


def open_dir_fd(path: str) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def atomic_write(
    path: str, data: bytes, *, durable: bool, dir_fd: Optional[int] = None, also_sync_fd: Optional[int] = None
) -> None:
    """Replace `path` with `data` so a crash leaves the old file or the new one, never a mix.

    Survives a process crash at any instant (rename is atomic). With `durable`, also a power
    loss: the data is fsync'd before the rename makes it visible, and the folder after it so
    the rename itself is on disk. `also_sync_fd` (an index log written ahead of this file) is
    synced before the rename for the same reason.
    """
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    try:
        if durable and also_sync_fd is not None:
            os.fdatasync(also_sync_fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    if durable and dir_fd is not None:
        os.fsync(dir_fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _load_syncfs():
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syncfs
        fn.argtypes = [ctypes.c_int]
        return fn
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def syncfs_available() -> bool:
    return _syncfs is not None


class Flusher:
    """Group commit for files whose content is already durable elsewhere.

    Ledger lines ride inside the atomic checkpoint of their step until their own file is
    known to be on disk, so that file's fsync is off the step's critical path. This thread
    waits up to `delay_s` for dirty files to accumulate, then puts them all on disk with one
    `syncfs` per filesystem (one journal commit for the whole batch; per-file fdatasync
    where syncfs is missing), and then runs the callbacks that record what is now durable
    (which lets the next checkpoints drop those lines). `mark(..., urgent=True)` flushes
    without waiting, for a run whose backlog grows long.
    """

    def __init__(self, *, delay_s: float = 0.25) -> None:
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self._dirty: dict = {}
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._closed = False
        self.batches = 0
        self.synced_files = 0
        self._thread = threading.Thread(target=self._loop, name="abstractruntime-flusher", daemon=True)
        self._thread.start()

    def mark(self, path: str, on_synced=None, *, urgent: bool = False) -> None:
        with self._lock:
            cbs = self._dirty.setdefault(path, [])
            if on_synced is not None:
                cbs.append(on_synced)
        if urgent:
            self._urgent.set()
        self._wake.set()

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        if _syncfs is not None:
            by_dev: dict = {}
            for path in dirty:
                try:
                    by_dev.setdefault(os.stat(path).st_dev, path)
                except FileNotFoundError:
                    continue
            for path in by_dev.values():
                fd = os.open(path, os.O_RDONLY)
                try:
                    if _syncfs(fd) != 0:
                        raise OSError("syncfs failed")
                finally:
                    os.close(fd)
        else:
            for path in dirty:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                # (without syncfs, a new file's folder entry is fsync'd by its owner)
        self.batches += 1
        self.synced_files += len(dirty)
        for cbs in dirty.values():
            for cb in cbs:
                cb()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            self._urgent.wait(self.delay_s)  # let commits accumulate into this batch
            self._urgent.clear()
            try:
                self.flush()
            except OSError:
                logging.getLogger("abstractruntime.storage").exception("background sync failed")

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wake.set()


_SHARED: Optional[Flusher] = None


def shared_flusher() -> Flusher:
    """One flusher thread per process, shared by every file store."""
    global _SHARED
    if _SHARED is None:
        _SHARED = Flusher()
    return _SHARED
