"""Small file primitives with the fsync discipline the file stores rely on."""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from typing import Any, Callable, Optional

from ..core.errors import AbstractRuntimeError

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


class InvalidRunIdError(AbstractRuntimeError, ValueError):
    """A run id with characters a store cannot use as a file name."""

    CODE = 1011
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


def atomic_write(path: str, data: bytes, *, durable: bool, dir_fd: Optional[int] = None) -> None:
    """Replace `path` with `data` so a crash leaves the old file or the new one, never a mix.

    Survives a process crash at any instant (rename is atomic). With `durable`, also a power
    loss: the data is fsync'd before the rename makes it visible, and the folder after it so
    the rename itself is on disk.
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
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    if durable and dir_fd is not None:
        os.fsync(dir_fd)


def sync_path(path: str, *, whole_fs: bool = False) -> None:
    """fdatasync one file by name, or (`whole_fs`) syncfs the filesystem holding it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if whole_fs and _syncfs is not None:
            if _syncfs(fd) != 0:
                raise OSError(f"syncfs failed on the filesystem of {path}")
        else:
            os.fdatasync(fd)
    finally:
        os.close(fd)


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


def _load_exchange():
    """renameat2(..., RENAME_EXCHANGE) through libc's syscall(), where the kernel has it."""
    import ctypes
    import platform

    nr = {"x86_64": 316, "aarch64": 276}.get(platform.machine())
    if nr is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    syscall = libc.syscall
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: str, b: str) -> None:
        if syscall(nr, at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), b)

    return exchange


_exchange = _load_exchange()


def exchange_works(folder: str) -> bool:
    """Whether this kernel and filesystem swap two names atomically (checked once per store)."""
    if _exchange is None:
        return False
    a, b = os.path.join(folder, f".x{uuid.uuid4().hex[:8]}"), os.path.join(folder, f".y{uuid.uuid4().hex[:8]}")
    try:
        for p in (a, b):
            with open(p, "wb"):
                pass
        _exchange(a, b)
        return True
    except OSError:
        return False
    finally:
        for p in (a, b):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


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

    def mark(self, path: str, on_synced=None, *, before_sync=None, urgent: bool = False) -> None:
        """`before_sync()` runs in the flusher just before the batch is synced, to write what
        was queued for `path`: one per path and batch is enough (it writes everything queued),
        so later ones for a path already marked are dropped. `on_synced()` runs after it."""
        with self._lock:
            entry = self._dirty.get(path)
            if entry is None:
                entry = self._dirty[path] = [before_sync, []]
            elif entry[0] is None:
                entry[0] = before_sync
            if on_synced is not None:
                entry[1].append(on_synced)
        if urgent:
            self._urgent.set()
        self._wake.set()

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        for before, _ in dirty.values():
            if before is not None:
                before()
        if _syncfs is not None:
            by_dev: dict = {}
            for path in dirty:
                try:
                    by_dev.setdefault(os.stat(path).st_dev, path)
                except FileNotFoundError:
                    continue
            for path in by_dev.values():
                sync_path(path, whole_fs=True)
        else:
            folders = set()
            for path in dirty:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                folders.add(os.path.dirname(path))
            for folder in folders:  # new files' names must be on disk too
                fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self.batches += 1
        self.synced_files += len(dirty)
        for _, after in dirty.values():
            for fn in after:
                fn()

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


