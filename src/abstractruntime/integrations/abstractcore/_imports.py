"""Importing AbstractCore without letting it take over the host's logging.

AbstractCore configures logging when its package is first imported: it removes the root
logger's handlers, adds its own (one of them on stdout) and sets the root level to ERROR. A
daemon would lose its log and the secret mask on its handler, and on the stdio transport stdout
is the protocol stream. Every import of AbstractCore goes through `import_abstractcore`, which
puts the host's handlers and level back as they were.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

_lock = threading.Lock()


def import_abstractcore(module: str = "abstractcore") -> Any:
    """`importlib.import_module(module)` for an AbstractCore module, the host's logging kept."""
    with _lock:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"this needs AbstractCore: pip install 'abstractruntime[abstractcore]' ({e})") from None
        finally:
            for h in list(root.handlers):
                if h not in handlers:
                    root.removeHandler(h)
            for h in handlers:
                if h not in root.handlers:
                    root.addHandler(h)
            root.setLevel(level)
