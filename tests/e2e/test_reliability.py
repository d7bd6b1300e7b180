"""The daemon at its edges: stopped while editors stay connected, a burst of connections, a
client that sends what no client should, descriptor exhaustion and a full disk. Each test
asserts what an operator or a user would see."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from daemon_fixture import WORKFLOWS, daemon

from abstractruntime.client.connection import env_with_package


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
        headers = dict(line.split(b":", 1) for line in head.split(b"\r\n"))
        n = int(headers[b"Content-Length"])
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


# -- the wire ----------------------------------------------------------------------------------------


@pytest.fixture
def d(tmp_path):
    with daemon(tmp_path, "unix", workflows=WORKFLOWS, extra=["--log-level", "debug"]) as proc:
        yield proc


def test_deep_nesting_is_refused_with_an_answer_and_the_connection_lives(d):
    r = initialized(d.socket)
    deep = b"[" * 2000 + b'"x"' + b"]" * 2000  # deeper than Python's JSON recursion limit
    r.send(b'{"jsonrpc":"2.0","id":5,"method":"runtime/start","params":{"workflow_id":"ask","vars":{"v":' + deep + b"}}}")
    reply = r.recv()
    # Python's parser gives up on it (a parse error, id unknown), or parses it (3.13) and the
    # depth check refuses it (an invalid request, with its id).
    assert (reply["id"], reply["error"]["code"]) in ((None, -32700), (5, -32600)), reply
    assert "deeper than 64" in reply["error"]["message"]
    near = "x"
    for _ in range(100):  # parseable, but deeper than anything the daemon stores
        near = {"a": near}
    reply = r.call("runtime/start", {"workflow_id": "ask", "vars": {"v": near}}, 6)
    assert reply["id"] == 6 and reply["error"]["code"] == -32600 and "deeper than 64" in reply["error"]["message"]
    assert r.call("daemon/status", {}, 7)["result"]["pid"] > 0  # same connection, still served
    r.close()


def test_params_are_strict_and_ranged_and_bodies_utf8(d):
    r = initialized(d.socket)
    started = r.call("runtime/start", {"workflow_id": "ask"}, 1)["result"]
    e = r.call("runtime/ledger", {"run_id": started["run_id"], "limit": "10"}, 2)["error"]
    assert e["code"] == -32602 and "limit" in e["message"] and "integer" in e["message"].lower()
    e = r.call("runtime/ledger", {"run_id": started["run_id"], "after": 2**63}, 3)["error"]
    assert e["code"] == -32602 and "after" in e["message"]
    e = r.call("runtime/subscribe", {"after": 2**64}, 4)["error"]
    assert e["code"] == -32602
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "daemon/status", "params": {}}).encode("utf-16")
    r.send(body)
    reply = r.recv()
    assert reply["error"]["code"] == -32700 and "UTF-8" in reply["error"]["message"]
    assert "traceback" not in json.dumps(reply).lower()
    r.close()


def test_one_connection_holds_at_most_max_subscriptions(tmp_path):
    env_extra = {"ABSTRACTRUNTIME_MAX_SUBSCRIPTIONS": "3"}
    os.environ.update(env_extra)
    try:
        with daemon(tmp_path, "unix", workflows=WORKFLOWS) as proc:
            r = initialized(proc.socket)
            for i in range(3):
                assert "result" in r.call("runtime/subscribe", {}, 10 + i)
            e = r.call("runtime/subscribe", {}, 20)["error"]
            assert e["code"] == 1105 and e["data"]["name"] == "too_many_subscriptions" and "at most 3" in e["message"]
            other = initialized(proc.socket)  # another connection has its own allowance
            assert "result" in other.call("runtime/subscribe", {}, 1)
            r.close()
            other.close()
    finally:
        for k in env_extra:
            os.environ.pop(k, None)


def test_a_burst_of_connections_is_not_refused(d):
    socks, refused = [], 0
    try:
        for _ in range(500):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(d.socket)
            except BlockingIOError:
                pass  # queued
            except (ConnectionRefusedError, OSError):
                refused += 1
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    assert refused == 0
    with d.client() as c:
        assert c.status().pid == d.proc.pid


# -- ownership ---------------------------------------------------------------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder another user's (chown)")
NOBODY = 65534


def serve(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "abstractruntime", "serve", *args], cwd=tmp_path,
                          env=env_with_package(), capture_output=True, text=True, timeout=30)


@root_only
def test_a_data_folder_another_user_owns_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, NOBODY, NOBODY)
    p = serve(tmp_path, "--data", str(data), "--workflows", str(WORKFLOWS))
    assert p.returncode == 2
    assert f"the data folder {data} belongs to" in p.stderr and "uid 65534" in p.stderr
    assert "pass another --data folder" in p.stderr and "Traceback" not in p.stderr


def test_a_data_folder_writable_by_others_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    p = serve(tmp_path, "--data", str(data), "--workflows", str(WORKFLOWS))
    assert p.returncode == 2 and f"{data} is writable by others (mode 0777)" in p.stderr
    assert f"chmod go-w {data}" in p.stderr


@root_only
def test_clients_refuse_a_socket_folder_another_user_made(tmp_path):
    from abstractruntime.protocol import discovery

    proj = tmp_path / "proj"
    (proj / ".abstractruntime").mkdir(parents=True, mode=0o700)
    env = dict(env_with_package(), XDG_RUNTIME_DIR=str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    planted = tmp_path / "xdg" / "abstractruntime"
    planted.mkdir(mode=0o755)
    os.chown(planted, NOBODY, NOBODY)  # another user got there first
    os.environ["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")
    try:
        sock = discovery.default_socket(str(proj / ".abstractruntime"))
    finally:
        del os.environ["XDG_RUNTIME_DIR"]
    assert os.path.dirname(sock) == str(planted)
    p = subprocess.run([sys.executable, "-m", "abstractruntime", "runs"], cwd=proj, env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and f"the socket folder {planted} belongs to" in p.stderr
    s = subprocess.run([sys.executable, "-m", "abstractruntime", "serve"], cwd=proj, env=env, capture_output=True,
                       text=True, timeout=30)
    assert s.returncode == 2 and "belongs to" in s.stderr


def test_the_token_is_never_written_through_a_planted_link(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    target = tmp_path / "stolen"
    (data / "daemon.token.tmp").symlink_to(target)
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    proc = subprocess.Popen([sys.executable, "-m", "abstractruntime", "serve", "--data", str(data), "--workflows",
                             str(WORKFLOWS), "--tcp", f"127.0.0.1:{free}"], env=env_with_package(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (data / "daemon.token").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        assert not target.exists() and not (data / "daemon.token").is_symlink()
        assert (data / "daemon.token").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(30)


def test_socket_naming_a_regular_file_is_refused_and_its_folder_left_alone(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    victim = folder / "notes.txt"
    victim.write_text("keep me")
    p = serve(tmp_path, "--data", str(tmp_path / "data"), "--workflows", str(WORKFLOWS), "--socket", str(victim))
    assert p.returncode != 0 and "is not a socket; refusing to replace it" in p.stderr
    assert victim.read_text() == "keep me" and folder.stat().st_mode & 0o777 == 0o755


def test_code_lenses_never_block_on_a_fifo_or_read_a_device(d, tmp_path):
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    editor = Raw(d.socket)
    assert "result" in editor.call("initialize", {"capabilities": {"textDocument": {}}}, 0)
    editor.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    t0 = time.monotonic()
    for i, uri in enumerate([fifo.as_uri(), "file:///dev/zero", (WORKFLOWS / "flows.py").as_uri()]):
        editor.send({"jsonrpc": "2.0", "id": 100 + i, "method": "textDocument/codeLens",
                     "params": {"textDocument": {"uri": uri}}})
    replies = {}
    while len(replies) < 3:
        msg = editor.recv()
        if msg.get("id") in (100, 101, 102):
            replies[msg["id"]] = msg
    assert time.monotonic() - t0 < 3
    assert replies[100]["result"] == [] and replies[101]["result"] == []  # outside the folders: nothing read
    assert any("start" in lens["command"]["title"] for lens in replies[102]["result"])  # a real workflow file
    with d.client() as other:  # the event loop never stalled for anyone
        assert other.status().pid == d.proc.pid
    editor.close()
