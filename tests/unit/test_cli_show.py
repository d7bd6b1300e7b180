"""How the CLI shows things: colour on a terminal only, aligned tables, ages, wait texts."""

from __future__ import annotations

import io

from abstractruntime.cli.show import Style, age, emit_command, event_of, table


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal_only_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Style(Tty()).status("failed") == "\033[31mfailed\033[0m"
    assert Style(io.StringIO()).status("failed") == "failed"  # piped
    monkeypatch.setenv("NO_COLOR", "1")
    assert Style(Tty()).status("failed") == "failed"


def test_tables_align_by_the_text_without_colour(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    style = Style(Tty())
    plain = [["a1", "failed", "x"], ["b", "completed", "y"]]
    rows = [[r[0], style.status(r[1]), r[2]] for r in plain]
    lines = table(["RUN", "STATUS", "NOTE"], rows, style, plain).splitlines()
    no_codes = [line.replace("\033[31m", "").replace("\033[32m", "").replace("\033[1m", "").replace("\033[0m", "") for line in lines]
    assert no_codes == ["RUN  STATUS     NOTE", "a1   failed     x", "b    completed  y"]


def test_ages_and_event_keys():
    assert age("2026-11-29T10:00:00+00:00", now=1795946400 + 90) == "1m ago"
    assert age("2026-11-29T10:00:00+00:00", now=1795946400 - 7200) == "in 2h"
    assert event_of("event:run:r-1:expense_paid") == ("expense_paid", "run", "r-1")
    assert event_of("event:global:go") == ("go", "global", None)
    assert emit_command("event:session:s-9:done") == "abstractruntime emit done --scope session --session s-9"
    assert emit_command("user:r:1") is None
