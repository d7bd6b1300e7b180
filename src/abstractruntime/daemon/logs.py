"""The daemon's logging: one stderr handler, and secrets masked in every record it writes.

The mask sits on the *handler*, not on our loggers: third-party libraries (AbstractCore, httpx,
the provider SDKs) log through their own loggers, and a provider whose error body echoes the
API key would otherwise put the key in the daemon's log. Every record that reaches the handler,
whoever wrote it, has each configured secret replaced before it is formatted.
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, List, Optional

MASK = "***"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that would write a line per message or per file event at INFO.
CHATTY = ("pygls", "watchfiles")


class SecretMask(logging.Filter):
    """Replaces each secret (4 characters or more) in a record's message, arguments,
    exception text and stack with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: List[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        new = [s for s in secrets if isinstance(s, str) and len(s) >= 4 and s not in self.secrets]
        # Longest first: a secret that contains another is masked whole.
        self.secrets = sorted(self.secrets + new, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: mask what is there
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


def configure(level: str, secrets: Iterable[str] = (), stream: Optional[object] = None) -> SecretMask:
    """Log to stderr at `level` with every secret masked; returns the mask (more can be added)."""
    mask = SecretMask(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(mask)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    if level != "debug":
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
    return mask
