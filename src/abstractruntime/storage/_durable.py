"""Small file primitives with the fsync discipline the file stores rely on."""

from __future__ import annotations

import os
import re
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
        raise InvalidRunIdError(f"invalid run id {run_id!r}: use letters, digits and _.:- (max 200)", run_id=str(run_id)[:200])
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
