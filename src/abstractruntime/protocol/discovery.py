"""Where a project's daemon lives: its data folder, socket, token and discovery file.

The data folder defaults to `./.abstractruntime/` (the project is the working directory).
The unix socket cannot live there (socket paths are limited to ~107 bytes), so it goes in a
private folder, `$XDG_RUNTIME_DIR/abstractruntime/` or else `/tmp/abstractruntime-<uid>/`
(mode 0700), named after a hash of the data folder's absolute path: one per project, found
the same way by the daemon, the CLI and every client.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional

DEFAULT_DATA_DIR = ".abstractruntime"


def data_dir(path: Optional[str] = None) -> str:
    return os.path.abspath(path or os.environ.get("ABSTRACTRUNTIME_DATA") or DEFAULT_DATA_DIR)


def socket_dir() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "abstractruntime")
    return os.path.join("/tmp", f"abstractruntime-{os.getuid()}")


def default_socket(data: str) -> str:
    digest = hashlib.sha256(os.path.abspath(data).encode()).hexdigest()[:16]
    return os.path.join(socket_dir(), f"{digest}.sock")


def token_file(data: str) -> str:
    return os.path.join(data, "daemon.token")


def discovery_file(data: str) -> str:
    return os.path.join(data, "daemon.json")


def read_discovery(data: str) -> Optional[Dict[str, Any]]:
    try:
        with open(discovery_file(data)) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def ensure_private_dir(path: str) -> None:
    """Create `path` mode 0700, or check an existing one is ours and private."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user; refusing to put a socket there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
