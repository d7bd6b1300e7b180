"""Error codes on the wire: JSON-RPC's own, LSP's `ServerNotInitialized`, and ours.

Application codes come from the kernel's typed errors (`core.errors`, 1000 and up) plus the
few only the daemon raises. Each error's `data.name` is the stable name clients switch on.
"""

from __future__ import annotations

from typing import Any, Dict

from ..core.errors import ERROR_TYPES, AbstractRuntimeError
from ..storage._durable import InvalidRunIdError

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


APP_ERRORS = list(ERROR_TYPES) + [
    InvalidRunIdError,
    DaemonError,
    UnauthorizedError,
    SubscriptionNotFoundError,
    CursorExpiredError,
    ShuttingDownError,
    TooManySubscriptionsError,
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
