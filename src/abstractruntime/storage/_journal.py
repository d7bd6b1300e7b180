"""The JSON-file stores' write-ahead journal: a commit is one append and one shared sync.

Why not a file per commit: writing a checkpoint as a temp file renamed over the old one costs a
create, a rename and a folder sync per commit, and every rename frees an inode. On ext4 without
a journal (this project's CI machines) the inode allocator then checks each recently freed
inode one by one (`recently_deleted`), so creating a file went from ~20 us to ~600 us once
enough were freed. Here a commit appends one framed entry (run id, checkpoint, ledger lines)
to a segment file, and concurrent commits share one write and one fdatasync (group commit).
The folder's flusher thread later writes each touched run's newest checkpoint *in place* into
`run_<id>.json` (a run that committed five times in a cycle is written once), appends the
ledger lines to `ledger_<id>.jsonl`, syncs the filesystem, and only then lets the segment be
reused. Each run creates its two files once; nothing is renamed or freed per commit.

Crash at any instant: an acknowledged commit is in a synced segment until the files holding it
are synced. Opening the folder replays the segments: a checkpoint is written only when its
entry is newer than what the run file holds (`_lsn`, the commit's journal sequence number,
which every checkpoint carries), and ledger lines only past the file's last sequence number.
So replay is idempotent, stale entries in reused segments are harmless, and a run file torn by
a crash mid-write is rewritten from the entry that was being written.

Segment format (`_journal/wal.<k>`): entries from offset 0, each a 16-byte header (payload
length, LSN, crc32 of LSN and payload) and the payload. A parse stops at the first entry that
does not check out. LSNs start at max(time_ns, the highest seen + 1) in each process, so they
grow across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from typing import Dict, List, Optional, Set, Tuple

from ._durable import Batcher, check_run_id, has_syncfs, open_dir_fd, shared_flusher, sync_path
from ._files_writer import FileWriter, run_file

log = logging.getLogger("abstractruntime.storage")

_ENTRY = struct.Struct("<IQI")  # payload length, lsn, crc32(lsn bytes + payload)
_BODY = struct.Struct("<HI")  # run id length, checkpoint length (NO_CKPT: none)
_LSN = struct.Struct("<Q")
NO_CKPT = 0xFFFFFFFF
# A cycle's worth of pending bytes beyond which the flusher is woken at once.
URGENT_BYTES = 8 << 20

Line = Tuple[int, str]  # (seq, canonical JSON line)


class _Segment:
    __slots__ = ("fd", "offset")

    def __init__(self, fd: int) -> None:
        self.fd, self.offset = fd, 0


class _Entry:
    __slots__ = ("run_id", "lsn", "ckpt", "lines", "frame", "done", "error", "_wake", "_lead")

    def __init__(self, run_id: str, lsn: int, ckpt: Optional[bytes], lines: List[Line]) -> None:
        rid = run_id.encode()
        body = (
            _BODY.pack(len(rid), NO_CKPT if ckpt is None else len(ckpt))
            + rid
            + (ckpt or b"")
            + "\n".join(line for _, line in lines).encode()
        )
        lsn_b = _LSN.pack(lsn)
        self.frame = _ENTRY.pack(len(body), lsn, zlib.crc32(body, zlib.crc32(lsn_b))) + body
        self.run_id, self.lsn, self.ckpt, self.lines = run_id, lsn, ckpt, lines
        self.done = False
        self.error: Optional[BaseException] = None


def _parse(data: bytes):
    """Yield (lsn, run_id, checkpoint or None, [line, ...]) for each entry that checks out."""
    off = 0
    while off + _ENTRY.size <= len(data):
        n, lsn, crc = _ENTRY.unpack_from(data, off)
        body = data[off + _ENTRY.size : off + _ENTRY.size + n]
        if n < _BODY.size or len(body) != n or zlib.crc32(body, zlib.crc32(_LSN.pack(lsn))) != crc:
            return
        rlen, clen = _BODY.unpack_from(body)
        pos = _BODY.size + rlen
        run_id = body[_BODY.size : pos].decode()
        ckpt = None
        if clen != NO_CKPT:
            ckpt, pos = body[pos : pos + clen], pos + clen
        rest = body[pos:]
        yield lsn, run_id, ckpt, (rest.decode().split("\n") if rest else [])
        off += _ENTRY.size + n


class Journal:
    """One per folder and process, shared by the run store and the ledger store opened on it
    (`Journal.open`), so a step's checkpoint and ledger lines are one entry."""

    _registry: Dict[str, Journal] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def open(cls, folder: str, *, durable: bool) -> Journal:
        key = os.path.realpath(folder)
        with cls._registry_lock:
            j = cls._registry.get(key)
            if j is None:
                j = cls._registry[key] = Journal(key, durable=durable)
            if durable and not j.durable:
                j._make_durable()  # one durable store on a folder makes its journal durable
            j._users += 1
            return j

    def release(self) -> None:
        """A store on this folder closed; the last one closes the journal."""
        with self._registry_lock:
            self._users -= 1
            if self._users > 0:
                return
            self._registry.pop(self.dir, None)
        self.close()

    def __init__(self, folder: str, *, durable: bool) -> None:
        self.dir = folder
        self.durable = durable
        self._users = 0
        self._jdir = os.path.join(folder, "_journal")
        os.makedirs(self._jdir, exist_ok=True)
        self._dir_fd = open_dir_fd(folder)
        self._jdir_fd = open_dir_fd(self._jdir)
        # Without syncfs (not Linux) each file written in a cycle is fsync'd on its own.
        self._fsync_each = durable and not has_syncfs()
        self._seg_lock = threading.Lock()  # the current segment: writes, syncs, rotation
        self._lock = threading.Lock()  # the maps below
        # Committed, not yet written to the run's files (newest checkpoint; lines in order).
        self._ckpt: Dict[str, bytes] = {}
        self._lines: Dict[str, List[Line]] = {}
        self._pending_bytes = 0
        # Being written by the flusher right now: readers still find them here.
        self._inflight_ckpt: Dict[str, bytes] = {}
        self._inflight_lines: Dict[str, List[Line]] = {}
        self._writer = FileWriter(folder, durable=durable, fsync_each=self._fsync_each)
        self._segments: List[_Segment] = []
        self._free: List[_Segment] = []
        self._sealed: List[_Segment] = []  # rotated out, their entries not yet written to files
        self._applied: List[_Segment] = []  # written to files, awaiting the sync that frees them
        self._cycle = threading.Lock()
        self.replayed: Set[str] = set()
        self.closed = False
        max_lsn = self._open_segments()
        self._lsn = max(time.time_ns(), max_lsn + 1)
        self._lsn_lock = threading.Lock()
        self._current = self._take_segment()
        self._batcher = Batcher(self._write_batch)
        self._flusher = shared_flusher()
        self._marker = os.path.join(self._jdir, ".")
        self.commits = 0
        self.batches = 0
        self.cycles = 0

    def _make_durable(self) -> None:
        with self._cycle, self._seg_lock:
            self.durable = True
            self._fsync_each = not has_syncfs()
            self._writer = FileWriter(self.dir, durable=True, fsync_each=self._fsync_each)

    # -- opening: replay ------------------------------------------------------------------------

    def _open_segments(self) -> int:
        entries = []
        for name in sorted(os.listdir(self._jdir)):
            if not name.startswith("wal."):
                continue
            fd = os.open(os.path.join(self._jdir, name), os.O_RDWR)
            self._segments.append(_Segment(fd))
            entries.extend(_parse(os.pread(fd, os.fstat(fd).st_size, 0)))
        max_lsn = max((e[0] for e in entries), default=0)
        entries = [e for e in entries if e[1]]  # an empty run id is a floor record: an LSN only
        if entries:
            self._replay(entries)
            self._sync()
        for seg in self._segments:
            self._invalidate(seg, max_lsn)
        self._free = list(self._segments)
        return max_lsn

    def _replay(self, entries: list) -> None:
        ckpts: Dict[str, Tuple[int, bytes]] = {}
        lines: Dict[str, Dict[int, Tuple[int, str]]] = {}
        for lsn, rid, ckpt, ls in entries:
            try:
                check_run_id(rid)
            except ValueError:
                log.error("journal: skipping an entry with an invalid run id %r", rid[:80])
                continue
            if ckpt is not None and lsn > ckpts.get(rid, (-1, b""))[0]:
                ckpts[rid] = (lsn, ckpt)
            for line in ls:
                seq = json.loads(line)["seq"]
                by_seq = lines.setdefault(rid, {})
                if lsn > by_seq.get(seq, (-1, ""))[0]:  # a retried commit's line wins
                    by_seq[seq] = (lsn, line)
        newer = {rid: data for rid, (lsn, data) in ckpts.items() if _file_lsn(run_file(self.dir, rid)) < lsn}
        restored = len(newer)
        appended = self._writer.apply(
            newer, {rid: [(s, by_seq[s][1]) for s in sorted(by_seq)] for rid, by_seq in lines.items()}
        )
        self.replayed = set(ckpts) | set(lines)
        if restored or appended:
            log.warning(
                "journal: restored %d checkpoint(s) and %d ledger record(s) committed before an unclean stop",
                restored,
                appended,
            )

    # -- commits --------------------------------------------------------------------------------

    def next_lsn(self) -> int:
        """The sequence number of a commit about to be made; checkpoints carry it as `_lsn`.
        Take it just before `commit`, under the run's own serialization."""
        with self._lsn_lock:
            self._lsn += 1
            return self._lsn

    def commit(self, run_id: str, lsn: int, ckpt: Optional[bytes], lines: List[Line]) -> None:
        """Make a checkpoint and/or ledger lines durable (with `durable`); they reach the run's
        files in the flusher's next cycle. Returns once the entry is synced."""
        item = _Entry(run_id, lsn, ckpt, lines)
        self._batcher.submit(item)
        if item.error is not None:
            raise item.error
        self._flusher.mark(
            self._marker, on_synced=self._recycle, before_sync=self._apply, urgent=self._pending_bytes > URGENT_BYTES
        )

    def _write_batch(self, batch: List[_Entry]) -> None:
        err: Optional[BaseException] = None
        with self._seg_lock:
            seg = self._current
            buf = b"".join(it.frame for it in batch)
            try:
                view, off = memoryview(buf), seg.offset
                while view:
                    n = os.pwrite(seg.fd, view, off)
                    view, off = view[n:], off + n
                if self.durable:
                    os.fdatasync(seg.fd)
                seg.offset += len(buf)
            except OSError as e:
                err = e
            if err is None:
                # Still under the segment lock: a rotation cannot seal this segment before the
                # maps that its flusher cycle takes over hold these entries.
                with self._lock:
                    for it in batch:
                        if it.ckpt is not None:
                            self._ckpt[it.run_id] = it.ckpt
                        if it.lines:
                            self._lines.setdefault(it.run_id, []).extend(it.lines)
                    self._pending_bytes += len(buf)
        self.commits += len(batch)
        self.batches += 1
        for it in batch:
            it.error, it.done = err, True

    # -- reads ----------------------------------------------------------------------------------

    def checkpoint(self, run_id: str) -> Optional[bytes]:
        """The newest committed checkpoint of a run not yet written to its file, if any."""
        with self._lock:
            data = self._ckpt.get(run_id)
            return data if data is not None else self._inflight_ckpt.get(run_id)

    def lines(self, run_id: str) -> List[Line]:
        """Committed ledger lines of a run that its file may not hold yet, in order. Take them
        before reading the file: a line the flusher appends meanwhile is then in both."""
        with self._lock:
            return self._inflight_lines.get(run_id, []) + self._lines.get(run_id, [])

    # -- the flusher's cycle --------------------------------------------------------------------

    def _apply(self) -> None:
        """Before the flusher's sync: seal the current segment and write what it holds."""
        with self._cycle:
            with self._seg_lock, self._lock:
                if not self._ckpt and not self._lines:
                    return
                self._sealed.append(self._current)
                self._current = self._take_segment()
                ckpt, self._ckpt = self._ckpt, {}
                lines, self._lines = self._lines, {}
                self._pending_bytes = 0
                self._inflight_ckpt, self._inflight_lines = ckpt, lines
            try:
                self._writer.apply(ckpt, lines)
            except BaseException:
                with self._lock:  # kept for the next cycle; newer commits win
                    for rid, data in ckpt.items():
                        self._ckpt.setdefault(rid, data)
                    for rid, ls in lines.items():
                        self._lines[rid] = ls + self._lines.get(rid, [])
                    self._inflight_ckpt, self._inflight_lines = {}, {}
                self._flusher.mark(self._marker, on_synced=self._recycle, before_sync=self._apply)
                raise
            with self._lock:
                self._inflight_ckpt, self._inflight_lines = {}, {}
                self._applied.extend(self._sealed)
                self._sealed = []
            self.cycles += 1

    def _recycle(self) -> None:
        """After the flusher's sync: the files hold what the applied segments did."""
        with self._cycle:
            done, self._applied = self._applied, []
            for seg in done:
                self._invalidate(seg, self._lsn)
            with self._seg_lock:
                self._free.extend(done)

    def _take_segment(self) -> _Segment:
        if self._free:
            seg = self._free.pop()
        else:
            path = os.path.join(self._jdir, f"wal.{len(self._segments)}")
            seg = _Segment(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            self._segments.append(seg)
            if self.durable:
                os.fsync(self._jdir_fd)
        seg.offset = 0
        return seg

    @staticmethod
    def _invalidate(seg: _Segment, floor_lsn: int) -> None:
        """Overwrite a segment's start with a floor record (an LSN, no run) and an end mark.

        It spares the next replay from reading entries whose files are synced (stale entries
        would be harmless anyway: LSNs), and the floor keeps LSNs growing across a restart
        even if the clock went back. It needs no sync of its own."""
        floor = _Entry("", floor_lsn, None, []).frame
        os.pwrite(seg.fd, floor + b"\0" * _ENTRY.size, 0)

    # -- writing the files ----------------------------------------------------------------------

    def _sync(self) -> None:
        if self._fsync_each:
            os.fsync(self._dir_fd)  # the files themselves were fsync'd as they were written
        elif self.durable:
            sync_path(self.dir, whole_fs=True)

    # -- closing --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything committed to the files and sync them (the flusher's cycle, now)."""
        self._flusher.flush()

    def close(self) -> None:
        if self.closed:
            return
        self._flusher.flush()
        with self._cycle:
            if self._ckpt or self._lines or self._sealed:
                raise OSError(f"journal {self._jdir}: could not write everything to the run files; kept for replay")
            self._sync()  # also covers a cycle whose own sync failed
            # Everything is in the files and synced: no segment needs a replay.
            for seg in self._segments:
                self._invalidate(seg, self._lsn)
                if self.durable:
                    os.fdatasync(seg.fd)
                os.close(seg.fd)
            self.closed = True
        os.close(self._jdir_fd)
        os.close(self._dir_fd)


def _file_lsn(path: str) -> int:
    """The `_lsn` a run file's checkpoint carries; -1 for a missing, torn or older file."""
    try:
        with open(path, "rb") as f:
            return int(json.loads(f.read()).get("_lsn", -1))
    except (FileNotFoundError, ValueError):
        return -1
