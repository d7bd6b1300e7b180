"""Writes committed checkpoints and ledger lines into a folder's run files, for the journal.

(Tried and dropped: running this in a helper process so the daemon's interpreter keeps its
GIL. Over four alternating pairs it gained ~4%, inside this machine's noise, for a second
process to supervise; the files' cost is mostly kernel work, which runs outside the GIL.)
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Tuple

from . import _fs
from ._durable import NOFOLLOW, check_run_id, write_all

log = logging.getLogger("abstractruntime.storage")

Line = Tuple[int, str]  # (seq, canonical JSON line)


def run_file(folder: str, run_id: str) -> str:
    return os.path.join(folder, f"run_{check_run_id(run_id)}.json")


def ledger_file(folder: str, run_id: str) -> str:
    return os.path.join(folder, f"ledger_{check_run_id(run_id)}.jsonl")


def ledger_file_head(path: str, *, durable: bool) -> Tuple[int, Optional[str]]:
    """(last seq, last record hash) of a ledger file; a torn last line (a crash mid-append) is
    cut off first, with a warning."""
    try:
        fd = os.open(path, os.O_RDWR | NOFOLLOW)
    except FileNotFoundError:
        return 0, None
    with os.fdopen(fd, "rb+") as f:
        raw = f.read()
        body_end = raw.rfind(b"\n") + 1
        if body_end < len(raw):
            log.warning("ledger %s ends in a torn line (%d bytes); cutting it off", path, len(raw) - body_end)
            _fs.ftruncate(fd, body_end)
            if durable:
                _fs.fsync(fd)
            raw = raw[:body_end]
        if not raw:
            return 0, None
        last = json.loads(raw[raw.rfind(b"\n", 0, len(raw) - 1) + 1 :])
        return int(last["seq"]), last["record_hash"]


def _remember(cache: Dict[str, int], key: str, value: int) -> None:
    if len(cache) >= 65536 and key not in cache:
        cache.clear()  # forgetting only costs a read (or a truncate) the next time
    cache[key] = value


class FileWriter:
    """Checkpoints are written in place (no temp file, no rename, no inode freed); ledger lines
    are appended only where they continue the file, so applying the same lines twice is
    harmless. Syncing is the caller's (one syncfs for everything), except with `fsync_each`
    (no syncfs on this system), where each file is fsync'd as it is written."""

    def __init__(self, folder: str, *, durable: bool, fsync_each: bool) -> None:
        self.dir, self.durable, self.fsync_each = folder, durable, fsync_each
        # What this writer last wrote (bounded caches, see _remember): the last seq in each
        # ledger file, the size of each checkpoint file.
        self._file_seq: Dict[str, int] = {}
        self._ckpt_size: Dict[str, int] = {}

    def apply(self, ckpts: Dict[str, bytes], lines: Dict[str, List[Line]]) -> int:
        for rid, data in ckpts.items():
            self.write_checkpoint(rid, data)
        appended = sum(self.append_lines(rid, ls) for rid, ls in lines.items())
        if self.fsync_each and (ckpts or lines):
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                _fs.fsync(fd)  # new files' names
            finally:
                os.close(fd)
        return appended

    def file_head(self, run_id: str) -> int:
        """The last seq in the run's ledger file (a torn last line is cut off first)."""
        head = self._file_seq.get(run_id)
        if head is None:
            head = ledger_file_head(ledger_file(self.dir, run_id), durable=self.durable)[0]
            _remember(self._file_seq, run_id, head)
        return head

    def write_checkpoint(self, run_id: str, data: bytes) -> None:
        # A crash mid-write tears the file; the journal's replay rewrites it.
        path = run_file(self.dir, run_id)
        size = self._ckpt_size.get(run_id)
        fd = -1
        if size is None:  # first write by this writer: a new run, most likely
            try:
                fd, size = _fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600), 0
            except FileExistsError:
                pass
        if fd < 0:
            fd = _fs.open(path, os.O_WRONLY | os.O_CREAT | NOFOLLOW, 0o600)
        try:
            write_all(fd, data)
            if size is None or size > len(data):
                _fs.ftruncate(fd, len(data))
            if self.fsync_each:
                _fs.fsync(fd)
        except BaseException:
            self._ckpt_size.pop(run_id, None)  # torn: its size is unknown (the journal rewrites it)
            raise
        finally:
            os.close(fd)
        _remember(self._ckpt_size, run_id, len(data))

    def append_lines(self, run_id: str, lines: List[Line]) -> int:
        path = ledger_file(self.dir, run_id)
        head = self._file_seq.get(run_id)
        fd = -1
        if head is None and lines and lines[0][0] == 1:  # a new run's first lines: nothing to read
            try:
                fd, head = _fs.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600), 0
            except FileExistsError:
                pass
        try:
            if head is None:
                head = ledger_file_head(path, durable=self.durable)[0]
            new = [(s, line) for s, line in lines if s > head]
            if not new:
                return 0
            if new[0][0] != head + 1 or any(b[0] != a[0] + 1 for a, b in zip(new, new[1:], strict=False)):
                log.error(
                    "ledger %s: lines from %d do not continue the file at %d; not appending", path, new[0][0], head
                )
                return 0
            if fd < 0:
                fd = _fs.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o600)
            view, written = memoryview("".join(line + "\n" for _, line in new).encode()), 0
            try:
                while written < len(view):
                    written += _fs.write(fd, view[written:])
                if self.fsync_each:
                    _fs.fsync(fd)
            except OSError:
                self._file_seq.pop(run_id, None)
                try:
                    os.ftruncate(fd, os.fstat(fd).st_size - written)  # no partial line left behind
                except OSError:
                    pass  # the torn line is cut off when the file is next read (ledger_file_head)
                raise
        finally:
            if fd >= 0:
                os.close(fd)
        _remember(self._file_seq, run_id, new[-1][0])
        return len(new)
