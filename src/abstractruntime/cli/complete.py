"""Shell completion (bash and zsh) through argcomplete, with run and workflow ids asked of the
daemon. argcomplete is imported only when a shell asks for completions (`_ARGCOMPLETE` set),
so ordinary commands don't pay for it.

Enable it with `eval "$(abstractruntime completion bash)"` (or `zsh`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, List

# A completion must come back at once: a daemon that does not answer gives no candidates.
_TIMEOUT_S = 2.0


def _client(parsed: argparse.Namespace) -> Any:
    from . import connect

    return connect(parsed, timeout=_TIMEOUT_S)


def run_ids(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> List[str]:
    """Run ids starting with `prefix`, newest first (waiting runs first for `answer`)."""
    status = "waiting" if getattr(parsed_args, "command", None) == "answer" else None
    try:
        with _client(parsed_args) as c:
            out: List[str] = []
            cursor = None
            while True:
                page = c.runs(order="newest", status=status, limit=1000, cursor=cursor)
                out += [r.run_id for r in page.runs if r.run_id.startswith(prefix)]
                cursor = page.next
                if not cursor or len(out) >= 200:
                    return out[:200]
    except Exception:  # no daemon, no candidates: completion must never print a traceback
        return []


def workflow_ids(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> List[str]:
    try:
        with _client(parsed_args) as c:
            return [w.workflow_id for w in c.workflows() if w.workflow_id.startswith(prefix)]
    except Exception:  # no daemon, no candidates
        return []


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request and exit, if this is one."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def shellcode(shell: str) -> str:
    import argcomplete

    return argcomplete.shellcode(["abstractruntime"], shell=shell)
