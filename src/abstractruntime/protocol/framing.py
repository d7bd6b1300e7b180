"""The LSP base protocol on a byte stream: `Content-Length` headers, then a JSON body. One
reader and one writer, shared by the daemon (`daemon/framing.py`) and the Python client.

The reader is strict where a peer could be hostile: a header line is bounded, a header without
a colon or a bad length ends the stream (it cannot be re-synchronised), and a frame over the
size limit is skipped (its body read and dropped, so the next frame starts where it should) and
reported as `FrameTooLarge` rather than buffered.
"""

from __future__ import annotations

from typing import Any, Optional, Union

MAX_HEADER_LINE = 8192


class FrameError(Exception):
    """The stream cannot be read further (a broken header): the connection must close."""


class FrameTooLarge:
    """A frame over the limit, skipped: its length, for the error answer."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


def encode_frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


async def read_frame(reader: Any, max_frame: Optional[int] = None) -> Union[bytes, FrameTooLarge, None]:
    """The next frame's body from an asyncio StreamReader; None at the end of the stream."""
    length: Optional[int] = None
    while True:
        line = await reader.readline()
        if not line:
            return None  # the peer went away
        if len(line) > MAX_HEADER_LINE:
            raise FrameError("header line too long")
        if line in (b"\r\n", b"\n"):
            break
        length = _header_line(line.rstrip(b"\r\n"), length)
    if length is None:
        raise FrameError("a frame without Content-Length")
    if max_frame is not None and length > max_frame:
        n = length
        while n > 0:
            n -= len(await reader.readexactly(min(n, 1 << 20)))
        return FrameTooLarge(length)
    return await reader.readexactly(length)


class FrameParser:
    """The same reading as `read_frame`, for bytes that arrive in pieces (an asyncio
    Protocol's `data_received`): no coroutine per frame, and a body that arrives in many pieces
    is joined once, not copied again with every piece.

    `feed(data)` returns the frames completed so far: bodies (bytes) and `FrameTooLarge` for
    skipped ones. A broken header raises `FrameError`; the stream cannot be read further.
    """

    __slots__ = ("_head", "_parts", "_have", "_length", "_skip", "max_frame")

    def __init__(self, max_frame: Optional[int] = None) -> None:
        self._head = b""  # the start of a header block not yet complete
        self._parts: list = []  # pieces of a body not yet complete
        self._have = 0
        self._length: Optional[int] = None  # the body's length once its header block is read
        self._skip = 0  # bytes of an oversized body still to drop
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list:
        out: list = []
        buf = data
        while buf:
            if self._skip:
                n = min(self._skip, len(buf))
                self._skip -= n
                buf = buf[n:]
                continue
            if self._length is None:
                if self._head:
                    buf, self._head = self._head + buf, b""
                length, buf = self._header(buf)
                if length is None:
                    break
                if self.max_frame is not None and length > self.max_frame:
                    self._skip = length
                    out.append(FrameTooLarge(length))
                    continue
                self._length = length
            need = self._length - self._have
            if len(buf) < need:
                self._parts.append(buf)
                self._have += len(buf)
                break
            if self._parts:
                self._parts.append(buf[:need])
                body = b"".join(self._parts)
                self._parts, self._have = [], 0
            else:
                body = buf[:need] if need < len(buf) else buf
            out.append(body)
            self._length = None
            buf = buf[need:]
        return out

    def _header(self, buf: bytes) -> tuple:
        """(the Content-Length, the bytes after the header block), or (None, b"") when the
        block is not complete yet (kept for the next piece)."""
        crlf, lf = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
        if crlf < 0 and lf < 0:
            if len(buf) > 4 * MAX_HEADER_LINE:
                raise FrameError("header line too long")
            self._head = buf
            return None, b""
        if lf < 0 or 0 <= crlf < lf:
            return _parse_header(buf[:crlf]), buf[crlf + 4 :]
        return _parse_header(buf[:lf]), buf[lf + 2 :]


def _parse_header(head: bytes) -> int:
    length: Optional[int] = None
    for line in head.split(b"\n"):
        if len(line) > MAX_HEADER_LINE:
            raise FrameError("header line too long")
        line = line.rstrip(b"\r")
        if line:
            length = _header_line(line, length)
    if length is None:
        raise FrameError("a frame without Content-Length")
    return length


def _header_line(line: bytes, length: Optional[int]) -> Optional[int]:
    """One header line (without its line end): the Content-Length it gives, else `length`."""
    name, sep, value = line.decode("latin-1").partition(":")
    if not sep:
        raise FrameError(f"malformed header line {line[:80]!r}")
    if name.strip().lower() != "content-length":
        return length
    try:
        n = int(value.strip())
    except ValueError:
        raise FrameError(f"bad Content-Length {value.strip()[:40]!r}") from None
    if n < 0:
        raise FrameError("negative Content-Length")
    return n
