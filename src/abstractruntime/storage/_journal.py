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
are synced. Opening the folder replays the segments *in place*: the entries newer than what the
files hold (`_lsn`, the commit's journal sequence number, which every checkpoint carries; ledger
lines past the file's last sequence number) become pending again, served from memory, and the
flusher's first cycle writes them, exactly as after a commit. Opening therefore writes nothing
and needs no room on the disk, and the segments that hold them stay until that cycle has
synced. Replay is idempotent, stale entries in reused segments are harmless, and a run file torn
by a crash mid-write is rewritten from the entry that was being written.

Failures: a commit that cannot be written (ENOSPC, EMFILE, EIO, ...) raises
`StorageUnavailableError` and changes nothing. A flusher cycle that cannot write the files keeps
everything pending (and its segments) and is retried by the flusher until it works. Segments
are taken only when a commit needs one (a commit on a disk that has room for no new file fails,
opening does not), and reclaimed after each cycle: one larger than `RECLAIM_BYTES` is
truncated, and at most `MAX_FREE` free ones are kept.

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

from . import _fs
from ._durable import NOFOLLOW, Batcher, check_run_id, has_syncfs, open_dir_fd, shared_flusher, sync_path, unavailable
from ._files_writer import FileWriter, run_file

log = logging.getLogger("abstractruntime.storage")

_ENTRY = struct.Struct("<IQI")  # payload length, lsn, crc32(lsn bytes + payload)
_BODY = struct.Struct("<HI")  # run id length, checkpoint length (NO_CKPT: none)
_LSN = struct.Struct("<Q")
NO_CKPT = 0xFFFFFFFF
# A cycle's worth of pending bytes beyond which the flusher is woken at once.
URGENT_BYTES = 8 << 20
# A free segment larger than this is truncated when it is reclaimed (a burst made it big).
RECLAIM_BYTES = 16 << 20
# Free segments kept for reuse; more (after a burst while the files could not be written) are removed.
MAX_FREE = 4

Line = Tuple[int, str]  # (seq, canonical JSON line)


class _Segment:
    __slots__ = ("fd", "offset", "size", "path")

    def __init__(self, fd: int, path: str, size: int = 0) -> None:
        self.fd, self.offset, self.size, self.path = fd, 0, size, path


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
    """One per folder and process, held by the folder's `FileBackend` (json_files.py), so the
    run store's and the ledger store's writes of a step are one entry."""

    def __init__(self, folder: str, *, durable: bool) -> None:
        self.dir = folder
        self.durable = durable
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
        self._current: Optional[_Segment] = None  # taken by the first commit that needs one
        self._next_no = 0
        self._cycle = threading.Lock()
        self.replayed: Set[str] = set()
        self.closed = False
        self._flusher = shared_flusher()
        self._marker = os.path.join(self._jdir, ".")
        max_lsn = self._open_segments()
        self._lsn = max(time.time_ns(), max_lsn + 1)
        self._lsn_lock = threading.Lock()
        self._batcher = Batcher(self._write_batch)
        self.commits = 0
        self.batches = 0
        self.cycles = 0
        if self._sealed:
            self._mark()  # the replayed entries go to the files in the flusher's first cycle

    def make_durable(self) -> None:
        with self._cycle, self._seg_lock:
            self.durable = True
            self._fsync_each = not has_syncfs()
            self._writer = FileWriter(self.dir, durable=True, fsync_each=self._fsync_each)

    def _mark(self) -> None:
        self._flusher.mark(
            self._marker, on_synced=self._recycle, before_sync=self._apply, urgent=self._pending_bytes > URGENT_BYTES
        )

    # -- opening: replay in place ---------------------------------------------------------------

    def _open_segments(self) -> int:
        """Read every segment; entries the files lack become pending again, and the segments
        that hold them stay sealed until a flusher cycle has written and synced them."""
        entries = []
        max_lsn = 0
        for name in sorted(os.listdir(self._jdir), key=lambda n: (len(n), n)):
            if not name.startswith("wal.") or not name[4:].isdigit():
                continue
            self._next_no = max(self._next_no, int(name[4:]) + 1)
            path = os.path.join(self._jdir, name)
            fd = os.open(path, os.O_RDWR | NOFOLLOW)
            size = os.fstat(fd).st_size
            seg = _Segment(fd, path, size)
            self._segments.append(seg)
            found = list(_parse(os.pread(fd, size, 0)))
            max_lsn = max([max_lsn] + [e[0] for e in found])
            real = [e for e in found if e[1]]  # an empty run id is a floor record: an LSN only
            if real:
                entries.extend(real)
                self._sealed.append(seg)
            else:
                self._free.append(seg)
        if entries:
            self._replay(entries)
        if not self._ckpt and not self._lines:
            self._free.extend(self._sealed)  # nothing they hold is missing from the files
            self._sealed = []
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
        self._ckpt = {rid: data for rid, (lsn, data) in ckpts.items() if _file_lsn(run_file(self.dir, rid)) < lsn}
        for rid, by_seq in lines.items():
            head = self._writer.file_head(rid)
            missing = [(s, by_seq[s][1]) for s in sorted(by_seq) if s > head]
            if missing:
                self._lines[rid] = missing
        self.replayed = set(ckpts) | set(lines)
        restored, appended = len(self._ckpt), sum(len(v) for v in self._lines.values())
        if restored or appended:
            log.warning(
                "journal: restored %d checkpoint(s) and %d ledger record(s) committed before an unclean stop "
                "(replayed in place from %s; written to the run files by the next flusher cycle)",
                restored,
                appended,
                self._jdir,
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
        files in the flusher's next cycle. Returns once the entry is synced; raises
        `StorageUnavailableError` (nothing committed) when it cannot be written."""
        self.commit_many([(run_id, lsn, ckpt, lines)])

    def commit_many(self, entries: List[Tuple[str, int, Optional[bytes], List[Line]]]) -> None:
        """`commit` for several runs' entries at once: one write and one sync for all of them
        (and whatever other commits join the batch). All are committed, or none (it raises)."""
        items = [_Entry(run_id, lsn, ckpt, lines) for run_id, lsn, ckpt, lines in entries]
        if not items:
            return
        self._batcher.submit_many(items)
        err = items[0].error  # one write: the same outcome for every entry of the batch
        if err is not None:
            if isinstance(err, OSError):
                raise unavailable(err, f"appending to the journal in {self._jdir}") from err
            raise err
        self._mark()

    def _write_batch(self, batch: List[_Entry]) -> None:
        err: Optional[BaseException] = None
        with self._seg_lock:
            buf = b"".join(it.frame for it in batch)
            try:
                if self._current is None:
                    self._current = self._take_segment()
                seg = self._current
                view, off = memoryview(buf), seg.offset
                while view:
                    n = _fs.pwrite(seg.fd, view, off)
                    view, off = view[n:], off + n
                if self.durable:
                    _fs.fdatasync(seg.fd)
                # Only a synced write moves the offset: a failed one is overwritten by the next.
                seg.offset += len(buf)
                seg.size = max(seg.size, seg.offset)
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

    @property
    def pending(self) -> int:
        """Checkpoints and ledger lines committed and not yet in their files."""
        with self._lock:
            n = len(self._ckpt) + len(self._inflight_ckpt)
            return n + sum(map(len, self._lines.values())) + sum(map(len, self._inflight_lines.values()))

    # -- the flusher's cycle --------------------------------------------------------------------

    def _apply(self) -> None:
        """Before the flusher's sync: seal the current segment and write what it holds.

        Fails as a whole or not at all: on an error everything stays pending (newer commits
        win), the sealed segments stay sealed, and the flusher tries again later."""
        with self._cycle:
            with self._seg_lock, self._lock:
                if self.closed or (not self._ckpt and not self._lines):
                    return
                if self._current is not None and self._current.offset:
                    # The next commit takes a fresh segment: this one's entries are covered by
                    # the maps taken below, and it is reused only after they are on disk.
                    self._sealed.append(self._current)
                    self._current = None
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
                raise
            with self._lock:
                self._inflight_ckpt, self._inflight_lines = {}, {}
                self._applied.extend(self._sealed)
                self._sealed = []
            self.cycles += 1

    def _recycle(self) -> None:
        """After the flusher's sync: the files hold what the applied segments did."""
        with self._cycle:
            if self.closed:
                return
            done, self._applied = self._applied, []
            keep = []
            for seg in done:
                try:
                    self._invalidate(seg, self._lsn)
                    if seg.size > RECLAIM_BYTES:
                        _fs.ftruncate(seg.fd, 0)  # give a burst's space back
                        seg.size = 0
                except OSError as e:
                    # Harmless: its entries are older than the files (LSNs), and a reuse
                    # overwrites them from the start.
                    log.warning("journal: could not reset %s: %s", seg.path, e)
                keep.append(seg)
            with self._seg_lock:
                self._free.extend(keep)
                while len(self._free) > MAX_FREE:
                    self._drop(self._free.pop(0))

    def _drop(self, seg: _Segment) -> None:
        try:
            _fs.unlink(seg.path)
        except OSError as e:
            log.warning("journal: could not remove the spare segment %s: %s", seg.path, e)
            self._free.insert(0, seg)
            return
        os.close(seg.fd)
        self._segments.remove(seg)

    def _take_segment(self) -> _Segment:
        """A segment to write commits to (under the segment lock): a free one, else a new file.
        Nothing changes when that fails (the commit that needed it fails instead)."""
        if self._free:
            seg = self._free.pop()
        else:
            path = os.path.join(self._jdir, f"wal.{self._next_no}")
            fd = _fs.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
            seg = _Segment(fd, path)
            if self.durable:
                try:
                    _fs.fsync(self._jdir_fd)  # the new file's name is on disk before entries are
                except OSError:
                    os.close(fd)
                    os.unlink(path)
                    raise
            self._next_no += 1
            self._segments.append(seg)
        seg.offset = 0
        return seg

    @staticmethod
    def _invalidate(seg: _Segment, floor_lsn: int) -> None:
        """Overwrite a segment's start with a floor record (an LSN, no run) and an end mark.

        It spares the next replay from reading entries whose files are synced (stale entries
        would be harmless anyway: LSNs), and the floor keeps LSNs growing across a restart
        even if the clock went back. It needs no sync of its own."""
        floor = _Entry("", floor_lsn, None, []).frame
        _fs.pwrite(seg.fd, floor + b"\0" * _ENTRY.size, 0)

    # -- writing the files ----------------------------------------------------------------------

    def _sync(self) -> None:
        if self._fsync_each:
            _fs.fsync(self._dir_fd)  # the files themselves were fsync'd as they were written
        elif self.durable:
            sync_path(self.dir, whole_fs=True)

    # -- closing --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything committed to the files and sync them (the flusher's cycle, now)."""
        self._flusher.flush()

    def close(self) -> bool:
        """Write everything to the files, sync, and mark every segment empty. If that cannot be
        done (a full disk), the segments stay as they are, replayed at the next open: returns
        False and logs why; closing never fails."""
        if self.closed:
            return True
        cause: BaseException = OSError("a flusher cycle failed")
        try:
            self._flusher.flush()
        except OSError as e:  # maybe another folder's: what counts is whether ours is written
            cause = e
        with self._cycle:
            clean = not (self._ckpt or self._lines or self._sealed)
            if clean:
                try:
                    self._sync()  # also covers a cycle whose own sync failed
                    # Everything is in the files and synced: no segment needs a replay.
                    for seg in self._segments:
                        self._invalidate(seg, self._lsn)
                        if self.durable:
                            _fs.fdatasync(seg.fd)
                except OSError as e:
                    clean, cause = False, e
            if not clean:
                # Nothing of this journal may run once its descriptors are closed.
                self._flusher.forget(self._marker)
                log.warning(
                    "journal %s: %d commit(s) could not be written to the run files (%s); they stay in the "
                    "journal and are replayed at the next start",
                    self._jdir,
                    self.pending,
                    cause,
                )
            for seg in self._segments:
                os.close(seg.fd)
            self.closed = True
        os.close(self._jdir_fd)
        os.close(self._dir_fd)
        return clean


def _file_lsn(path: str) -> int:
    """The `_lsn` a run file's checkpoint carries; -1 for a missing, torn or older file."""
    try:
        with open(path, "rb") as f:
            return int(json.loads(f.read()).get("_lsn", -1))
    except (FileNotFoundError, ValueError):
        return -1
