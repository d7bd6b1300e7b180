"""Python clients of the daemon: `Client` (blocking) and `AsyncClient`."""

from .aio import AsyncClient, Target, discover_target
from .connection import ConnectionLost, ProtocolError
from .sync import Client

__all__ = ["AsyncClient", "Client", "ConnectionLost", "ProtocolError", "Target", "discover_target"]
