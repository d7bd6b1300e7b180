"""Every Python block of the seed's getting-started guide runs as written.

Each block runs in a fresh interpreter in an empty folder (the file-store block writes
./data there). The AbstractCore block belongs to the AbstractCore integration and is
excluded here; the shell blocks are install commands for the published package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks(text):
    return [b for b in BLOCK.findall(text) if "integrations.abstractcore" not in b]


def test_seed_has_the_expected_blocks(seed_path):
    assert len(_blocks(seed_path.read_text())) == 3


@pytest.mark.parametrize("index", range(3))
def test_seed_block_runs(seed_path, tmp_path, index):
    code = _blocks(seed_path.read_text())[index]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    if index == 0:
        assert p.stdout.strip() == "{'answer': {'text': 'yes'}}"
    if index == 1:
        assert p.stdout.strip() == "completed {'ok': True}"
    if index == 2:
        assert (tmp_path / "data").is_dir()
