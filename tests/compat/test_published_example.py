"""examples/published_api.py, written against the published API only, prints what it printed
on the published package 0.13.0 (run there by hand: the same lines)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = """\
1. waiting: waiting for Approve?
1. paused, still waiting: waiting
1. unpaused, waiting again: waiting for Approve?
1. found waiting in another process: waiting for Approve?
1. answered: completed {'answer': {'text': 'yes'}}
2. retried: completed {'reply': 'hello'} attempts [1, 2, 3]
3. offloaded: {'url': 'https://example.org', 'html_chars': 20007} artifacts 1
4. timer set: waiting
4. fired by the scheduler: completed {'reminded': True}
5. parent waits for its child: waiting subworkflow
5. child answered: completed
5. parent carried on: completed {'approved': 'yes'}
"""


def test_the_published_api_example_prints_what_it_prints_on_the_published_package(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TMPDIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "published_api.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == EXPECTED
