"""The fenced code blocks of the README and the docs, and the project a reader runs them in.

Every block with a language is run by the test suite (tests/e2e/test_docs.py; TypeScript blocks
by tests/e2e/test_typescript.py), or says why not in an HTML comment on the line before its
fence: `<!-- not run: REASON -->`. `<!-- stdin: TEXT -->` gives a shell block its standard
input. A fence without a language is text (a tree, an output sample), not code.

Blocks run as a reader would run them, in order, in one folder laid out like this repository's
root: `examples/` (linked), `.venv/bin/abstractruntime` and `.venv/bin/python` (this Python),
and the repository's project settings (the workflows of examples/workflows).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", ROOT / "examples" / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("clients/*/README.md")]
)
FENCE = re.compile(
    r"(?P<notes>(?:<!--[^\n]*-->\n)*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M
)
NOTE = re.compile(r"<!--\s*(not run|stdin):\s*(.*?)\s*-->")
# What runs each language; others must say why they are not run.
RUNNERS = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell",
           "ts": "typescript", "typescript": "typescript", "json": "json", "toml": "toml"}


@dataclass
class Block:
    doc: Path
    index: int
    lang: str
    code: str
    not_run: Optional[str]
    stdin: Optional[str]
    line: int

    @property
    def runner(self) -> Optional[str]:
        return RUNNERS.get(self.lang)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line} ({self.lang} block #{self.index})"


def blocks(doc: Path) -> List[Block]:
    text = doc.read_text()
    out = []
    for i, m in enumerate(b for b in FENCE.finditer(text) if b.group("lang")):
        notes: Dict[str, str] = {k: v for k, v in NOTE.findall(m.group("notes"))}
        line = text.count("\n", 0, m.start("code"))
        out.append(Block(doc, i, m.group("lang"), m.group("code"), notes.get("not run"), notes.get("stdin"), line))
    return out


def make_reader_folder(folder: Path, env: Dict[str, str]) -> None:
    """A folder laid out like this repository's root, for blocks that assume they run there."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / "abstractruntime.toml").write_text('workflows = ["examples/workflows"]\n')
    bin_dir = folder / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    pythonpath = env.get("PYTHONPATH", "")
    for name, argv in (("abstractruntime", f'"{sys.executable}" -m abstractruntime'), ("python", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nPYTHONPATH="{pythonpath}" exec {argv} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
