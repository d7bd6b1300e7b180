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
from typing import TYPE_CHECKING, Any, Optional

from ..protocol.errors import INVALID_REQUEST, PARSE_ERROR, RpcError
from ..protocol.framing import FrameError, FrameTooLarge, read_frame

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("abstractruntime.daemon")

MAX_FRAME = 16 * 1024 * 1024
# How deep a message may nest (objects and arrays). Deeper data could be stored but never
# encoded again (Python's JSON recursion limit is near 1,000), so it is refused at the door.
MAX_DEPTH = 64

__all__ = ["MAX_DEPTH", "MAX_FRAME", "FrameError", "StreamWriterAdapter", "dispatch", "read_frames", "too_deep"]


async def read_frames(reader: Any, session: Session, *, max_frame: int = MAX_FRAME) -> None:
    while not session.closed:
        body = await read_frame(reader, max_frame)
        if body is None:
            return  # the client went away
        if isinstance(body, FrameTooLarge):
            session.reply_error(
                None, RpcError(INVALID_REQUEST, f"frame of {body.length} bytes exceeds the limit of {max_frame} bytes")
            )
            continue
        dispatch(session, body)
        if session.loading is not None:
            await session.wait_loaded()


def dispatch(session: Session, body: bytes) -> None:
    try:
        # UTF-8 only (json.loads would guess UTF-16 or UTF-32 from the first bytes).
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        session.reply_error(
            None, RpcError(PARSE_ERROR, f"parse error: the body must be UTF-8 ({e.reason} at byte {e.start})")
        )
        return
    except ValueError as e:
        session.reply_error(None, RpcError(PARSE_ERROR, f"parse error: {e}"))
        return
    except RecursionError:
        session.reply_error(
            None, RpcError(PARSE_ERROR, f"parse error: the message nests deeper than {MAX_DEPTH} levels")
        )
        return
    msg_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(msg_id, (str, int)) or isinstance(msg_id, bool):
        msg_id = None
    if too_deep(data, MAX_DEPTH):
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


class StreamWriterAdapter:
    """pygls's writer interface over an asyncio StreamWriter."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._w = writer

    def write(self, data: bytes) -> None:
        if not self._w.is_closing():
            self._w.write(data)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the client."""
        transport = self._w.transport
        return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

    def close(self) -> None:
        if not self._w.is_closing():
            self._w.close()
