"""`serve --http [HOST:]PORT`: the web page, and a WebSocket that speaks the socket's protocol.

One listener serves three things, through the `websockets` library (HTTP requests and the
WebSocket handshake both come in through its `process_request` hook):

- the page's static files (`abstractruntime/web/static/`, built from TypeScript and shipped in
  the package): they hold no data, so they are served to anyone who may reach the port;
- `/login?code=...`: a one-time code (minted by `daemon/webLink`, which `abstractruntime ui`
  asks for over the socket) is traded for an HttpOnly cookie holding the daemon's token;
- `/rpc`: the WebSocket. The handshake needs that cookie, an `Origin` equal to the page's own
  origin, and (unless `--allow-remote`) a loopback `Host`, which defeats DNS rebinding. Every
  frame is one JSON-RPC message, handed to a `Session` like a socket's frames: the same
  methods, notifications and errors, and no second set of endpoints.

A WebSocket connection's `Session` is authorized by the handshake, so it does not ask for the
token again in `initialize`.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..protocol.framing import FrameParser
from .framing import dispatch
from .session import MAX_UNREAD

if TYPE_CHECKING:
    from .server import Daemon

log = logging.getLogger("abstractruntime.daemon")

STATIC = os.path.join(os.path.dirname(os.path.dirname(__file__)), "web", "static")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
LINK_TTL_S = 120.0  # how long a one-time login link stays good
WS_PATH = "/rpc"

# Sent with every response: the page loads only its own files and talks only to its own
# origin; no other site may frame it (its buttons answer runs) or learn the login URL.
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


def _is_loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebServer:
    def __init__(self, daemon: Daemon, host: str, port: int, *, token: str, allow_remote: bool = False) -> None:
        self.daemon = daemon
        self.host, self.port = host, port
        self.token = token
        self.allow_remote = allow_remote
        self.cookie = f"abstractruntime_{port}"  # cookies ignore ports: one name per daemon's port
        self._codes: Dict[str, float] = {}  # one-time code -> expiry (monotonic)
        self._lock = threading.Lock()
        self._server: Optional[Server] = None
        self._files: Dict[str, Tuple[bytes, str]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        self._server = await serve(
            self._connection,
            self.host,
            self.port,
            process_request=self._http,
            max_size=self.daemon.max_frame,
            # A message is read and answered at once; compression would cost the daemon CPU on
            # every event for a connection that is, by default, on this machine.
            compression=None,
            server_header=None,
            # A browser tab asleep on a phone answers no pings: let the socket's own errors end it.
            ping_interval=None,
        )
        sock = next(iter(self._server.sockets))
        bound = sock.getsockname()
        self.port = bound[1]
        self.cookie = f"abstractruntime_{self.port}"
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.address = f"{shown}:{self.port}"
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=False)  # sessions close in Daemon._finish

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    def base_url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            # Every address (--allow-remote): the link is for a browser elsewhere, by this
            # machine's name.
            host = socket.getfqdn()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def mint(self) -> Dict[str, Any]:
        """A one-time login URL (for `daemon/webLink`): whoever opens it first gets the cookie."""
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._codes = {c: t for c, t in self._codes.items() if t > now}
            self._codes[code] = now + LINK_TTL_S
        return {"url": f"{self.base_url()}/login?code={code}", "expires_in_s": LINK_TTL_S}

    def _redeem(self, code: str) -> bool:
        with self._lock:
            expiry = self._codes.pop(code, None)
        return expiry is not None and expiry > time.monotonic()

    # -- HTTP -----------------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Optional[Response]:
        url = urlsplit(request.path)
        host = _host_name(request.headers.get("Host", ""))
        if not self.allow_remote and not _is_loopback_name(host):
            # A name that resolves here but is not a loopback name: DNS rebinding, or a proxy.
            return _text(http.HTTPStatus.FORBIDDEN, f"this daemon serves loopback names only, not {host!r}")
        if url.path == WS_PATH:
            return self._check_ws(request)
        if url.path == "/login":
            code = (parse_qs(url.query).get("code") or [""])[0]
            if not self._redeem(code):
                return _text(
                    http.HTTPStatus.FORBIDDEN,
                    "this login link was used already or has expired: run `abstractruntime ui` for a new one",
                )
            cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            return _response(http.HTTPStatus.SEE_OTHER, b"", [("Location", "/"), ("Set-Cookie", cookie)])
        name = "index.html" if url.path in ("/", "/index.html") else url.path.lstrip("/")
        found = self._file(name)
        if found is None:
            return _text(http.HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
        body, kind = found
        return _response(http.HTTPStatus.OK, body, [("Content-Type", kind)])

    def _check_ws(self, request: Request) -> Optional[Response]:
        origin = request.headers.get("Origin")
        expected = "http://" + request.headers.get("Host", "")
        if origin != expected:
            log.warning("refused a WebSocket from origin %r (this page's origin is %r)", origin, expected)
            return _text(http.HTTPStatus.FORBIDDEN, f"origin {origin!r} may not connect")
        given = _cookie(request.headers, self.cookie)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return _text(http.HTTPStatus.UNAUTHORIZED, "no valid login: open the link `abstractruntime ui` prints")
        return None  # go on with the handshake

    def _file(self, name: str) -> Optional[Tuple[bytes, str]]:
        if name in self._files:
            return self._files[name]
        if "/" in name or name.startswith("."):
            return None  # one flat folder: no way out of it
        ext = os.path.splitext(name)[1]
        if ext not in TYPES:
            return None
        try:
            with open(os.path.join(STATIC, name), "rb") as f:
                body = f.read()
        except OSError:
            return None
        self._files[name] = (body, TYPES[ext])
        return self._files[name]

    # -- the WebSocket ----------------------------------------------------------------------------

    async def _connection(self, ws: ServerConnection) -> None:
        session = self.daemon.add_session(None)  # authorized by the handshake (see _check_ws)
        writer = session.writer = WsWriter(session.loop, ws, max_unread=MAX_UNREAD, on_overflow=session.overflowed)
        try:
            async for message in ws:
                if session.closed:
                    break
                dispatch(session, message.encode() if isinstance(message, str) else message)
                if session.loading is not None:  # an editor's support is loading: hold its next message
                    await session.wait_loaded()
        except ConnectionClosed:
            pass
        finally:
            writer.lost()
            session.close()


class WsWriter:
    """A WebSocket connection's writer, from any thread: each message becomes one text frame,
    sent in order by a task on the loop. The session hands it message bodies (`message`);
    pygls, for an editor on this connection, writes framed bytes (`write`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ws: ServerConnection, *, max_unread: int, on_overflow: Any):
        self.loop = loop
        self.ws = ws
        self.max_unread = max_unread
        self.on_overflow = on_overflow
        self._parser = FrameParser(1 << 62)
        self._lock = threading.Lock()
        self._queue: List[str] = []
        self._queued = 0
        self._scheduled = False
        self._wake = asyncio.Event()
        self._closed = False
        self._task = loop.create_task(self._pump())

    def message(self, body: bytes) -> None:
        self._queue_texts([body])

    def write(self, data: bytes) -> None:
        with self._lock:
            bodies = self._parser.feed(data)
        self._queue_texts(bodies)

    def _queue_texts(self, bodies: List[Any]) -> None:
        with self._lock:
            if self._closed:
                return
            for body in bodies:
                text = body.decode("utf-8")
                self._queue.append(text)
                self._queued += len(text)
            if self._queue and not self._scheduled:
                self._scheduled = True
                self.loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        with self._lock:
            self._scheduled = False
            unread = self._queued
        self._wake.set()
        if unread > self.max_unread:
            self.on_overflow(unread)

    async def _pump(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._queue = self._queue, []
            try:
                for text in batch:
                    await self.ws.send(text)  # waits while the browser reads slower than we write
                    with self._lock:  # worker threads add to the count meanwhile
                        self._queued -= len(text)
            except ConnectionClosed:
                return

    def lost(self) -> None:
        with self._lock:
            self._closed = True
            self._queue = []
        self._wake.set()

    def close(self) -> Any:
        self.lost()
        return self.ws.close()


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _cookie(headers: Headers, name: str) -> Optional[str]:
    for line in headers.get_all("Cookie"):
        for part in line.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v
    return None


def _response(status: http.HTTPStatus, body: bytes, headers: List[Tuple[str, str]]) -> Response:
    h = Headers(SECURITY_HEADERS + headers + [("Content-Length", str(len(body))), ("Connection", "close")])
    return Response(status.value, status.phrase, h, body)


def _text(status: http.HTTPStatus, text: str) -> Response:
    return _response(status, (text + "\n").encode(), [("Content-Type", "text/plain; charset=utf-8")])
