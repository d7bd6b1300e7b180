"""Running the real daemon in a subprocess, on a real transport, for the e2e tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from abstractruntime.client import Client
from abstractruntime.client.aio import AsyncClient, Target
from abstractruntime.client.connection import env_with_package
from conftest import ROOT

WORKFLOWS = Path(__file__).with_name("workflows")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonProcess:
    def __init__(self, tmp: Path, transport: str, extra: Optional[List[str]] = None, workflows: Optional[Path] = None) -> None:
        self.tmp = tmp
        self.transport = transport
        self.data = tmp / "data"
        self.socket = str(tmp / "d.sock")
        self.port = free_port()
        self.extra = extra or []
        self.workflows = workflows or WORKFLOWS
        self.proc: Optional[subprocess.Popen] = None
        self.log = tmp / f"daemon-{transport}.log"

    def argv(self) -> List[str]:
        argv = [sys.executable, "-m", "abstractruntime", "serve", "--data", str(self.data), "--workflows", str(self.workflows)]
        if self.transport == "stdio":
            return argv + ["--stdio", *self.extra]
        if self.transport == "tcp":
            return argv + ["--tcp", f"127.0.0.1:{self.port}", *self.extra]
        return argv + ["--socket", self.socket, *self.extra]

    def start(self) -> DaemonProcess:
        if self.transport == "stdio":
            return self  # each client spawns its own
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), env=env_with_package(), stdout=subprocess.DEVNULL,
                                         stderr=log, cwd=self.tmp)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log.read_text()[-2000:]}")
            if self._ready():
                return self
            time.sleep(0.02)
        raise RuntimeError("daemon did not come up")

    def _ready(self) -> bool:
        if self.transport == "unix":
            # Connect, not just look: a killed daemon leaves its socket file behind.
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.socket)
                return True
            except OSError:
                return False
            finally:
                probe.close()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return (self.data / "daemon.token").exists()
        except OSError:
            return False

    @property
    def token(self) -> Optional[str]:
        p = self.data / "daemon.token"
        return p.read_text().strip() if p.exists() else None

    def target(self) -> Target:
        if self.transport == "unix":
            return Target("unix", path=self.socket)
        if self.transport == "tcp":
            return Target("tcp", host="127.0.0.1", port=self.port, token=self.token)
        return Target("spawn", argv=self.argv(), env=env_with_package(), cwd=str(self.tmp))

    def client(self) -> Client:
        return Client(AsyncClient(self.target())).connect()

    def aclient(self) -> AsyncClient:
        return AsyncClient(self.target())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_web_daemon(tmp: Path, workflows: Optional[Path] = None, *extra: str) -> DaemonProcess:
    """A daemon on a unix socket that also serves the web page (`--http`) on a free port, once
    that listens: `d.http_port`, `d.base` (its URL), `d.wf` (its workflow folder)."""
    port = free_port()
    d = DaemonProcess(tmp, "unix", workflows=workflows, extra=["--http", f"127.0.0.1:{port}", *extra]).start()
    d.http_port, d.base, d.wf = port, f"http://127.0.0.1:{port}", d.workflows

    def announced() -> bool:  # the discovery file names the listener once it listens
        found = d.data / "daemon.json"
        return found.exists() and "http" in json.loads(found.read_text())

    wait_for(announced, what="the web listener")
    return d


def cli(cwd, *args, stdin=None, timeout=60):
    """`abstractruntime ARGS` in a subprocess, with this package importable: the result."""
    return subprocess.run([sys.executable, "-m", "abstractruntime", *args], cwd=cwd, env=env_with_package(),
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout=30.0, what="a condition"):
    """`predicate()`'s first truthy value, polled every 20 ms: a wait on a condition, never a
    fixed sleep; an AssertionError naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def daemon(tmp: Path, transport: str, **kw) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp, transport, **kw).start()
    try:
        yield d
    finally:
        d.stop()


__all__ = ["ROOT", "DaemonProcess", "daemon", "free_port", "start_web_daemon", "wait_for"]
