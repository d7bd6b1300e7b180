"""The Python blocks of the README and docs run as written, so the docs match the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

BLOCK = re.compile(r"```python\n(.*?)```", re.S)
DOCS = ["README.md", "docs/getting-started.md"]


def _cases():
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall((ROOT / doc).read_text())):
            yield pytest.param(code, id=f"{doc}#{i}")


@pytest.mark.parametrize("code", list(_cases()))
def test_doc_block_runs(code, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    daemon = None
    if "Client.discover" in code:  # the block talks to the project's daemon: run one, as `make serve` does
        daemon = subprocess.Popen(
            [sys.executable, "-m", "abstractruntime", "serve", "--workflows", str(ROOT / "examples" / "workflows")],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_daemon(tmp_path)
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(30)
    assert p.returncode == 0, p.stderr


def _wait_for_daemon(cwd) -> None:
    import socket
    import time

    from abstractruntime.protocol import discovery

    path = discovery.default_socket(str(cwd / ".abstractruntime"))
    deadline = time.time() + 20
    while time.time() < deadline:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise AssertionError("the daemon did not start")


def test_examples_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart.py")], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "completed: {'shipped': True}" in p.stdout and "ledger verifies: True" in p.stdout
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples/serve_example.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr
    assert "approval   completed  {'decision': 'approve'}" in p.stdout
    assert (tmp_path / ".abstractruntime" / "_index").is_dir()
