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
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise FrameError(f"malformed header line {line[:80]!r}")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise FrameError(f"bad Content-Length {value.strip()[:40]!r}") from None
            if length < 0:
                raise FrameError("negative Content-Length")
    if length is None:
        raise FrameError("a frame without Content-Length")
    if max_frame is not None and length > max_frame:
        n = length
        while n > 0:
            n -= len(await reader.readexactly(min(n, 1 << 20)))
        return FrameTooLarge(length)
    return await reader.readexactly(length)
