"""Small file primitives with the fsync discipline the file stores rely on."""

from __future__ import annotations

import atexit
import errno
import logging
import os
import threading
import time
import uuid
from typing import Any, Callable, List, Optional

from ..core.errors import InvalidRunIdError as InvalidRunIdError  # re-exported: the stores use both
from ..core.errors import StorageUnavailableError
from ..core.errors import check_run_id as check_run_id
from . import _fs

log = logging.getLogger("abstractruntime.storage")
# Files inside a data folder are never opened through a symlink: a planted link would make the
# daemon write wherever it points.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_dir_fd(path: str) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def unavailable(e: BaseException, what: str) -> StorageUnavailableError:
    """The typed error for a write the store could not make: it names the cause (errno) and
    what was being written; the caller raises it `from e`."""
    code = getattr(e, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
    cause = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return StorageUnavailableError(
        f"the store cannot write now ({name + ': ' if name else ''}{cause}, {what}); nothing was changed, "
        "reads still work, retry once the resource is back",
        errno=name or None,
        cause=cause,
    )


def atomic_write(path: str, data: bytes, *, durable: bool, dir_fd: Optional[int] = None) -> None:
    """Replace `path` with `data` so a crash leaves the old file or the new one, never a mix.

    Survives a process crash at any instant (rename is atomic). With `durable`, also a power
    loss: the data is fsync'd before the rename makes it visible, and the folder after it so
    the rename itself is on disk.
    """
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    fd = _fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    try:
        try:
            write_all(fd, data)
            if durable:
                _fs.fdatasync(fd)
        finally:
            os.close(fd)
        _fs.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    if durable and dir_fd is not None:
        _fs.fsync(dir_fd)


def sync_path(path: str, *, whole_fs: bool = False) -> None:
    """fdatasync one file by name, or (`whole_fs`) syncfs the filesystem holding it."""
    fd = _fs.open(path, os.O_RDONLY)
    try:
        if whole_fs and _fs.HAS_SYNCFS:
            _fs.syncfs(fd)
        else:
            _fs.fdatasync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = _fs.write(fd, view)
        view = view[n:]


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def has_syncfs() -> bool:
    return _fs.HAS_SYNCFS


class _Throttle:
    """Logs a failure that repeats once, then at most once a minute, and its end once."""

    def __init__(self, what: str, every_s: float = 60.0) -> None:
        self.what, self.every_s = what, every_s
        self.failing_since: Optional[float] = None
        self.failures = 0
        self._last_log = 0.0

    def failed(self, e: BaseException) -> None:
        now = time.monotonic()
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = self._last_log = now
            log.error("%s failed: %s; kept, and retried", self.what, e)
        elif now - self._last_log >= self.every_s:
            self._last_log = now
            log.error(
                "%s still failing after %d attempts over %.0f s: %s",
                self.what,
                self.failures,
                now - self.failing_since,
                e,
            )

    def ok(self) -> None:
        if self.failing_since is not None:
            log.warning(
                "%s works again after %d failed attempts over %.1f s",
                self.what,
                self.failures,
                time.monotonic() - self.failing_since,
            )
        self.failing_since, self.failures = None, 0


class Flusher:
    """Background writing and syncing of files whose content is already durable elsewhere
    (the run files, whose commits are in the journal; the run index's log).

    This thread waits up to `delay_s` for marks to accumulate, runs each marked path's
    `before_sync` (which writes what was queued for it), puts everything on disk with one
    `syncfs` per filesystem (per-file fsync where syncfs is missing), and then runs the
    `on_synced` callbacks (the journal frees the segments those writes covered).
    `mark(..., urgent=True)` flushes without waiting, when a backlog grows large.

    Nothing marked is dropped: a `before_sync` or a sync that fails (a full disk, no file
    descriptors left) leaves its path marked, the others of the batch go on, and the thread
    tries again with a growing pause (up to `MAX_BACKOFF_S`) until it works; its `on_synced`
    callbacks run only after a sync that followed a successful `before_sync`.
    """

    MAX_BACKOFF_S = 5.0

    def __init__(self, *, delay_s: float = 0.25) -> None:
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._dirty: dict = {}
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._closed = False
        self.batches = 0
        self.synced_files = 0
        self.failed_batches = 0
        self._throttle = _Throttle("writing the stores' files")
        self._thread = threading.Thread(target=self._loop, name="abstractruntime-flusher", daemon=True)
        self._thread.start()

    def mark(self, path: str, on_synced=None, *, before_sync=None, urgent: bool = False) -> None:
        """`before_sync()` runs in the flusher just before the batch is synced, to write what
        was queued for `path`: one per path and batch is enough (it writes everything queued),
        so later ones for a path already marked are dropped. `on_synced()` runs after it."""
        with self._lock:
            self._merge(path, before_sync, [on_synced] if on_synced is not None else [])
        if urgent:
            self._urgent.set()
        self._wake.set()

    def _merge(self, path: str, before_sync: Any, after: list) -> None:
        # Called with self._lock held.
        entry = self._dirty.get(path)
        if entry is None:
            entry = self._dirty[path] = [before_sync, []]
        elif entry[0] is None:
            entry[0] = before_sync
        for fn in after:
            if fn not in entry[1]:
                entry[1].append(fn)

    def forget(self, path: str) -> None:
        """Drop what is marked for `path` (its owner closed and keeps it for the next start)."""
        with self._lock:
            self._dirty.pop(path, None)

    @property
    def pending(self) -> int:
        """Paths marked and not yet written and synced."""
        with self._lock:
            return len(self._dirty)

    def flush(self) -> None:
        """Write and sync everything marked now; raises the first failure (what failed stays
        marked for the thread to retry)."""
        # One batch at a time: a caller's `on_synced` must follow a sync that began after its
        # `before_sync` wrote (a store closing flushes while the thread may be flushing too).
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        failed: dict = {}
        first_error: Optional[BaseException] = None
        for path, (before, after) in dirty.items():
            if before is None:
                continue
            try:
                before()
            except Exception as e:  # this path's write failed: it stays marked, the others go on
                failed[path] = (before, after)
                first_error = first_error or e
        synced = {p: v for p, v in dirty.items() if p not in failed}
        try:
            self._sync(list(synced))
        except Exception as e:  # nothing of this batch is known to be on disk: all stay marked
            failed.update(synced)
            synced = {}
            first_error = first_error or e
        if failed:
            with self._lock:
                for path, (before, after) in failed.items():
                    self._merge(path, before, after)
            self.failed_batches += 1
        self.batches += 1
        self.synced_files += len(synced)
        for _, after in synced.values():
            for fn in after:
                fn()
        if first_error is not None:
            raise first_error

    def _sync(self, paths: list) -> None:
        if _fs.HAS_SYNCFS:
            by_dev: dict = {}
            for path in paths:
                try:
                    by_dev.setdefault(os.stat(path).st_dev, path)
                except FileNotFoundError:
                    continue
            for path in by_dev.values():
                sync_path(path, whole_fs=True)
            return
        folders = set()
        for path in paths:
            try:
                fd = _fs.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                _fs.fsync(fd)
            finally:
                os.close(fd)
            folders.add(os.path.dirname(path))
        for folder in folders:  # new files' names must be on disk too
            fd = _fs.open(folder, os.O_RDONLY)
            try:
                _fs.fsync(fd)
            finally:
                os.close(fd)

    def _loop(self) -> None:
        backoff = 0.0
        while not self._closed:
            if backoff:
                self._wake.wait(backoff)  # a failed batch is retried even if nothing new comes
            else:
                self._wake.wait()
            self._wake.clear()
            self._urgent.wait(self.delay_s)  # let commits accumulate into this batch
            self._urgent.clear()
            try:
                self.flush()
            except Exception as e:  # this thread writes every store's files: it must outlive a bad batch
                self._throttle.failed(e)
                backoff = min(self.MAX_BACKOFF_S, max(self.delay_s, backoff * 2))
            else:
                self._throttle.ok()
                backoff = 0.0

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
        # A script that exits without closing its stores still leaves its files written:
        # the thread is a daemon thread, so this last flush is what writes the final cycle.
        atexit.register(_flush_at_exit)
    return _SHARED


def _flush_at_exit() -> None:
    if _SHARED is not None:
        try:
            _SHARED.flush()
        except OSError as e:
            log.error("final flush at exit failed (%s); the journal keeps the commits for the next start", e)


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
        self.submit_many([item])

    def submit_many(self, items: List[Any]) -> None:
        """Queue `items` together (they land in one batch) and return once they are done: one
        write and one sync for a burst of commits made by one thread (the scheduler's due
        timers). The group shares one wake-up lock; its first item stands for it when it is
        handed the lead."""
        wake = threading.Lock()
        wake.acquire()
        for it in items:
            it._wake, it._lead = wake, False
        item = items[0]
        with self._mutex:
            self._pending.extend(items)
            lead = not self._leading
            self._leading = True
        if not lead:
            wake.acquire()  # released when the group is done, or when it is handed the lead
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
                woken = {id(wake)}  # each other group once (a lock released twice is an error)
                for it in batch:
                    if id(it._wake) not in woken:
                        woken.add(id(it._wake))
                        it._wake.release()
        finally:
            with self._mutex:
                if self._pending:
                    nxt = self._pending[0]
                    nxt._lead = True
                    nxt._wake.release()
                else:
                    self._leading = False
