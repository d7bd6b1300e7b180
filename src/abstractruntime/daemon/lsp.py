"""The connection's pygls `LanguageServer`, for the LSP messages a session does not answer
itself (the editor features). Imported only when a connection first needs it.

Each connection gets its own server and protocol objects: pygls's own TCP server shares one
protocol object between connections and exits when a client leaves. The session has already
answered `initialize`; the bridge hands pygls the same `initialize` request through pygls's own
message path (so its state, the client capabilities and the workspace, matches the
connection) and drops pygls's answer to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

import attrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from .. import __version__
from ..protocol.errors import invalid_params

if TYPE_CHECKING:
    from .editor import EditorFeatures
    from .peer import Peer

# The id of the `initialize` the bridge replays into pygls: its answer is not the client's.
_REPLAYED_INIT = "abstractruntime/replayed-initialize"


class DaemonProtocol(LanguageServerProtocol):
    peer: Peer

    @lsp_method(lsp.EXIT)
    def lsp_exit(self, *args: Any) -> None:  # type: ignore[override]
        # pygls would end the process; here only this connection ends.
        self.peer.close()

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        if msg_id == _REPLAYED_INIT:
            return  # the session answered the client's own initialize already
        # pygls puts the server's traceback in an internal error's data: the daemon's log has
        # it (pygls logs it), the client gets the message only.
        if error is not None and isinstance(getattr(error, "data", None), dict) and "traceback" in error.data:
            error = attrs.evolve(error, data=None)
        super()._send_response(msg_id, result, error)


class LspBridge:
    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.server = LanguageServer("abstractruntime", __version__, protocol_cls=DaemonProtocol, max_workers=4)
        self.protocol: DaemonProtocol = self.server.protocol  # type: ignore[assignment]
        self.protocol.peer = peer
        self.editor: Optional[EditorFeatures] = None
        self.protocol.set_writer(peer.writer)
        params = {"processId": None, "capabilities": {}, **peer.init_params}
        self._handle({"jsonrpc": "2.0", "id": _REPLAYED_INIT, "method": "initialize", "params": params})

    def start_editor_features(self) -> None:
        if self.editor is None:
            from .editor import EditorFeatures

            self.editor = EditorFeatures(self.peer, self.server)

    def workflows_changed(self, report: Dict[str, Any]) -> None:
        if self.editor is not None:
            self.editor.workflows_changed(report)

    def close(self) -> None:
        if self.editor is not None:
            self.editor.close()

    def _handle(self, data: Dict[str, Any], msg_id: Any = None) -> None:
        try:
            message = self.protocol.structure_message(data)
        except JsonRpcException as e:
            if msg_id is not None:
                self.peer.reply_error(
                    msg_id, invalid_params(f"invalid params for {data.get('method')}: {e.message or e}")
                )
            return
        self.protocol.handle_message(message)

    def request(self, msg_id: Any, method: str, params: Any) -> None:
        self._handle({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}, msg_id)

    def notification(self, method: str, params: Any) -> None:
        self._handle({"jsonrpc": "2.0", "method": method, "params": params})

    def response(self, msg: Dict[str, Any]) -> None:
        """An answer from the client: to a prompt of the editor features, or to pygls."""
        if self.editor is not None and self.editor.take_response(msg):
            return
        self._handle(msg)