class TempPool:
    """Temp files made ahead of need, so a durable checkpoint write costs data-only syncs.

    `atomic_write` must fsync a brand-new temp file before renaming it, and on ext4 that
    fsync commits the journal for the new inode and its blocks. A pool file was created,
    filled with spaces and synced in the background, so overwriting it with a checkpoint of
    at most its size (padded with spaces, which JSON ignores) changes no metadata: its
    fdatasync only flushes data. The protocol is unchanged: temp file, fsync, rename, fsync
    of the folder. Checkpoints larger than the biggest class take the plain path.
    """

    SIZES = (4096, 16384, 65536)
    LOW, BATCH = 16, 48

    def __init__(self, folder: str) -> None:
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):  # leftovers of an earlier process are just temp files
            os.unlink(os.path.join(folder, name))
        self._free: dict = {size: [] for size in self.SIZES}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.misses = 0
        self._thread = threading.Thread(target=self._loop, name="abstractruntime-temp-pool", daemon=True)
        self._thread.start()
        self._wake.set()

    def take(self, size: int) -> Optional[tuple]:
        for cls in self.SIZES:
            if size <= cls:
                with self._lock:
                    free = self._free[cls]
                    path = free.pop() if free else None
                    low = len(free) < self.LOW
                if low:
                    self._wake.set()
                if path is None:
                    self.misses += 1
                    return None
                return path, cls
        return None

    def give_back(self, path: str) -> None:
        """Take a file displaced by an exchange back into the pool: it is allocated and
        synced at a class size, so the next checkpoint written into it changes no metadata."""
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return
        if size in self._free and not self._closed:
            with self._lock:
                self._free[size].append(path)
        else:
            os.unlink(path)  # a checkpoint written outside the pool (exact size): not reusable

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            for cls in self.SIZES:
                with self._lock:
                    need = self.BATCH - len(self._free[cls]) if len(self._free[cls]) < self.LOW else 0
                if need > 0 and not self._closed:
                    try:
                        self._make(cls, need)
                    except OSError:
                        logging.getLogger("abstractruntime.storage").exception("could not refill the temp pool")

    def _make(self, cls: int, n: int) -> None:
        blank = b" " * (cls - 1) + b"\n"
        made = []
        for _ in range(n):
            path = os.path.join(self.dir, f"t{uuid.uuid4().hex[:12]}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, blank)
            finally:
                os.close(fd)
            made.append(path)
        # One sync for the whole batch: every block of these files is allocated and written.
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            if _syncfs is None or _syncfs(fd) != 0:
                for p in made:
                    f = os.open(p, os.O_RDONLY)
                    try:
                        os.fsync(f)
                    finally:
                        os.close(f)
                os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._free[cls].extend(made)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        with self._lock:
            for free in self._free.values():
                for p in free:
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        pass
                free.clear()


class Batcher:
    """Leader/follower group commit, shared by the file and SQLite stores.

    `submit(item)` queues an item (which has a `done` flag) and returns once a batch that
    holds it has run. The first submitter while no batch runs becomes the leader: it runs
    `run_batch` on everything queued (its own item included), wakes the members of that batch,
    and hands the lead to the first writer that queued meanwhile, so writers arriving during a
    batch share the next one and no leader keeps serving others while its own caller waits.
    `run_batch` must set `done` on every item (and record any error on it); a lone submitter
    runs its batch of one at once.

    Each waiter sleeps on a lock of its own: a batch wakes exactly its members (and the next
    leader), not every thread waiting on a shared condition, which under the GIL made every
    batch pay for a herd of wake-ups that went straight back to sleep.
    """

    def __init__(self, run_batch: Callable[[list], None]) -> None:
        self._run_batch = run_batch
        self._mutex = threading.Lock()
        self._pending: list = []
        self._leading = False

    def submit(self, item: Any) -> None:
        wake = threading.Lock()
        wake.acquire()
        item._wake, item._lead = wake, False
        with self._mutex:
            self._pending.append(item)
            lead = not self._leading
            self._leading = True
        if not lead:
            wake.acquire()  # released when the item is done, or when it is handed the lead
            if not item._lead:
                return
        try:
            while not item.done:
                with self._mutex:
                    batch, self._pending = self._pending, []
                try:
                    self._run_batch(batch)
                except Exception as e:  # a bug in run_batch: every caller of the batch hears of it
                    for it in batch:
                        if not it.done:
                            it.error, it.done = e, True
                for it in batch:
                    if it is not item:
                        it._wake.release()
        finally:
            with self._mutex:
                if self._pending:
                    nxt = self._pending[0]
                    nxt._lead = True
                    nxt._wake.release()
                else:
                    self._leading = False


class _Replace:
    __slots__ = ("tmp", "path", "dir_fd", "swap", "done", "error", "_wake", "_lead")

    def __init__(self, tmp: str, path: str, dir_fd: int, swap: bool) -> None:
        self.tmp, self.path, self.dir_fd, self.swap = tmp, path, dir_fd, swap
        self.done = False
        self.error: Optional[OSError] = None


class GroupCommitter:
    """Group commit for durable checkpoint replaces.

    Each caller writes its temp file (no sync) and joins the current batch; the first caller
    of a batch leads it: one `syncfs` puts every temp file's data on disk (per-file
    fdatasync for a batch of one, or without syncfs), then each temp file is renamed over
    its target, then each folder is fsync'd once. Callers return when their batch is done.
    A lone commit costs what `atomic_write` costs; many concurrent ones share two syncs.
    Each step keeps the protocol's guarantee: data on disk before the rename makes it
    visible, and the rename on disk before the commit returns.
    """

    def __init__(self, pool: Optional[TempPool] = None, *, exchange: bool = False) -> None:
        # With `exchange`, a replace over an existing file swaps the two names instead
        # (renameat2 RENAME_EXCHANGE): the displaced old checkpoint becomes a pool file for a
        # later write, so no inode is created or freed per checkpoint. Atomic all the same.
        self._pool = pool
        self._exchange = exchange and pool is not None and _exchange is not None
        self._batcher = Batcher(self._run)
        self.batches = 0
        self.commits = 0

    def replace(self, tmp: str, path: str, dir_fd: int, *, exists: bool = False) -> None:
        item = _Replace(tmp, path, dir_fd, self._exchange and exists)
        self._batcher.submit(item)
        if item.error is not None:
            raise item.error

    def _run(self, batch: list) -> None:
        try:
            if len(batch) > 1 and _syncfs is not None:
                sync_path(batch[0].tmp, whole_fs=True)
            else:
                for it in batch:
                    sync_path(it.tmp)
            folders: dict = {}
            for it in batch:
                if it.swap:
                    try:
                        _exchange(it.tmp, it.path)  # type: ignore[misc]
                    except FileNotFoundError:
                        it.swap = False  # the target is gone after all: a plain rename
                        os.replace(it.tmp, it.path)
                else:
                    os.replace(it.tmp, it.path)
                folders[it.dir_fd] = True
            for dfd in folders:
                os.fsync(dfd)
            if self._pool is not None:
                for it in batch:
                    if it.swap:
                        self._pool.give_back(it.tmp)
            err: Optional[OSError] = None
        except OSError as e:
            err = e
        self.batches += 1
        self.commits += len(batch)
        for it in batch:
            it.error = err
            it.done = True


def write_temp(path: str, data: bytes, pool: Optional[TempPool]) -> str:
    """Write `data` to a temp file beside `path` (a pool file when one fits), unsynced."""
    got = pool.take(len(data) + 1) if pool is not None else None
    if got is not None:
        tmp, size = got
        fd = os.open(tmp, os.O_WRONLY)
        data = data + b" " * (size - len(data) - 1) + b"\n"
    else:
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    return tmp
