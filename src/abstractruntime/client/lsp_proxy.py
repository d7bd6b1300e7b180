"""`abstractruntime lsp`: what an editor runs. Joins its stdio to the project's daemon.

The daemon is found the way every client finds it: the project root (walking up from the working
folder, see `project.py`), then its data folder's discovery file, else the default per-project
socket. If none answers, one is started in the background first: its
own session, stdin closed, its log in `DATA/daemon.log`. It outlives the editor on purpose,
so the editor, scripts and other hosts all see the same runs. Two editors starting at once
race safely: the data folder's lock lets one daemon win, and the other proxy waits for it.

The proxy copies bytes both ways and parses nothing: LSP framing passes through untouched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional

from .. import project
from ..protocol import discovery as paths

START_TIMEOUT_S = 30.0


class DaemonUnavailable(RuntimeError):
    pass


def _connect(path: str) -> Optional[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


def _socket_path(data: str, explicit: Optional[str]) -> str:
    if explicit:
        return explicit
    info = paths.read_discovery(data) or {}
    if info.get("tcp") and not info.get("socket"):
        raise DaemonUnavailable(
            f"the daemon of {data} listens on TCP ({info['tcp']}); `abstractruntime lsp` joins a unix socket daemon"
        )
    return info.get("socket") or paths.default_socket(data)


def ensure_daemon(
    data: str, serve_args: List[str], socket_path: Optional[str] = None, cwd: Optional[str] = None
) -> socket.socket:
    """A connection to the project's daemon, starting the daemon first if none answers.

    The daemon is started as `abstractruntime serve` in the project root (`cwd`) with
    `serve_args`: it reads the same project config as the proxy, so an editor's daemon serves
    what `abstractruntime serve` in that folder would (the same workflows, store and model)."""
    if os.path.isdir(data):
        paths.check_private(data, "the data folder", fix="pass another --data folder")
    path = _socket_path(data, socket_path)
    if not socket_path:
        paths.check_socket_folder(path)
    conn = _connect(path)
    if conn is not None:
        return conn
    paths.ensure_data_dir(data)
    argv = [sys.executable, "-m", "abstractruntime", "serve", "--data", data, *serve_args]
    if socket_path:
        argv += ["--socket", socket_path]
    log_path = os.path.join(data, "daemon.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, cwd=cwd
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        path = _socket_path(data, socket_path)
        conn = _connect(path)
        if conn is not None:
            return conn
        if proc.poll() is not None and proc.returncode != 0:
            with open(log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            if "in use by another daemon" not in tail:
                raise DaemonUnavailable(f"the daemon did not start (exit {proc.returncode}); {log_path}:\n{tail}")
            # Another editor's proxy started it a moment before us: wait for its socket.
        time.sleep(0.02)
    raise DaemonUnavailable(f"no daemon answered at {path} within {START_TIMEOUT_S:.0f} s (log: {log_path})")


def relay(conn: socket.socket, fd_in: int = 0, fd_out: int = 1) -> int:
    """Copy stdin to the daemon and the daemon to stdout until the daemon closes."""

    def upstream() -> None:
        try:
            while True:
                chunk = os.read(fd_in, 1 << 16)
                if not chunk:
                    break
                conn.sendall(chunk)
        except OSError:
            pass
        try:
            conn.shutdown(socket.SHUT_WR)  # the editor is gone: the daemon ends this session
        except OSError:
            pass

    threading.Thread(target=upstream, name="lsp-upstream", daemon=True).start()
    try:
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                return 0
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd_out, view) :]
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        conn.close()


def run(args) -> int:
    try:
        proj = project.load(config=args.config, flags=project.flags_from_args(args))
    except project.ConfigError as e:
        print(f"abstractruntime lsp: {e}", file=sys.stderr)
        return 2
    # Only what was given here is passed on: the daemon resolves the rest from the same config.
    serve_args: List[str] = []
    if args.config:
        serve_args += ["--config", os.path.abspath(args.config)]
    for w in args.workflows or []:
        serve_args += ["--workflows", os.path.abspath(w)]
    if args.store:
        serve_args += ["--store", args.store]
    try:
        conn = ensure_daemon(proj.data_dir, serve_args, args.socket, cwd=proj.root)
    except (DaemonUnavailable, OSError) as e:  # UnsafePathError included
        print(f"abstractruntime lsp: {e}", file=sys.stderr)
        return 1
    return relay(conn)
