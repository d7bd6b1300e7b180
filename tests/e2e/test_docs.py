"""The README and the docs tell the truth: every code block in them runs as written (or says why
not), in order, in a folder laid out like this repository, against a real daemon where a block
talks to one. A stale snippet fails `make test`. TypeScript blocks run in test_typescript.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from docs_blocks import DOCS, ROOT, Block, blocks, make_reader_folder

from abstractruntime import project
from abstractruntime.protocol import discovery

ALL = [b for d in DOCS for b in blocks(d)]
RUN_HERE = ("python", "shell", "json", "toml")


def test_every_code_block_is_run_or_says_why():
    silent = [b.where for b in ALL if b.runner is None and b.not_run is None]
    assert not silent, f"blocks no test runs; give them a runner or a <!-- not run: why --> note: {silent}"
    assert len([b for b in ALL if b.runner in RUN_HERE and not b.not_run]) >= 12  # the runner finds them


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


class ReaderDaemon:
    """`abstractruntime serve` in the reader's folder, as `make serve` runs it in the repository."""

    def __init__(self, folder: Path, env: dict) -> None:
        self.folder = folder
        self.log = open(folder.parent / "daemon.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(folder / ".venv" / "bin" / "abstractruntime"), "serve"], cwd=folder,
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        sock = discovery.default_socket(str(folder / ".abstractruntime"))
        deadline = time.time() + 20
        while not os.path.exists(sock):
            assert self.proc.poll() is None, (folder.parent / "daemon.log").read_text()[-2000:]
            assert time.time() < deadline, "the daemon did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def _needs_daemon(b: Block) -> bool:
    return b.runner == "shell" or "discover()" in b.code


def _run(b: Block, folder: Path, env: dict) -> subprocess.CompletedProcess:
    if b.runner == "python":
        argv = [sys.executable, "-c", b.code]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", b.code]
    return subprocess.run(argv, cwd=folder, env=env, input=(b.stdin + "\n") if b.stdin else "",
                          capture_output=True, text=True, timeout=120)


DOCS_HERE = [d for d in DOCS if any(b.runner in RUN_HERE and not b.not_run for b in blocks(d))]


@pytest.mark.parametrize("doc", DOCS_HERE, ids=[str(d.relative_to(ROOT)) for d in DOCS_HERE])
def test_the_blocks_of(doc, tmp_path):
    env = _env()
    folder = tmp_path / "reader"
    make_reader_folder(folder, env)
    daemon = None
    with ExitStack() as stack:
        for b in blocks(doc):
            if b.not_run or b.runner not in RUN_HERE:
                continue
            if b.runner == "json":
                json.loads(b.code)
                continue
            if b.runner == "toml":
                cfg = tmp_path / "block" / "abstractruntime.toml"
                cfg.parent.mkdir(exist_ok=True)
                cfg.write_text(b.code)
                project.read_config(str(cfg))  # a config example must be a valid config
                continue
            if _needs_daemon(b) and daemon is None:
                daemon = ReaderDaemon(folder, env)
                stack.callback(daemon.stop)
            block_env = dict(env)
            if "integrations.abstractcore" in b.code:
                pytest.importorskip("abstractcore")
                from fake_llm import FakeLLMServer

                llm = FakeLLMServer()
                stack.callback(llm.close)
                block_env["OLLAMA_BASE_URL"] = llm.url  # the block's "ollama" provider reaches a scripted model
            p = _run(b, folder, block_env)
            assert p.returncode == 0, f"{b.where} failed:\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"


def test_the_readme_walkthrough_answers_and_completes_the_run(tmp_path):
    """The README's second-terminal block, checked for what a reader sees, not only its exit code."""
    readme = [b for b in blocks(ROOT / "README.md") if b.runner == "shell" and not b.not_run][0]
    env = _env()
    folder = tmp_path / "reader"
    make_reader_folder(folder, env)
    daemon = ReaderDaemon(folder, env)
    try:
        out = _run(readme, folder, env).stdout
    finally:
        daemon.stop()
    assert "waiting (user): Approve an expense of 120 EUR?" in out
    assert "answer: Approve an expense of 120 EUR? [approve/reject]" in out
    assert "completed  at done" in out  # answered, and followed through the cool-off to the end


def test_examples_run(tmp_path):
    env = _env()
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "completed: {'shipped': True}" in p.stdout and "ledger verifies: True" in p.stdout
    for _ in (1, 2):
        p = subprocess.run([sys.executable, str(ROOT / "examples" / "embedded.py")], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        assert "approval   completed  {'decision': 'approve'}" in p.stdout
        assert "greeting   completed  {'greeting': 'Hello, world!'}" in p.stdout
        assert "no LLM_CALL handler" in p.stdout or "no handler registered for effect 'llm_call'" in p.stdout
    assert "already stored: {" in p.stdout  # the second run found the first one's runs
    assert (tmp_path / "embedded-data" / "_index").is_dir()
