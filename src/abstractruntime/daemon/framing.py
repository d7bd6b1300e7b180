"""Reading a connection's frames and handing each message to its session.

The frames themselves are read by `protocol/framing.py` (shared with the Python client). This
loop answers what is malformed as JSON-RPC requires (parse error, invalid request, with `"id":
null` when the id cannot be read), refuses frames over a size limit, refuses messages nested
deeper than `MAX_DEPTH`, and hands every well-formed message to the connection's session.
Nothing a client sends can end the daemon: at worst its own connection closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, List, Optional

import orjson

from ..protocol.errors import INVALID_REQUEST, PARSE_ERROR, RpcError
from ..protocol.framing import FrameError, FrameParser, FrameTooLarge

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("abstractruntime.daemon")

MAX_FRAME = 16 * 1024 * 1024
# How deep a message may nest (objects and arrays). Deeper data could be stored but never
# encoded again (Python's JSON recursion limit is near 1,000), so it is refused at the door.
MAX_DEPTH = 64

__all__ = ["MAX_DEPTH", "MAX_FRAME", "Connection", "ConnWriter", "FrameError", "dispatch", "too_deep"]


class Connection(asyncio.Protocol):
    """One client's byte stream (a socket, or stdin and stdout), read as frames and handed to
    its session. Reading happens in `data_received`, with no coroutine per message.

    While the session loads its editor support (`session.loading`), reading pauses: the frames already received wait
    here and are handled, in order, once it is done.
    """

    def __init__(self, session: Session, *, max_frame: int = MAX_FRAME) -> None:
        self.session = session
        self.parser = FrameParser(max_frame)
        self.max_frame = max_frame
        self.transport: Any = None
        self._held: List[Any] = []  # frames received while the session was loading

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        writer = self.session.writer
        if isinstance(writer, ConnWriter) and writer.transport is None:  # a socket: one transport both ways
            writer.attach(transport, transport.get_extra_info("socket").fileno())

    # A socket's transport reports its write buffer to this protocol: the writer keeps count.
    def pause_writing(self) -> None:
        self.session.writer.pause_writing()

    def resume_writing(self) -> None:
        self.session.writer.resume_writing()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.parser.feed(data)
        except FrameError as e:
            log.warning("closing a connection: %s", e)
            self.session.close()
            return
        if self._held:
            self._held.extend(frames)
            return
        self._handle(frames)

    def _handle(self, frames: List[Any]) -> None:
        session = self.session
        for i, body in enumerate(frames):
            if session.closed:
                return
            if isinstance(body, FrameTooLarge):
                session.reply_error(
                    None,
                    RpcError(
                        INVALID_REQUEST, f"frame of {body.length} bytes exceeds the limit of {self.max_frame} bytes"
                    ),
                )
                continue
            dispatch(session, body)
            if session.loading is not None:
                self._held = frames[i + 1 :] or [_RESUME]
                self.transport.pause_reading()
                asyncio.ensure_future(self._after_loading())
                return

    async def _after_loading(self) -> None:
        await self.session.wait_loaded()
        held, self._held = [f for f in self._held if f is not _RESUME], []
        if not self.session.closed:
            self.transport.resume_reading()
            self._handle(held)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Optional[Exception]) -> None:
        writer = self.session.writer
        if isinstance(writer, ConnWriter) and writer.transport is self.transport:
            writer.lost()
        self.session.close()


_RESUME = object()  # a placeholder in `Connection._held`: reading is paused, nothing held yet


class ConnWriter(asyncio.Protocol):
    """Writes a connection's messages from any thread, in the order they are written.

    A tick worker that finishes a request writes the reply itself: straight to the socket when
    nothing is queued before it (one `os.write`, no wake-up of the event loop), otherwise
    queued behind what is, for the loop to hand to the transport. The transport reports when
    its own buffer is non-empty (`pause_writing`, with a high-water mark of 0) and empty again
    (`resume_writing`), so a direct write never overtakes bytes still in it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_unread: int, on_overflow: Any) -> None:
        self.loop = loop
        self.max_unread = max_unread
        self.on_overflow = on_overflow  # called on the loop with the unread byte count
        self.transport: Any = None
        self.fd = -1
        # Re-entrant: the transport may report an empty buffer from inside a write of ours.
        self._lock = threading.RLock()
        self._queue: List[bytes] = []
        self._queued = 0
        self._scheduled = False
        self._busy = False  # the transport holds unsent bytes
        self._closed = False

    def attach(self, transport: Any, fd: int) -> None:
        self.transport, self.fd = transport, fd
        transport.set_write_buffer_limits(high=0, low=0)

    def connection_made(self, transport: Any) -> None:  # a write pipe (stdout) of its own
        self.attach(transport, transport.get_extra_info("pipe").fileno())

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.lost()

    def message(self, body: bytes) -> None:
        """Write one message: its Content-Length header, then its body."""
        self.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._queue and not self._busy and self.fd >= 0:
                try:
                    n = os.write(self.fd, data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    return  # the peer is gone: the transport notices and closes
                if n == len(data):
                    return
                data = data[n:]
            self._queue.append(data)
            self._queued += len(data)
            if not self._scheduled:
                self._scheduled = True
                self.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:  # on the loop
        with self._lock:
            self._scheduled = False
            queue, self._queue = self._queue, []
            self._queued = 0
            if self._closed or self.transport is None or self.transport.is_closing():
                return
            for chunk in queue:
                self.transport.write(chunk)
            unread = self.buffered()
        if unread > self.max_unread:
            self.on_overflow(unread)

    def pause_writing(self) -> None:  # the transport, on the loop (inside _flush, under the lock)
        self._busy = True

    def resume_writing(self) -> None:  # the transport, on the loop
        with self._lock:
            self._busy = False

    def buffered(self) -> int:
        """Bytes written but not yet taken by the client (read on the event loop)."""
        t = self.transport
        in_transport = t.get_write_buffer_size() if t is not None and not t.is_closing() else 0
        return in_transport + self._queued

    def lost(self) -> None:
        """The stream closed: later writes are dropped (its descriptor may be reused)."""
        with self._lock:
            self._closed = True
            self._queue = []
            self._queued = 0

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def dispatch(session: Session, body: bytes) -> None:
    try:
        # orjson first (UTF-8 only, several times faster); what it refuses (invalid input, but
        # also what the standard library takes: integers beyond 64 bits, NaN) is read again by
        # the standard library, whose verdict and messages are the protocol's.
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = _slow_loads(session, body)
        if data is _REFUSED:
            return
    msg_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(msg_id, (str, int)) or isinstance(msg_id, bool):
        msg_id = None
    # A message with fewer opening brackets than the limit cannot nest deeper (a count in C,
    # where the walk is a Python loop over every value).
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and too_deep(data, MAX_DEPTH):
        session.reply_error(
            msg_id, RpcError(INVALID_REQUEST, f"invalid request: the message nests deeper than {MAX_DEPTH} levels")
        )
        return
    problem = _check_envelope(data)
    if problem:
        session.reply_error(msg_id, RpcError(INVALID_REQUEST, f"invalid request: {problem}"))
        return
    try:
        if "method" not in data:
            session.handle_response(data)
        elif "id" in data:
            session.handle_request(data["id"], data["method"], data.get("params"))
        else:
            session.handle_notification(data["method"], data.get("params"))
    except Exception as e:  # isolation boundary: one message's failure is its own
        log.exception("handling %s failed", data.get("method"))
        if msg_id is not None and "method" in data:
            session.reply_error(msg_id, e)


_REFUSED = object()


def _slow_loads(session: Session, body: bytes) -> Any:
    """The message through the standard library, or `_REFUSED` once the error is answered."""
    try:
        # UTF-8 only (json.loads would guess UTF-16 or UTF-32 from the first bytes).
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        session.reply_error(
            None, RpcError(PARSE_ERROR, f"parse error: the body must be UTF-8 ({e.reason} at byte {e.start})")
        )
    except ValueError as e:
        session.reply_error(None, RpcError(PARSE_ERROR, f"parse error: {e}"))
    except RecursionError:
        session.reply_error(
            None, RpcError(PARSE_ERROR, f"parse error: the message nests deeper than {MAX_DEPTH} levels")
        )
    return _REFUSED


def too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests objects and arrays deeper than `limit` (without recursing)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children: Any = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _check_envelope(data: Any) -> Optional[str]:
    if not isinstance(data, dict):
        return "the message must be a JSON object (batches are not supported)"
    if data.get("jsonrpc") != "2.0":
        return 'jsonrpc must be "2.0"'
    if "method" in data:
        if not isinstance(data["method"], str):
            return "method must be a string"
        if "id" in data and (not isinstance(data["id"], (str, int)) or isinstance(data["id"], bool)):
            return "id must be a string or an integer"
        if data.get("params") is not None and not isinstance(data["params"], (dict, list)):
            return "params must be an object or an array"
        return None
    if "id" in data and ("result" in data or "error" in data):
        return None  # a response to a request of ours
    return "neither a request, a notification nor a response"
