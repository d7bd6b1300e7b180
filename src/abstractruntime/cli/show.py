"""How the CLI shows things to a person: tables, colours, ages, and what a run waits for.

Colour only on a terminal (and never with NO_COLOR or TERM=dumb); piped output is the same
text without escape codes. Nothing here talks to the daemon.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Optional, Sequence, Tuple

from ..core.timeutil import iso_to_epoch

_COLOURS = {
    "completed": "32",  # green
    "failed": "31",  # red
    "cancelled": "2",  # dim
    "waiting": "33",  # yellow
    "running": "36",  # cyan
}


class Style:
    def __init__(self, stream: Any = None) -> None:
        stream = stream if stream is not None else sys.stdout
        self.on = (
            hasattr(stream, "isatty")
            and stream.isatty()
            and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb"
        )

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on and text else text

    def status(self, status: str, text: Optional[str] = None) -> str:
        return self._wrap(_COLOURS.get(status, "0"), text if text is not None else status)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    style: Style,
    plain: Optional[Sequence[Sequence[str]]] = None,
) -> str:
    """Aligned columns under headers. `rows` may hold colour codes: widths come from `plain`
    (the same cells without them)."""
    plain = plain if plain is not None else rows
    widths = [len(h) for h in headers]
    for r in plain:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    last = len(headers) - 1

    def line(cells: Sequence[str], raw: Sequence[str]) -> str:
        out = []
        for i, (cell, bare) in enumerate(zip(cells, raw, strict=True)):
            out.append(cell if i == last else cell + " " * (widths[i] - len(bare)))
        return "  ".join(out).rstrip()

    head = line([style.bold(h) for h in headers], headers)
    return "\n".join([head] + [line(r, p) for r, p in zip(rows, plain, strict=True)])


def age(iso: Optional[str], now: Optional[float] = None) -> str:
    """How long ago: 12s, 5m, 3h, 2d."""
    if not iso:
        return "-"
    try:
        secs = (now if now is not None else time.time()) - iso_to_epoch(iso)
    except ValueError:
        return iso
    return _span(secs) + " ago" if secs >= 0 else "in " + _span(-secs)


def until_text(iso: str, now: Optional[float] = None) -> str:
    """An ISO time, and how far from now it is: `2026-11-29T10:00:00+00:00 (in 5m)`."""
    try:
        secs = iso_to_epoch(iso) - (now if now is not None else time.time())
    except ValueError:
        return iso
    return f"{iso} ({'in ' + _span(secs) if secs >= 0 else _span(-secs) + ' ago'})"


def _span(secs: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def event_of(wait_key: Optional[str]) -> Optional[Tuple[str, str, Optional[str]]]:
    """(name, scope, the session or run it is scoped to) of an event wait key."""
    if not wait_key or not wait_key.startswith("event:"):
        return None
    parts = wait_key.split(":")
    if len(parts) >= 3 and parts[1] == "global":
        return ":".join(parts[2:]), "global", None
    if len(parts) >= 4 and parts[1] in ("session", "run"):
        return ":".join(parts[3:]), parts[1], parts[2]
    return None


def emit_command(wait_key: Optional[str]) -> Optional[str]:
    """The CLI command that sends the event a run waits on."""
    ev = event_of(wait_key)
    if ev is None:
        return None
    name, scope, scoped = ev
    if scope == "run":
        return f"abstractruntime emit {name} --run {scoped}"
    if scope == "session":
        return f"abstractruntime emit {name} --scope session --session {scoped}"
    return f"abstractruntime emit {name}"


def deadline_of(wait: Any) -> Optional[str]:
    """A wait's deadline (its `until` when `details.deadline` is set), else None."""
    details = getattr(wait, "details", None) or {}
    return getattr(wait, "until", None) if isinstance(details, dict) and "deadline" in details else None


def waiting_for(s: Any) -> str:
    """One line: what a waiting run (a summary) needs, for a table."""
    reason = s.wait_reason
    if s.paused:
        return "paused"
    if reason == "user":
        text = f"answer: {s.prompt or '?'}" + (f" [{'/'.join(s.choices)}]" if s.choices else "")
    elif reason == "event":
        ev = event_of(s.wait_key)
        text = f"event {ev[0]}" + (f" ({ev[1]})" if ev[1] != "global" else "") if ev else f"event {s.wait_key}"
    elif reason == "until":
        return f"timer, fires {age(s.until)}" if s.until else "timer"
    elif reason == "subworkflow":
        text = "a child run"
    elif reason == "job":
        text = "a host's result (job)"
    else:
        text = reason or ""
    if s.until and reason in ("user", "event"):
        text += f" (deadline {age(s.until)})"
    return text


def first_line(text: Optional[str]) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


def describe_state(st: Any, style: Optional[Style] = None) -> str:
    """A run's state, as `state`, `start`, `resume` and friends print it."""
    style = style or Style()
    lines = [f"run {st.run_id}  ({st.workflow_id})  {style.status(st.status)}  at {st.current_node}"]
    w = st.waiting
    if w:
        lines.append(
            f"  waiting ({w.reason})"
            + (f": {w.prompt}" if w.prompt else "")
            + (f"  until {w.until}" if w.until and w.reason == "until" else "")
        )
        if w.choices:
            lines.append(f"  choices: {', '.join(w.choices)}" + ("" if w.allow_free_text else " (only these)"))
        deadline = deadline_of(w)
        if deadline:
            on_timeout = ((w.details or {}).get("deadline") or {}).get("on_timeout")
            lines.append(
                f"  deadline: {until_text(deadline)}" + (f", then goes on at {on_timeout}" if on_timeout else "")
            )
        cmd = emit_command(w.wait_key)
        if cmd:
            ev = event_of(w.wait_key)
            assert ev is not None
            lines.append(f"  waits for event {ev[0]!r} (scope {ev[1]}): {cmd} --payload JSON")
        elif w.reason == "user":
            lines.append(f"  answer it: abstractruntime answer {st.run_id}")
    if st.output is not None:
        lines.append(f"  output: {json.dumps(st.output)}")
    if st.error:
        lines.append(f"  error: {style.status('failed', first_line(st.error))}")
    return "\n".join(lines)
