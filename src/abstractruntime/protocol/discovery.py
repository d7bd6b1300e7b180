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
import stat
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


class UnsafePathError(PermissionError):
    """A data folder, socket folder or token file another user owns or can write to. Using it
    would let them read the token, forge runs or intercept the daemon's clients."""


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_private(path: str, what: str, *, fix: str) -> None:
    """Refuse `path` (without following a final symlink) unless it belongs to this user and no
    one else can write to it, as OpenSSH and gpg-agent refuse their own files."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{what} {path} is a symbolic link; refusing to use it ({fix})")
    if st.st_uid != os.getuid():
        raise UnsafePathError(
            f"{what} {path} belongs to {_owner(st.st_uid)}, not to you ({_owner(os.getuid())}); refusing to "
            f"use it ({fix})"
        )
    if st.st_mode & 0o022:
        raise UnsafePathError(
            f"{what} {path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it "
            f"(chmod go-w {path}, or {fix})"
        )


def ensure_data_dir(path: str) -> None:
    """Create the data folder mode 0700, or check an existing one is this user's and private."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    check_private(path, "the data folder", fix="pass another --data folder")


def ensure_private_dir(path: str) -> None:
    """Create the default socket folder mode 0700, or check an existing one is ours (and make
    it private: it is ours alone)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    check_private(path, "the socket folder", fix="remove it, or set XDG_RUNTIME_DIR to a private folder")
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)


def check_socket_folder(socket_path: str) -> None:
    """Before a client connects to a socket it found (not one its user named): the folder
    holding it must be this user's, or another user could have put a daemon of theirs there."""
    folder = os.path.dirname(os.path.abspath(socket_path))
    if os.path.isdir(folder):
        check_private(folder, "the socket folder", fix="remove it; the daemon recreates it")
