"""Error codes on the wire: JSON-RPC's own, LSP's `ServerNotInitialized`, and ours.

Application codes come from the kernel's typed errors (`core.errors`, 1000 and up) plus the
few only the daemon raises. Each error's `data.name` is the stable name clients switch on.

Every path that answers a request with an error (the session's methods, the framing, the
editor features) builds the error object with `to_wire(exc)`: one conversion, so a code, a
message and its data look the same whichever way a request came in.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..core.errors import ERROR_TYPES, AbstractRuntimeError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_NOT_INITIALIZED = -32002


class DaemonError(AbstractRuntimeError):
    """An error of the daemon itself."""

    CODE = 1100
    NAME = "daemon_error"


class UnauthorizedError(DaemonError):
    """`initialize` without the right TCP token."""

    CODE = 1101
    NAME = "unauthorized"


class SubscriptionNotFoundError(DaemonError):
    """This connection has no subscription with that id."""

    CODE = 1102
    NAME = "subscription_not_found"


class CursorExpiredError(DaemonError):
    """Events after that cursor are no longer kept (data.oldest): re-read, then subscribe afresh."""

    CODE = 1103
    NAME = "cursor_expired"


class ShuttingDownError(DaemonError):
    """The daemon is stopping and takes no new work."""

    CODE = 1104
    NAME = "shutting_down"


class TooManySubscriptionsError(DaemonError):
    """This connection holds as many subscriptions as it may (max_subscriptions)."""

    CODE = 1105
    NAME = "too_many_subscriptions"


class WebNotServedError(DaemonError):
    """`daemon/webLink` on a daemon started without `--http`."""

    CODE = 1106
    NAME = "web_not_served"


APP_ERRORS = list(ERROR_TYPES) + [
    DaemonError,
    UnauthorizedError,
    SubscriptionNotFoundError,
    CursorExpiredError,
    ShuttingDownError,
    TooManySubscriptionsError,
    WebNotServedError,
]

STANDARD = {
    "parse_error": (PARSE_ERROR, "The frame's body is not JSON."),
    "invalid_request": (INVALID_REQUEST, "The JSON is not a JSON-RPC 2.0 request or notification."),
    "method_not_found": (METHOD_NOT_FOUND, "No such method."),
    "invalid_params": (
        INVALID_PARAMS,
        "The params do not match the method's schema; data.errors has pydantic's detail.",
    ),
    "internal_error": (INTERNAL_ERROR, "A bug in the daemon; the daemon keeps serving."),
    "server_not_initialized": (SERVER_NOT_INITIALIZED, "A request came before `initialize`."),
}


class RpcError(Exception):
    """A JSON-RPC level error (a code below 1000: parse error, invalid request or params...)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def invalid_params(message: str, data: Any = None) -> RpcError:
    return RpcError(INVALID_PARAMS, message, data)


def to_wire(exc: BaseException, context: Optional[str] = None) -> Dict[str, Any]:
    """The JSON-RPC error object for an exception: typed errors keep their code, message and
    data; anything else is an internal error that names its type, never its traceback (the
    daemon's log has that). `context` (a method name) goes into an internal error's message."""
    if isinstance(exc, AbstractRuntimeError):
        return exc.to_error_object()
    if isinstance(exc, RpcError):
        err: Dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            err["data"] = exc.data
        return err
    where = f" in {context}" if context else ""
    return {"code": INTERNAL_ERROR, "message": f"internal error{where}: {type(exc).__name__}"}


def error_table() -> Dict[str, Dict[str, Any]]:
    """Every error a client can see, by name: {code, description}."""
    table = {name: {"code": code, "description": desc} for name, (code, desc) in STANDARD.items()}
    for cls in APP_ERRORS:
        doc = (cls.__doc__ or "").strip().splitlines()
        table[cls.NAME] = {"code": cls.CODE, "description": doc[0] if doc else cls.NAME.replace("_", " ") + "."}
    return table


def from_wire(code: Any, message: str, data: Any) -> AbstractRuntimeError:
    """The typed error a client raises for an application error object (code >= 1000)."""
    extra = dict(data) if isinstance(data, dict) else {}
    extra.pop("name", None)
    for cls in APP_ERRORS:
        if cls.CODE == code:
            return cls(message, **extra)
    return AbstractRuntimeError(message, **extra)
