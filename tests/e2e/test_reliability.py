"""The daemon at its edges: stopped while editors stay connected, a burst of connections, a
client that sends what no client should, descriptor exhaustion and a full disk. Each test
asserts what an operator or a user would see."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from daemon_fixture import WORKFLOWS, daemon


def _frame(obj) -> bytes:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Raw:
    """A hand-rolled client on the daemon's unix socket: exactly the bytes a test sends."""

    def __init__(self, path: str) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(20)
        self.s.connect(path)
        self.buf = b""

    def send(self, obj) -> None:
        self.s.sendall(_frame(obj))

    def recv(self) -> dict:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        n = int(head.split(b":")[1])
        while len(rest) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            rest += chunk
        self.buf = rest[n:]
        return json.loads(rest[:n])

    def call(self, method: str, params=None, msg_id: int = 1) -> dict:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params or {}})
        return self.recv()

    def close(self) -> None:
        self.s.close()


def initialized(path: str) -> Raw:
    r = Raw(path)
    assert "result" in r.call("initialize", {"capabilities": {}}, 0)
    return r


def test_sigterm_stops_the_daemon_while_clients_stay_connected(tmp_path):
    # Editors stay connected: a stop must not wait for them to leave (Python >= 3.12.1's
    # Server.wait_closed() waits for every connection).
    d = daemon(tmp_path, "unix", workflows=WORKFLOWS)
    with d as proc:
        idle = [initialized(proc.socket) for _ in range(3)]
        with proc.client() as c:
            run = c.start("ask").run_id
        t0 = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(15) == 0
        took = time.monotonic() - t0
        for r in idle:
            with pytest.raises((ConnectionError, OSError, socket.timeout)):
                r.recv()  # closed by the daemon, not left hanging
            r.close()
        assert took < 10, f"SIGTERM took {took:.1f} s"
    with daemon(tmp_path, "unix", workflows=WORKFLOWS) as proc, proc.client() as c2:
        assert c2.state(run).status == "waiting"  # nothing lost across the stop
