"""File stores: one `run_<run_id>.json` checkpoint and one `ledger_<run_id>.jsonl` per run.

Durable by default: a commit returns once its checkpoint and ledger lines are on disk. They
reach disk first as one entry of the folder's write-ahead journal (`_journal.py`), shared by
both stores of a folder and group-committed: one write and one fdatasync for every commit
that arrives together. The flusher then writes the run's newest checkpoint in place into its
`run_<id>.json`, appends its lines to `ledger_<id>.jsonl`, and syncs, usually within a quarter
of a second; reads in this process see a commit at once (from memory until its files are
written). Opening the folder replays whatever the files lack after a crash, so a crash at any
instant loses no acknowledged step and records none twice or half. `durable=False` skips the
syncs: a process crash still loses nothing (the page cache survives it), a power loss may.

One process owns a folder at a time (the daemon holds a lock on its data folder). Another
process reading the files meanwhile may find them a cycle behind, or a checkpoint mid-write.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.clock import Clock
from ..core.jsonutil import dumps, loads
from ..core.models import RunState, StepRecord
from . import _fs
from ._cache import DEFAULT_BYTES, BoundedCache
from ._durable import NOFOLLOW, check_run_id, shared_flusher
from ._files_writer import ledger_file, ledger_file_head, run_file
from ._index import IndexedRunStore, RunIndex
from ._index_log import FIELDS, IndexLog, to_row
from ._journal import Journal
from .base import LedgerListener, LedgerStore, RunSummary, StepIndex, StoredRecords
from .ledger_chain import chain_records

log = logging.getLogger("abstractruntime.storage")

_STRIPES = 256
_MAX_HEADS = 65536

# A summary change that matters to listings; other fields (current_node while running,
# updated_at) are refreshed in memory only, so a plain step writes no index line.
_INDEXED = tuple(f for f in FIELDS if f not in ("updated_at", "current_node"))


class JsonFileRunStore(IndexedRunStore):
    """`run_<run_id>.json` per run, with an index of summaries under `_index/`."""

    def __init__(
        self, base_dir: Any, *, durable: bool = True, clock: Optional[Clock] = None, cache_bytes: int = DEFAULT_BYTES
    ) -> None:
        self.base_dir = os.path.abspath(str(base_dir))
        os.makedirs(self.base_dir, exist_ok=True)
        self.durable = durable
        self._closed = False
        self._flusher = shared_flusher()
        # Opened first: a replay after a crash brings the journal's entries back (pending,
        # served from memory) before the index below is checked against the runs.
        self.unit = FileBackend.open(self.base_dir, durable=durable)
        self._journal = self.unit.journal
        self._recent: BoundedCache[bytes]
        self._index: RunIndex
        self._log: IndexLog
        with self.unit.open_lock:
            side = self.unit.run_side
            if side is not None:
                # Another run store is open on this folder in this process: this one is a
                # second view of the same runs (one index, one index log, one cache).
                side.users += 1
                self._side = side
                self._index, self._log, self._recent = side.index, side.log, side.recent
                return
            self._open(clock, cache_bytes)
            self._side = self.unit.run_side = _RunSide(self._index, self._log, self._recent)

    def _open(self, clock: Optional[Clock], cache_bytes: int) -> None:
        durable = self.durable
        # The newest checkpoints as written: the next tick of a run reads back what this store
        # wrote moments ago, and one process owns the folder, so no file read is needed.
        self._recent = BoundedCache(cache_bytes)
        self._index = RunIndex(clock=clock)
        self._log = IndexLog(self.base_dir, durable=durable)
        # Loading builds one object per run and no cycles: pausing the cyclic GC meanwhile
        # saves the repeated full-heap scans that otherwise cost more than the load itself.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            entries, recent, found = self._log.load()
            self._index.bulk_load(list(entries.values()))
        finally:
            if gc_was_on:
                gc.enable()
        marker = os.path.join(self._log.dir, "OPEN")
        unclean = os.path.exists(marker)
        if not found:
            self._rebuild_from_files()
        elif unclean or self._journal.replayed:
            replayed = sorted(self._journal.replayed)
            self._verify(recent + self._recently_written(self._log.newest_write()) + replayed)
        # Present while the store is open: finding it at the next open means the last
        # process did not close cleanly, and index lines it wrote may not have reached disk.
        # Empty, so creating it needs no room on a full disk (only an inode). Without it (it
        # cannot be made) a crash is still caught: every commit the index log may lack is in
        # the journal, whose replay re-checks its runs.
        if not unclean:
            try:
                os.close(_fs.open(marker, os.O_WRONLY | os.O_CREAT | NOFOLLOW, 0o600))
                self._log.sync_dir()
            except OSError as e:
                log.warning("could not mark %s open (%s)", self.base_dir, e)

    # -- index upkeep ---------------------------------------------------------------------

    def _rebuild_from_files(self) -> None:
        """A folder without an index (new, or written by another tool): index its run files."""
        fixed = []
        for name in os.listdir(self.base_dir):
            if name.startswith("run_") and name.endswith(".json"):
                run = self.load(name[4:-5])
                if run is not None:
                    s = RunSummary.from_state(run)
                    self._index.put(s, notify=False)
                    fixed.append(s)
        if fixed:
            self._log.append(fixed)

    def _recently_written(self, since: Optional[float]) -> List[str]:
        """Run files written since shortly before the index log's last write: after a power
        loss, the index lines of these may be missing even though their checkpoints landed."""
        threshold = (since or 0.0) - 60.0
        out = []
        with os.scandir(self.base_dir) as it:
            for e in it:
                if e.name.startswith("run_") and e.name.endswith(".json"):
                    try:
                        if e.stat().st_mtime >= threshold:
                            out.append(e.name[4:-5])
                    except FileNotFoundError:
                        pass
        return out

    def _verify(self, run_ids: List[str]) -> None:
        fixed, gone = [], []
        for rid in dict.fromkeys(reversed(run_ids)):
            try:
                run = self.load(rid)
            except (ValueError, OSError):
                run = None
            s = self._index.get(rid)
            if run is None:
                if s is not None:
                    # Its index line was written for a checkpoint that never landed (a
                    # start cut short by the crash): the run does not exist.
                    self._index.remove(rid)
                    gone.append(rid)
                continue
            real = RunSummary.from_state(run)
            if s is None or _key(s) != _key(real):
                self._index.put(real, notify=False)
                fixed.append(real)
        if fixed or gone:
            log.info(
                "index: %d run(s) were mid-save at the last stop; corrected from their files", len(fixed) + len(gone)
            )
            self._log.append(fixed, gone=gone)

    # -- RunStore -------------------------------------------------------------------------

    def path_for(self, run_id: str) -> str:
        return run_file(self.base_dir, run_id)

    def save(self, run: RunState) -> None:
        self._publish(self._write(run))

    def _publish(self, s: RunSummary) -> None:
        self._index.put(s)
        if self._log.needs_compaction(len(self._index)):
            try:
                self._log.compact(lambda: [to_row(x) for x in self._index.summaries(limit=None)])
            except OSError as e:  # the commit is done: compaction waits for the next chance
                log.warning("index: compaction failed (%s); the log keeps growing until it works", e)

    def _write(self, run: RunState) -> RunSummary:
        """Commit a checkpoint alone (no ledger lines) to the journal; the caller publishes
        the summary (index, listeners)."""
        s, lsn, data = self._encode(run)
        self._recent.pop(run.run_id)  # a failed commit below must not leave a stale copy
        self._journal.commit(run.run_id, lsn, data, [])
        self._written(run.run_id, s, data)
        return s

    def _encode(self, run: RunState) -> Tuple[RunSummary, int, bytes]:
        check_run_id(run.run_id)
        s = RunSummary.from_state(run)
        d = run.to_dict()
        d["_lsn"] = lsn = self._journal.next_lsn()
        return s, lsn, dumps(d).encode()  # TypeError/ValueError: nothing written

    def _written(self, run_id: str, s: RunSummary, data: bytes) -> None:
        old = self._index.get(run_id)
        if old is None or _key(old) != _key(s):
            # The index log is a cache of what the checkpoints say: queued once the commit is
            # durable (never for one that failed), written and synced by the flusher. A crash
            # can lose or reorder its newest lines; the unclean-open check re-reads the runs
            # written around the log's last write.
            self._log.append([s])
            self._flusher.mark(self._log.path(), before_sync=self._log.flush)
        self._recent.put(run_id, data)

    def commit(self, run: RunState, records: List[StepRecord]) -> List[Dict[str, Any]]:
        """A step's checkpoint and its ledger lines as one journal entry: they land together."""
        if not records:
            self.save(run)
            return []
        out = self.commit_many([(run, records)])[0]
        if isinstance(out, Exception):  # it could not be encoded: nothing was written
            raise out
        return out

    def commit_many(self, items: List[Tuple[RunState, List[StepRecord]]]) -> List[Any]:
        """Several runs' steps (one each) as one journal write and one sync. Per item: the
        records as stored, or the TypeError/ValueError that kept that run out (nothing of it
        written). A storage failure raises, and none is committed."""
        unit = self.unit
        out: List[Any] = [None] * len(items)
        done: List[Tuple[int, RunState, list, RunSummary, bytes]] = []
        with contextlib.ExitStack() as held:
            for lock in unit.run_locks([run.run_id for run, _ in items]):
                held.enter_context(lock)
            entries = []
            for i, (run, records) in enumerate(items):
                try:
                    if self._index.get(run.run_id) is None:
                        unit.know_new(run.run_id)
                    chained = unit.chain(run.run_id, records) if records else []
                    s, lsn, data = self._encode(run)
                except (TypeError, ValueError) as e:
                    out[i] = e
                    continue
                self._recent.pop(run.run_id)
                entries.append((run.run_id, lsn, data, [(d["seq"], line) for d, line in chained]))
                done.append((i, run, chained, s, data))
            self._journal.commit_many(entries)
            for i, run, chained, s, data in done:
                self._written(run.run_id, s, data)
                out[i] = unit.written(run.run_id, chained)
        for _, _, _, s, _ in done:
            self._publish(s)
        return out

    def load(self, run_id: str) -> Optional[RunState]:
        raw = self._recent.get(run_id) or self._journal.checkpoint(run_id)
        if raw is None:
            try:
                with open(self.path_for(run_id), "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                return None
        d = loads(raw)
        d.pop("_lsn", None)
        d.pop("_ledger_tail", None)  # written by versions before the journal
        return RunState.from_dict(d)

    def flush(self) -> None:
        """Write every committed checkpoint and ledger line to its file now, and sync."""
        self._flusher.flush()

    def close(self) -> None:
        """Write and sync everything and mark the folder cleanly closed. Never fails: what
        cannot be written now (a full disk) stays in the journal, and the folder stays marked
        as not cleanly closed so the next open replays and re-checks it."""
        if self._closed:
            return
        self._closed = True
        with self.unit.open_lock:
            self._side.users -= 1
            last = self._side.users == 0
            if last:
                self.unit.run_side = None
        journal_ok = self.unit.release()  # the last store of the folder to close writes and syncs all
        if not last:
            return  # another run store on this folder still uses the index
        try:
            self._flusher.flush()
        except OSError:
            pass  # whatever failed is ours or not: the index log's own close tells
        index_ok = self._log.close()
        self._flusher.forget(self._log.path())
        if journal_ok and index_ok:
            try:
                _fs.unlink(os.path.join(self._log.dir, "OPEN"))
                self._log.sync_dir_path()
            except OSError as e:
                log.warning("could not mark %s cleanly closed (%s); the next open re-checks it", self.base_dir, e)


class _RunSide:
    """What every run store open on one folder in this process shares."""

    def __init__(self, index: RunIndex, log: IndexLog, recent: BoundedCache[bytes]) -> None:
        self.index, self.log, self.recent = index, log, recent
        self.users = 1


def _key(s: RunSummary) -> tuple:
    return tuple(getattr(s, f) for f in _INDEXED)


class FileBackend:
    """One folder's journal and the ledger side of its two stores: heads, listeners, the step
    index. One per folder and process (`open`), shared by the run store and the ledger store
    opened on it, which are therefore one unit: the run store's commit writes the records."""

    _registry: Dict[str, FileBackend] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def open(cls, folder: str, *, durable: bool) -> FileBackend:
        key = os.path.realpath(folder)
        with cls._registry_lock:
            b = cls._registry.get(key)
            if b is None:
                b = cls._registry[key] = FileBackend(key, durable=durable)
            elif durable and not b.journal.durable:
                b.journal.make_durable()  # one durable store on a folder makes its journal durable
            b._users += 1
            return b

    def release(self) -> bool:
        """A store on this folder closed; the last one closes the journal (False: it could not
        write everything, which stays in the journal for the next start)."""
        with self._registry_lock:
            self._users -= 1
            if self._users > 0:
                return True
            self._registry.pop(self.dir, None)
        return self.journal.close()

    def __init__(self, folder: str, *, durable: bool) -> None:
        self.dir = folder
        self._users = 0
        self.journal = Journal(folder, durable=durable)
        # A cache: a miss reads the file's last line and the journal (bounded, see _remember_head).
        self._heads: Dict[str, Tuple[int, Optional[str]]] = {}
        # Striped: a lock per run would grow with every run ever seen.
        self._locks = [threading.RLock() for _ in range(_STRIPES)]
        self.listeners: List[LedgerListener] = []
        self.steps = StepIndex()
        self.open_lock = threading.Lock()
        self.run_side: Optional[_RunSide] = None  # set by the first run store opened on the folder

    def run_lock(self, run_id: str) -> Any:
        return self._locks[hash(run_id) % _STRIPES]

    def run_locks(self, run_ids: Iterable[str]) -> List[Any]:
        """The locks of several runs, each once, in one order for every caller (no deadlock
        between two threads taking several)."""
        return [self._locks[i] for i in sorted({hash(r) % _STRIPES for r in run_ids})]

    def _remember_head(self, run_id: str, head: Tuple[int, Optional[str]]) -> None:
        if len(self._heads) >= _MAX_HEADS and run_id not in self._heads:
            self._heads.clear()  # forgetting costs a read of the run's last line, next time
        self._heads[run_id] = head

    def know_new(self, run_id: str) -> None:
        """The run store has never seen this run: its ledger is empty. Saves a lookup in the
        folder, which waits behind the flusher's file creates there. (A ledger file the index
        does not account for cannot be extended by mistake: the journal appends only lines
        that continue a file.)"""
        if run_id not in self._heads:
            self._remember_head(run_id, (0, None))

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        h = self._heads.get(run_id)
        if h is None:
            with self.run_lock(run_id):
                h = self._heads.get(run_id)
                if h is None:
                    # Not written by this process: the file, but for a torn last line (cut
                    # here), and after it whatever the journal still holds for it (replayed at
                    # open, not yet written to the file).
                    h = ledger_file_head(ledger_file(self.dir, run_id), durable=self.journal.durable)
                    pending = self.journal.lines(run_id)
                    if pending and pending[-1][0] > h[0]:
                        h = (pending[-1][0], json.loads(pending[-1][1])["record_hash"])
                    self._remember_head(run_id, h)
        return h

    def chain(self, run_id: str, records: Iterable[StepRecord]) -> List[Tuple[Dict[str, Any], str]]:
        seq, prev = self.head(run_id)
        return chain_records(records, seq, prev)

    def written(self, run_id: str, chained: List[Tuple[Dict[str, Any], str]]) -> List[Dict[str, Any]]:
        """The chained lines are committed: move the head, note the steps, tell the listeners."""
        if not chained:
            return []
        self._remember_head(run_id, (chained[-1][0]["seq"], chained[-1][0]["record_hash"]))
        self.steps.add(run_id, (d for d, _ in chained))
        stored = StoredRecords.of(chained)
        for fn in self.listeners:
            fn(run_id, stored)
        return stored

    def append(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        with self.run_lock(run_id):
            chained = self.chain(run_id, records)
            if not chained:
                return []
            self.journal.commit(run_id, self.journal.next_lsn(), None, [(d["seq"], line) for d, line in chained])
            return self.written(run_id, chained)

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        self.head(run_id)  # settles a torn tail first
        pending = self.journal.lines(run_id)  # before the file: see Journal.lines
        try:
            with open(ledger_file(self.dir, run_id), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = b""
        out = [loads(line) for line in raw.splitlines() if line.strip()]
        last = out[-1]["seq"] if out else 0
        out.extend(loads(line) for seq, line in pending if seq > last)
        return out


class JsonlLedgerStore(LedgerStore):
    """`ledger_<run_id>.jsonl`: one canonical JSON record per line, hash-chained."""

    def __init__(self, base_dir: Any, *, durable: bool = True) -> None:
        self.base_dir = os.path.abspath(str(base_dir))
        os.makedirs(self.base_dir, exist_ok=True)
        self.durable = durable
        self._closed = False
        self.unit = FileBackend.open(self.base_dir, durable=durable)

    def path_for(self, run_id: str) -> str:
        return ledger_file(self.base_dir, run_id)

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        return self.unit.head(run_id)

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        return self.unit.append(run_id, records)

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        return self.unit.list(run_id)

    def find_step(self, run_id: str, step: int) -> Optional[Dict[str, Any]]:
        return self.unit.steps.step(run_id, step, lambda: self.unit.list(run_id))

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[Dict[str, Any]]:
        return self.unit.steps.completed(run_id, idempotency_key, lambda: self.unit.list(run_id))

    def add_listener(self, listener: LedgerListener) -> None:
        self.unit.listeners = self.unit.listeners + [listener]

    def flush(self) -> None:
        """Write every committed ledger line to its file now, and sync."""
        self.unit.journal.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.unit.release()
