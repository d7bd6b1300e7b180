"""The web listener without a browser (`serve --http`): what it serves, what it refuses, and its
WebSocket speaking the socket's protocol. The page itself is tested in a browser by test_web.py."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket

import pytest
from daemon_fixture import DaemonProcess, cli, free_port, start_web_daemon, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = start_web_daemon(tmp_path_factory.mktemp("webhttp"))
    yield d
    d.stop()


def get(d, path: str, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def link(d) -> str:
    r = cli(d.tmp, "ui", "--no-open", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    assert "signs one browser in, once" in r.stdout
    return r.stdout.splitlines()[0]


def signed_in(d) -> str:
    """The cookie a browser gets from a login link."""
    url = link(d)
    status, headers, _ = get(d, url.split(str(d.http_port), 1)[1])
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return cookie.split(";", 1)[0]


def ws(d, *, cookie=None, origin="self"):
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    if origin == "self":
        origin = f"http://127.0.0.1:{d.http_port}"
    if origin:
        headers["Origin"] = origin
    return connect(f"ws://127.0.0.1:{d.http_port}/rpc", additional_headers=headers)


def test_the_page_is_served_with_headers_that_keep_it_to_itself(d):
    status, headers, body = get(d, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert '<script src="app.js"></script>' in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"  # the login code never leaves in a Referer
    status, headers, body = get(d, "/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and len(body) > 10_000
    for path in ("/../pyproject.toml", "/nope.js", "/static/../../x.py", "/.hidden.js"):
        assert get(d, path)[0] == 404, path


def test_a_login_link_works_once_and_a_made_up_one_never(d):
    url = link(d)
    path = url.split(str(d.http_port), 1)[1]
    assert get(d, path)[0] == 303
    status, _, body = get(d, path)
    assert status == 403 and "run `abstractruntime ui` for a new one" in body
    assert get(d, "/login?code=guessed")[0] == 403
    assert get(d, "/login")[0] == 403


def test_a_name_that_is_not_loopback_is_refused(d):
    # DNS rebinding: a hostile name resolved to 127.0.0.1 reaches the port, with its own Host.
    status, _, body = get(d, "/", {"Host": f"rebind.example:{d.http_port}"})
    assert status == 403 and "loopback names only" in body
    assert get(d, "/", {"Host": f"localhost:{d.http_port}"})[0] == 200


def test_the_websocket_wants_the_cookie_and_the_pages_origin(d):
    cookie = signed_in(d)

    async def attempt(**kw) -> int:
        try:
            async with ws(d, **kw):
                return 101
        except InvalidStatus as e:
            return e.response.status_code

    async def main():
        assert await attempt() == 401
        assert await attempt(cookie=f"abstractruntime_{d.http_port}=wrong") == 401
        assert await attempt(cookie=cookie, origin="http://evil.example") == 403
        assert await attempt(cookie=cookie, origin=None) == 403
        assert await attempt(cookie=cookie) == 101

    asyncio.run(main())
    assert "refused a WebSocket from origin 'http://evil.example'" in d.log.read_text()


def test_the_websocket_speaks_the_sockets_protocol(d):
    cookie = signed_in(d)

    async def main():
        async with ws(d, cookie=cookie) as c:
            notes = []

            async def call(i, method, params):
                await c.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
                while True:
                    msg = json.loads(await asyncio.wait_for(c.recv(), 10))
                    if msg.get("id") == i:
                        return msg
                    notes.append(msg)

            early = await call(1, "runtime/runs", {})
            assert early["error"]["code"] == -32002  # before initialize, as on the socket
            init = await call(2, "initialize", {})  # no token: the handshake was the login
            assert init["result"]["serverInfo"]["name"] == "abstractruntime"
            sub = await call(3, "runtime/subscribe", {})
            started = await call(4, "runtime/start", {"workflow_id": "ask", "vars": {}})
            run_id = started["result"]["run_id"]
            assert started["result"]["state"]["status"] == "waiting"
            missing = await call(5, "runtime/state", {"run_id": "nope"})
            assert missing["error"]["data"]["name"] == "run_not_found"
            verified = await call(6, "runtime/verify", {"run_id": run_id})
            assert verified["result"]["ok"] is True and verified["result"]["count"] >= 2

            async def error_reply():
                while True:
                    msg = json.loads(await asyncio.wait_for(c.recv(), 10))
                    if "error" in msg:
                        return msg
                    notes.append(msg)

            await c.send("{not json")
            bad = await error_reply()
            assert bad["id"] is None and bad["error"]["code"] == -32700
            await c.send(b"\xff\xfe")  # a binary frame that is not UTF-8
            bad = await error_reply()
            assert bad["error"]["code"] == -32700 and "UTF-8" in bad["error"]["message"]

            # Live events come as notifications, one per frame (some came in while we waited).
            events = [n for n in notes if n.get("method") == "runtime/event" and n["params"]["run_id"] == run_id]
            while not any(e["params"]["kind"] == "state" for e in events):
                msg = json.loads(await asyncio.wait_for(c.recv(), 10))
                if msg.get("method") == "runtime/event" and msg["params"]["run_id"] == run_id:
                    events.append(msg)
            assert events[0]["params"]["subscription_id"] == sub["result"]["subscription_id"]
            assert (await call(7, "daemon/status", {}))["result"]["http"] == f"127.0.0.1:{d.http_port}"

    asyncio.run(main())


def test_serve_http_refuses_what_it_cannot_serve(tmp_path):
    def serve(*args):
        return cli(tmp_path, "serve", "--data", str(tmp_path / "data"), "--workflows", str(tmp_path), *args, timeout=30)

    r = serve("--http", "abc")
    assert r.returncode == 2 and "--http wants [HOST:]PORT" in r.stderr
    r = serve("--http", "0.0.0.0:0")
    assert r.returncode == 2 and "not a loopback address" in r.stderr and "--allow-remote" in r.stderr
    r = serve("--stdio", "--http", "0")
    assert r.returncode == 2 and "drop --stdio" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = serve("--socket", str(tmp_path / "d.sock"), "--http", f"127.0.0.1:{port}")
    assert r.returncode == 2 and f"cannot serve the web page on 127.0.0.1:{port}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "d.sock").exists()


def test_ui_names_the_flag_when_the_daemon_serves_no_page(tmp_path):
    d = DaemonProcess(tmp_path, "unix").start()
    try:
        r = cli(tmp_path, "ui", "--no-open", "--socket", d.socket)
        assert r.returncode != 0 and "serve --http PORT" in r.stderr, r.stderr
    finally:
        d.stop()


def test_the_project_config_can_serve_the_page(tmp_path):
    port = free_port()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "abstractruntime.toml").write_text(f'http = "127.0.0.1:{port}"\n')
    d = DaemonProcess(tmp_path, "unix").start()
    try:
        def status():
            r = cli(tmp_path, "status", "--socket", d.socket)
            return r.stdout if f"web page: http://127.0.0.1:{port}" in r.stdout else None

        wait_for(status, what="the page's address in `abstractruntime status`")
        d.http_port = port
        assert get(d, "/")[0] == 200
    finally:
        d.stop()


def test_verify_names_the_first_record_changed_on_disk(tmp_path):
    d = DaemonProcess(tmp_path, "unix").start()
    with d.client() as c:
        run_id = c.start("ask").run_id
        c.resume(run_id, {"text": "yes"})
        good = c.verify(run_id)
        assert good.ok and good.first_bad_seq is None and good.count >= 3
    d.stop()
    ledger = d.data / "runs" / f"ledger_{run_id}.jsonl"
    lines = ledger.read_text().splitlines()
    assert '"yes"' in lines[2], lines
    lines[2] = lines[2].replace('"yes"', '"no"')  # someone rewrites the answer
    ledger.write_text("\n".join(lines) + "\n")
    d.start()
    try:
        with d.client() as c:
            bad = c.verify(run_id)
        assert not bad.ok and bad.first_bad_seq == 3 and bad.count == good.count
        assert bad.problems[0] == "record 3: its hash does not match its content (changed after it was written)"
    finally:
        d.stop()
