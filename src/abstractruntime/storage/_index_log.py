"""Persistence of the JSON-file store's run index: a snapshot plus append-only logs.

Layout under `<store>/_index/`: `snapshot.json` holds every run's summary and the number of
the first log generation it does not include; `log.<gen>` files hold summary lines written
after it. Opening reads the snapshot and replays newer logs: no run file is read, which is
what keeps re-opening a store of 100,000 runs well under a second.

The index is a cache of what the checkpoints say, so its lines are queued and written (and
synced) by the store's flusher, off the step's path: after a crash the log may lead a
checkpoint (a line for a save that never landed) or lag one (lines still queued). An open
after an unclean stop settles both: it re-checks the runs of the newest lines and every run
file written since shortly before the log's last write, correcting or dropping entries (a
tombstone `[run_id]` records a run that never landed). Compaction writes a new snapshot and
drops old logs; a crash half-way leaves old logs that the snapshot's generation number makes
harmless.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Callable, Dict, Iterable, List, Optional

from . import _fs
from ._durable import NOFOLLOW, atomic_write, open_dir_fd, write_all
from .base import RunSummary

log = logging.getLogger("abstractruntime.storage")

FIELDS = tuple(RunSummary.__dataclass_fields__)
# How many of the newest log lines are checked against their run files on open. Runs that
# were being saved at a crash are among them: a daemon saves at most a few dozen at once.
VERIFY_TAIL = 2048


def to_row(s: RunSummary) -> list:
    return [getattr(s, f) for f in FIELDS]


def from_row(row: list) -> RunSummary:
    return RunSummary(*row)


class IndexLog:
    def __init__(self, root: str, *, durable: bool) -> None:
        self.dir = os.path.join(root, "_index")
        os.makedirs(self.dir, exist_ok=True)
        self.durable = durable
        self.lock = threading.Lock()
        self._dir_fd = open_dir_fd(self.dir)
        self.gen = 0
        self.lines = 0
        self.fd: Optional[int] = None
        self._queued: List[list] = []

    def load(self) -> tuple[Dict[str, RunSummary], List[str], bool]:
        """Return (summaries, run ids of the newest lines, whether any index existed)."""
        rows: Dict[str, list] = {}
        snap_gen = 0
        snap = os.path.join(self.dir, "snapshot.json")
        found = False
        if os.path.exists(snap):
            found = True
            with open(snap, "rb") as f:
                data = json.loads(f.read())
            snap_gen = int(data["gen"])
            for row in data["rows"]:
                rows[row[0]] = row
        gens = sorted(int(n.split(".", 1)[1]) for n in os.listdir(self.dir) if n.startswith("log.") and n[4:].isdigit())
        recent: List[str] = []
        for g in gens:
            path = os.path.join(self.dir, f"log.{g}")
            if g < snap_gen:
                os.unlink(path)  # already folded into the snapshot
                continue
            found = True
            log_rows = _read_rows(path)
            self.lines += len(log_rows)
            for row in log_rows:
                if len(row) == 1:
                    rows.pop(row[0], None)  # a tombstone: that run's checkpoint never landed
                else:
                    rows[row[0]] = row  # the newest line of a run wins
            recent.extend(row[0] for row in log_rows[-VERIFY_TAIL:])
        # Summaries are built once per run, after the newest line of each is known.
        entries = {rid: from_row(row) for rid, row in rows.items()}
        self.gen = max([snap_gen] + gens)
        self._open_log()
        return entries, recent[-VERIFY_TAIL:], found

    def _open_log(self) -> None:
        path = os.path.join(self.dir, f"log.{self.gen}")
        fd = _fs.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o600)
        if self.fd is not None:
            os.close(self.fd)
        self.fd = fd
        if self.durable:
            try:
                _fs.fsync(self._dir_fd)
            except OSError as e:
                # Its name may not survive a power loss: the index is then rebuilt from the
                # run files, which are the truth.
                log.warning("index log %s: could not sync its folder (%s)", path, e)

    def append(self, summaries: Iterable[RunSummary], *, gone: Iterable[str] = ()) -> None:
        """Queue summaries, and tombstones (`[run_id]`) for runs that do not exist; `flush`
        writes them. Queued, not written: a write can stall behind writeback of the same
        file, and this sits on every status change's path. Lines lost to a crash are
        recovered by the unclean-open scan (every run file written since the log's last
        write is re-read)."""
        rows = [to_row(s) for s in summaries] + [[rid] for rid in gone]
        with self.lock:
            self._queued.extend(rows)
            self.lines += len(rows)

    def flush(self) -> None:
        """Write the queued lines. They leave the queue only once written: a failed write (a
        full disk) keeps them for the next try, and cuts off what it wrote of them, so the log
        never holds half a line followed by the next one."""
        with self.lock:
            if not self._queued or self.fd is None:  # nothing to write, or closed
                return
            rows = self._queued
            size = os.fstat(self.fd).st_size
            try:
                write_all(self.fd, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode())
            except OSError:
                try:
                    os.ftruncate(self.fd, size)
                except OSError:
                    pass  # a torn last line is skipped when the log is read
                raise
            del self._queued[: len(rows)]

    @property
    def unwritten(self) -> int:
        """Lines queued and not yet written."""
        return len(self._queued)

    def path(self) -> str:
        return os.path.join(self.dir, f"log.{self.gen}")

    def newest_write(self) -> Optional[float]:
        try:
            return os.stat(self.path()).st_mtime
        except FileNotFoundError:
            return None

    def sync_dir(self) -> None:
        _fs.fsync(self._dir_fd)

    def sync_dir_path(self) -> None:
        """`sync_dir` for after `close` (which closes the folder's descriptor)."""
        fd = open_dir_fd(self.dir)
        try:
            _fs.fsync(fd)
        finally:
            os.close(fd)

    def needs_compaction(self, live: int) -> bool:
        return self.lines > max(20000, 2 * live)

    def compact(self, rows_of: Callable[[], List[list]]) -> None:
        """Fold everything into a new snapshot; later lines go to a fresh log generation.

        A failure at any point leaves a readable index: the old generation's log is removed
        only after the snapshot that covers it is in place."""
        self.flush()
        with self.lock:
            self.gen += 1
            try:
                self._open_log()
            except OSError:
                self.gen -= 1
                raise
            self.lines = 0
            rows = rows_of()
        body = json.dumps({"gen": self.gen, "rows": rows}, separators=(",", ":")).encode()
        atomic_write(os.path.join(self.dir, "snapshot.json"), body, durable=True, dir_fd=self._dir_fd)
        for n in os.listdir(self.dir):
            if n.startswith("log.") and n[4:].isdigit() and int(n[4:]) < self.gen:
                os.unlink(os.path.join(self.dir, n))

    def close(self) -> bool:
        """Write what is queued and close; False when that failed (the lines are lost, and the
        caller leaves the store marked as not cleanly closed so the next open re-checks)."""
        clean = True
        try:
            self.flush()
        except OSError as e:
            clean = False
            log.warning("index log %s: %d line(s) could not be written (%s)", self.dir, len(self._queued), e)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        os.close(self._dir_fd)
        return clean


def _read_rows(path: str) -> List[list]:
    with open(path, "rb") as f:
        raw = f.read()
    if not raw:
        return []
    body, _, torn = raw.rpartition(b"\n")
    if torn:
        log.warning("index log %s ends in a torn line (%d bytes); ignoring it", path, len(torn))
    if not body:
        return []
    try:
        # One parse of the whole log as a JSON array is several times faster than a parse per line.
        return json.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except ValueError:
        rows = []
        for line in body.split(b"\n"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                log.warning("index log %s has an unreadable line; skipping it", path)
        return rows
