"""Hot reload: watch the workflow folders and reload what changed.

watchfiles (inotify underneath) reports a batch of changes once the folder has been quiet for
`STEP_MS`; the batch triggers one rescan, which re-imports only the files whose source hash
changed. So an editor's save dance (a temp file, a rename, a backup) costs one reload, and a
change that isn't a workflow file (a `.pyc`, a swap file) costs none.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from .loader import is_python_file

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("abstractruntime.daemon")

# Quiet time that closes a batch of changes. Saves are single writes or a rename; 30 ms groups
# them and keeps save-to-serving latency low. DEBOUNCE_MS caps a batch under a stream of writes.
STEP_MS = 30
DEBOUNCE_MS = 1000
# How long a save that would remove workflows (a file left empty or cut short for a moment by
# an in-place write) must stand before it is applied.
GRACE_S = 1.0


def _is_workflow_change(_change: Any, path: str) -> bool:
    return is_python_file(path)  # a workflow module or a helper one imports


class Watcher:
    def __init__(self, hub: Hub, grace_s: float = GRACE_S) -> None:
        self.hub = hub
        self.grace_s = grace_s
        self._stop = threading.Event()  # watchfiles' worker thread polls it
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._retry is not None:
            self._retry.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        from watchfiles import awatch  # deferred: only a watching daemon pays for the import

        dirs = self.hub.catalog.existing_dirs()
        if not dirs:
            log.warning("no workflow folder exists; nothing to watch (workflows/reload still rescans)")
            return
        log.info("watching %s for workflow changes", ", ".join(dirs))
        try:
            async for _changes in awatch(
                *dirs,
                watch_filter=_is_workflow_change,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self._stop,
                recursive=False,
            ):
                await self._reload()
        except asyncio.CancelledError:
            raise
        except Exception:  # the watcher itself broke (a folder removed): reload on request only
            log.exception("watching the workflow folders stopped")

    async def _reload(self) -> None:
        try:
            # Its own thread, not the tick pool: busy nodes never delay a reload.
            report = await asyncio.to_thread(self.hub.reload_workflows, grace_s=self.grace_s)
        except Exception:  # isolation boundary: a failed reload never stops watching
            log.exception("workflow reload failed")
            return
        retry = report.get("retry_after")
        if retry is not None:  # a held-back save: look again once its grace period is over
            if self._retry is not None:
                self._retry.cancel()
            self._retry = asyncio.get_running_loop().call_later(
                retry + 0.01, lambda: asyncio.ensure_future(self._reload())
            )
