"""What the parts of one connection see of each other.

A connection is a `Session` (the protocol's own methods, the lifecycle), and for an editor a
pygls bridge (`lsp.py`) and the editor features (`editor.py`). They see each other only
through this narrow `Peer`: the hub, the connection's `initialize` params, a way to send a
message or an error, and to close. (python-lsp-server's plugins get `config, workspace,
document`; ruff-lsp's features call two functions of the server: the same idea.)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol

if TYPE_CHECKING:
    from .hub import Hub


class Peer(Protocol):
    hub: Hub
    loop: asyncio.AbstractEventLoop
    init_params: Dict[str, Any]
    # The event cursor when the client initialized: the editor features, which start once
    # pygls is loaded, follow the runs from there, so nothing in between goes unseen.
    events_from: Optional[int]

    @property
    def closed(self) -> bool: ...

    @property
    def writer(self) -> Any:
        """The connection's byte writer (pygls writes its own messages through it)."""

    def send(self, obj: Dict[str, Any]) -> None:
        """Write one message."""

    def reply_error(self, msg_id: Any, exc: BaseException) -> None:
        """Answer a request with the error `protocol.errors.to_wire(exc)` describes."""

    def close(self) -> None: ...
