"""File stores: one `run_<run_id>.json` checkpoint and one `ledger_<run_id>.jsonl` per run.

Durable by default: every checkpoint is replaced atomically and fsync'd (temp file, fsync,
rename, fsync of the folder), and every ledger line is on disk before its step counts as
done. `durable=False` skips the fsyncs: a process crash still loses nothing (the page cache
survives it), a power loss may.

When both stores share a folder, a step commits like this:
  1. the step's ledger lines are chained and placed *inside* the new checkpoint
     (`_ledger_tail`, with every earlier line not yet known to be on disk),
  2. the checkpoint is written atomically (concurrent commits share a group commit),
  3. the lines are queued for the ledger file, which the flusher appends and syncs in a
     later batch; the next checkpoints keep carrying them until it has.
A crash after 2 leaves the checkpoint ahead of the ledger file; the ledger store completes the
file from `_ledger_tail` the next time it opens that run. So the checkpoint and the ledger move
together, and a step is never recorded twice nor half. Host effects' records (`append_many`)
are written and fsync'd at once, before the effect runs and before the run moves on.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.jsonutil import dumps
from ..core.models import RunState, StepRecord
from ._durable import (
    GroupCommitter,
    TempPool,
    atomic_write,
    check_run_id,
    exchange_works,
    open_dir_fd,
    shared_flusher,
    sync_path,
    write_all,
    write_temp,
)
from ._index import RunIndex
from ._index_log import FIELDS, IndexLog, to_row
from .base import LedgerListener, LedgerStore, RunListener, RunStore, RunSummary
from .ledger_chain import chain_records

log = logging.getLogger("abstractruntime.storage")

# A summary change that matters to listings; other fields (current_node while running,
# updated_at) are refreshed in memory only, so a plain step writes no index line.
_INDEXED = tuple(f for f in FIELDS if f not in ("updated_at", "current_node"))


class JsonFileRunStore(RunStore):
    def __init__(self, base_dir: Any, *, durable: bool = True) -> None:
        self.base_dir = os.path.abspath(str(base_dir))
        os.makedirs(self.base_dir, exist_ok=True)
        self.durable = durable
        self._dir_fd = open_dir_fd(self.base_dir)
        self._flusher = shared_flusher()
        self._pool = TempPool(os.path.join(self.base_dir, "_tmp")) if durable else None
        self._committer = GroupCommitter(self._pool, exchange=durable and exchange_works(self.base_dir))
        # The newest checkpoints as written: the next tick of a run reads back what this store
        # wrote moments ago, and one process owns the folder, so no file read is needed.
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._index = RunIndex()
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
        elif unclean:
            self._verify(recent + self._recently_written(self._log.newest_write()))
        # Present while the store is open: finding it at the next open means the last
        # process did not close cleanly, and index lines it wrote may not have reached disk.
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        self._log.sync_dir()

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
        return os.path.join(self.base_dir, f"run_{check_run_id(run_id)}.json")

    def save(self, run: RunState) -> None:
        self._publish(self._write(run, dumps(run.to_dict())))

    def _publish(self, s: RunSummary) -> None:
        self._index.put(s)
        if self._log.needs_compaction(len(self._index)):
            self._log.compact(lambda: [to_row(x) for x in self._index.summaries(limit=10**12)])

    def _write(self, run: RunState, text: str) -> RunSummary:
        """Write the checkpoint; the caller publishes the summary (index, listeners) once
        everything the commit writes is written, so listeners hear of records first."""
        path = self.path_for(run.run_id)
        s = RunSummary.from_state(run)
        old = self._index.get(run.run_id)
        changed = old is None or _key(old) != _key(s)
        if changed:
            # The index log is a cache of what the checkpoints say: queued here, written and
            # synced by the flusher. A crash can lose or reorder its newest lines; the
            # unclean-open scan re-reads every run file written since the log's last write.
            self._log.append([s])
            self._flusher.mark(self._log.path(), before_sync=self._log.flush)
        data = text.encode()
        with self._recent_lock:
            self._recent.pop(run.run_id, None)  # a failed write below must not leave a stale copy
        if self.durable:
            # Concurrent commits share their syncs (see GroupCommitter); a lone one does not wait.
            self._committer.replace(write_temp(path, data, self._pool), path, self._dir_fd, exists=old is not None)
        else:
            atomic_write(path, data, durable=False, dir_fd=self._dir_fd)
        with self._recent_lock:
            self._recent[run.run_id] = data
            if len(self._recent) > 4096:
                self._recent.popitem(last=False)
        return s

    def commit(self, run: RunState, records: List[StepRecord], ledger: LedgerStore) -> List[Dict[str, Any]]:
        if not isinstance(ledger, JsonlLedgerStore) or ledger.base_dir != self.base_dir:
            return super().commit(run, records, ledger)
        if not records:
            self.save(run)
            return []
        with ledger.run_lock(run.run_id):
            if self._index.get(run.run_id) is None:
                ledger.know_new(run.run_id)  # a run the index never saw has an empty ledger
            chained = ledger.prepare(run.run_id, records)
            d = run.to_dict()
            # Every ledger line not yet known to be on disk rides in the checkpoint: once the
            # checkpoint is renamed into place the step is durable, whatever the ledger file holds.
            d["_ledger_tail"] = ledger.unsynced_lines(run.run_id) + [line for _, line in chained]
            summary = self._write(run, dumps(d))
            ledger.write(run.run_id, chained, lazy=True)
        self._publish(summary)
        return [rec for rec, _ in chained]

    def load(self, run_id: str) -> Optional[RunState]:
        raw = self._recent.get(run_id)
        if raw is None:
            try:
                with open(self.path_for(run_id), "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                return None
        d = json.loads(raw)
        d.pop("_ledger_tail", None)
        return RunState.from_dict(d)

    def list_run_summaries(self, *, status=None, wait_reason=None, workflow_id=None, limit=100, after=None):
        return self._index.summaries(
            status=status, wait_reason=wait_reason, workflow_id=workflow_id, limit=limit, after=after
        )

    def count_by_status(self) -> Dict[str, int]:
        return self._index.counts()

    def find_waiting_on(self, wait_key: str) -> List[str]:
        return self._index.waiting_on(wait_key)

    def next_due_at(self) -> Optional[float]:
        return self._index.next_due_at()

    def claim_due_runs(self, *, now: float, owner: str, lease_s: float, limit: int) -> List[str]:
        return self._index.claim_due(now=now, owner=owner, lease_s=lease_s, limit=limit)

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        return self._index.try_lease(run_id, owner, lease_s)

    def release_lease(self, run_id: str, owner: str) -> None:
        self._index.release_lease(run_id, owner)

    def add_listener(self, listener: RunListener) -> None:
        self._index.add_listener(listener)

    def close(self) -> None:
        if self._dir_fd >= 0:
            self._flusher.flush()
            if self._pool is not None:
                self._pool.close()
            os.unlink(os.path.join(self._log.dir, "OPEN"))
            self._log.sync_dir()
            self._log.close()
            os.close(self._dir_fd)
            self._dir_fd = -1


def _key(s: RunSummary) -> tuple:
    return tuple(getattr(s, f) for f in _INDEXED)


class JsonlLedgerStore(LedgerStore):
    """`ledger_<run_id>.jsonl`: one canonical JSON record per line, hash-chained."""

    def __init__(self, base_dir: Any, *, durable: bool = True) -> None:
        self.base_dir = os.path.abspath(str(base_dir))
        os.makedirs(self.base_dir, exist_ok=True)
        self.durable = durable
        self._dir_fd = open_dir_fd(self.base_dir)
        self._heads: Dict[str, Tuple[int, Optional[str]]] = {}
        # Lines not yet known to be on disk, per run, as (seq, line): the next checkpoint of
        # that run carries them until the flusher reports them synced.
        self._unsynced: Dict[str, List[Tuple[int, str]]] = {}
        # Of those, the lines not even written to the file yet: the flusher appends them just
        # before its sync, so creating and appending to ledger files is off the step's path.
        self._queued: Dict[str, List[str]] = {}
        self._flusher = shared_flusher()
        self._guard = threading.Lock()
        self._run_locks: Dict[str, threading.RLock] = {}
        self._listeners: List[LedgerListener] = []

    def path_for(self, run_id: str) -> str:
        return os.path.join(self.base_dir, f"ledger_{check_run_id(run_id)}.jsonl")

    def run_lock(self, run_id: str) -> threading.RLock:
        with self._guard:
            lock = self._run_locks.get(run_id)
            if lock is None:
                lock = self._run_locks[run_id] = threading.RLock()
            return lock

    # -- opening a run's ledger: torn tail and catch-up from the checkpoint ----------------

    def know_new(self, run_id: str) -> None:
        """The run is brand new: its ledger is empty. One stat (an orphan file from a start cut
        short by a crash would still be read) instead of opening the ledger and re-reading the
        run file for a catch-up."""
        if run_id not in self._heads and not os.path.exists(self.path_for(run_id)):
            self._heads[run_id] = (0, None)

    def head(self, run_id: str) -> Tuple[int, Optional[str]]:
        h = self._heads.get(run_id)
        if h is None:
            with self.run_lock(run_id):
                h = self._heads.get(run_id) or self._open_head(run_id)
        return h

    def _open_head(self, run_id: str) -> Tuple[int, Optional[str]]:
        path = self.path_for(run_id)
        head: Tuple[int, Optional[str]] = (0, None)
        try:
            with open(path, "rb+") as f:
                raw = f.read()
                body_end = raw.rfind(b"\n") + 1
                if body_end < len(raw):
                    # A crash mid-append: cut the partial line, keep everything before it.
                    log.warning("ledger %s ends in a torn line (%d bytes); cutting it off", path, len(raw) - body_end)
                    f.truncate(body_end)
                    if self.durable:
                        os.fsync(f.fileno())
                    raw = raw[:body_end]
                if raw:
                    last = json.loads(raw[raw.rfind(b"\n", 0, len(raw) - 1) + 1 :])
                    head = (int(last["seq"]), last["record_hash"])
            if self.durable:
                sync_path(path)  # what a crashed process left in the page cache is now on disk
        except FileNotFoundError:
            pass
        head = self._catch_up(run_id, head)
        self._heads[run_id] = head
        return head

    def _catch_up(self, run_id: str, head: Tuple[int, Optional[str]]) -> Tuple[int, Optional[str]]:
        """Append lines a checkpoint carries that the ledger file lacks (a crash landed
        between the checkpoint's rename and the ledger append)."""
        try:
            with open(os.path.join(self.base_dir, f"run_{run_id}.json"), "rb") as f:
                tail = json.loads(f.read()).get("_ledger_tail") or []
        except (FileNotFoundError, ValueError):
            return head
        missing: List[Tuple[Dict[str, Any], str]] = []
        for line in tail:
            rec = json.loads(line)
            if rec["seq"] > head[0]:
                if rec["seq"] != head[0] + len(missing) + 1:
                    log.error("ledger %s: checkpoint tail does not continue the file; not repairing", run_id)
                    return head
                missing.append((rec, line))
        if missing:
            log.warning("ledger %s: restoring %d record(s) kept in its checkpoint", run_id, len(missing))
            self._append_raw(run_id, [line for _, line in missing], sync=self.durable)
            head = (missing[-1][0]["seq"], missing[-1][0]["record_hash"])
        return head

    # -- appends --------------------------------------------------------------------------

    def prepare(self, run_id: str, records: Iterable[StepRecord]) -> List[Tuple[Dict[str, Any], str]]:
        seq, prev = self.head(run_id)
        return chain_records(records, seq, prev)

    def unsynced_lines(self, run_id: str) -> List[str]:
        with self._guard:
            pending = self._unsynced.get(run_id)
            if not pending:
                return []
            if len(pending) <= 64:
                return [line for _, line in pending]
        # A long backlog would bloat every checkpoint: sync it now instead.
        sync_path(self.path_for(run_id))
        self._synced(run_id, pending[-1][0])
        return self.unsynced_lines(run_id)

    def _synced(self, run_id: str, seq: int) -> None:
        with self._guard:
            pending = self._unsynced.get(run_id)
            if pending:
                rest = [p for p in pending if p[0] > seq]
                if rest:
                    self._unsynced[run_id] = rest
                else:
                    del self._unsynced[run_id]

    def write(self, run_id: str, chained: List[Tuple[Dict[str, Any], str]], *, lazy: bool = False) -> None:
        """Append chained lines. `lazy`: they are already durable inside the run's checkpoint,
        so writing and syncing the ledger file is left to the flusher's next batch."""
        if not chained:
            return
        if lazy and self.durable:
            last = chained[-1][0]["seq"]
            with self._guard:
                pending = self._unsynced.setdefault(run_id, [])
                pending.extend((d["seq"], line) for d, line in chained)
                backlog = len(pending)
                self._queued.setdefault(run_id, []).extend(line for _, line in chained)
            self._flusher.mark(
                self.path_for(run_id),
                lambda: self._synced(run_id, last),
                before_sync=lambda: self._drain(run_id),
                urgent=backlog > 32,
            )
        else:
            with self.run_lock(run_id):
                self._drain(run_id)
                self._append_raw(run_id, [line for _, line in chained], sync=self.durable)
        self._heads[run_id] = (chained[-1][0]["seq"], chained[-1][0]["record_hash"])
        stored = [d for d, _ in chained]
        for fn in self._listeners:
            fn(run_id, stored)

    def _drain(self, run_id: str) -> None:
        """Write the run's queued lines to its file (no sync: the caller syncs or the lines
        are still carried by the checkpoint)."""
        with self.run_lock(run_id):
            with self._guard:
                lines = self._queued.pop(run_id, None)
            if lines:
                self._append_raw(run_id, lines, sync=False)

    def append_many(self, run_id: str, records: Iterable[StepRecord]) -> List[Dict[str, Any]]:
        with self.run_lock(run_id):
            chained = self.prepare(run_id, records)
            self.write(run_id, chained)
        return [d for d, _ in chained]

    def _append_raw(self, run_id: str, lines: List[str], *, sync: bool) -> None:
        # Opened per append rather than cached: a shared descriptor cache would let one
        # thread close a descriptor another is writing through. An open costs microseconds
        # next to the fsync that follows it.
        path = self.path_for(run_id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            created = False
        try:
            write_all(fd, "".join(line + "\n" for line in lines).encode())
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        if created and sync:
            os.fsync(self._dir_fd)  # the new file's name must survive a power loss too

    # -- reads ----------------------------------------------------------------------------

    def list(self, run_id: str) -> List[Dict[str, Any]]:
        self.head(run_id)  # settles a torn tail or a checkpoint catch-up first
        self._drain(run_id)
        try:
            with open(self.path_for(run_id), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def add_listener(self, listener: LedgerListener) -> None:
        self._listeners = self._listeners + [listener]

    def close(self) -> None:
        if self._dir_fd >= 0:
            self._flusher.flush()
            os.close(self._dir_fd)
            self._dir_fd = -1
