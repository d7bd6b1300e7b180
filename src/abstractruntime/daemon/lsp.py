"""The connection's pygls `LanguageServer`, for the LSP messages a session does not answer
itself (the editor features). Imported only when a connection first needs it.

Each connection gets its own server and protocol objects: pygls's own TCP server shares one
protocol object between connections and exits when a client leaves. The session has already
answered `initialize`; the bridge replays those params into pygls so its state (client
capabilities, workspace) matches the connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

import attrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from .. import __version__
from ..protocol.errors import INVALID_PARAMS

if TYPE_CHECKING:
    from .session import Session


class DaemonProtocol(LanguageServerProtocol):
    session: Session

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        # pygls puts the server's traceback in an internal error's data: the daemon's log has
        # it (pygls logs it), the client gets the message only.
        if error is not None and isinstance(getattr(error, "data", None), dict) and "traceback" in error.data:
            error = attrs.evolve(error, data=None)
        super()._send_response(msg_id, result, error)

    @lsp_method(lsp.EXIT)
    def lsp_exit(self, *args: Any) -> None:  # type: ignore[override]
        # pygls would end the process; here only this connection ends.
        self.session.close()


class LspBridge:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.server = LanguageServer("abstractruntime", __version__, protocol_cls=DaemonProtocol, max_workers=4)
        self.protocol: DaemonProtocol = self.server.protocol  # type: ignore[assignment]
        self.protocol.session = session
        self.editor: Any = None
        self.protocol.set_writer(session.writer)
        params = {"processId": None, "capabilities": {}, **session.init_params}
        gen = self.protocol.lsp_initialize(self.protocol._converter.structure(params, lsp.InitializeParams))
        try:
            while True:
                next(gen)  # no user handlers for initialize: nothing to run in between
        except StopIteration:
            pass

    def start_editor_features(self) -> None:
        if self.editor is None:
            from .editor import EditorFeatures

            self.editor = EditorFeatures(self.session, self)

    def _handle(self, data: Dict[str, Any], msg_id: Any = None) -> None:
        try:
            message = self.protocol.structure_message(data)
        except JsonRpcException as e:
            if msg_id is not None:
                self.session.reply_error(
                    msg_id, INVALID_PARAMS, f"invalid params for {data.get('method')}: {e.message or e}"
                )
            return
        self.protocol.handle_message(message)

    def request(self, msg_id: Any, method: str, params: Any) -> None:
        self._handle({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}, msg_id)

    def notification(self, method: str, params: Any) -> None:
        self._handle({"jsonrpc": "2.0", "method": method, "params": params})

    def response(self, msg: Dict[str, Any]) -> None:
        self._handle(msg)
