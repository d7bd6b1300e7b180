"""Python clients of the daemon: `Client` (blocking) and `AsyncClient`."""

from .aio import AsyncClient, DaemonNotRunning, Target, discover_target
from .connection import ConnectionLost, ProtocolError
from .sync import Client

__all__ = ["AsyncClient", "Client", "DaemonNotRunning", "ConnectionLost", "ProtocolError", "Target", "discover_target"]
