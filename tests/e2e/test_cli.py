"""The CLI against a running daemon, as the README tells a newcomer to use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from daemon_fixture import cli

from abstractruntime.client.connection import env_with_package
from abstractruntime.protocol import discovery
from conftest import ROOT


def test_make_serve_then_runs_and_answer_in_a_second_terminal(tmp_path):
    # What `make serve` runs, from the project folder (here a copy of the layout it needs).
    proc = subprocess.Popen([sys.executable, "-m", "abstractruntime", "serve", "--workflows", str(ROOT / "examples" / "workflows")],
                            cwd=tmp_path, env=env_with_package(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = discovery.default_socket(str(tmp_path / ".abstractruntime"))
        deadline = time.time() + 15
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.05)
        assert os.path.exists(sock)
        assert cli(tmp_path, "runs").stdout.strip() == "no runs"
        out = cli(tmp_path, "start", "approval", "--vars", '{"amount": 7}')
        assert out.returncode == 0 and "waiting (user): Approve an expense of 7 EUR?" in out.stdout, out.stderr
        listed = cli(tmp_path, "runs", "--status", "waiting").stdout
        assert listed.splitlines()[0].split() == ["RUN", "WORKFLOW", "STATUS", "NODE", "WAITING", "FOR", "/", "ERROR", "UPDATED"]
        assert "approval" in listed and "answer: Approve an expense of 7 EUR? [approve/reject]" in listed
        bad = cli(tmp_path, "answer", "--text", "maybe")
        assert bad.returncode == 2 and "please answer one of: approve, reject" in bad.stderr
        ans = cli(tmp_path, "answer", stdin="approve\n")
        # It follows the run through its timer to the end, and exits with its outcome.
        assert ans.returncode == 0 and "completed  at done" in ans.stdout, ans.stderr
        rid = json.loads(cli(tmp_path, "runs", "--json").stdout)["runs"][0]["run_id"]
        deadline = time.time() + 10
        while json.loads(cli(tmp_path, "state", rid, "--json").stdout)["status"] != "completed" and time.time() < deadline:
            time.sleep(0.2)
        state = json.loads(cli(tmp_path, "state", rid, "--json").stdout)
        assert state["status"] == "completed" and state["output"] == {"decision": "approve"}
        led = cli(tmp_path, "ledger", rid).stdout
        assert "#1" in led and "report" in led
        watch = cli(tmp_path, "watch", rid, "--after", "0", "--count", "3", "--json").stdout.splitlines()
        assert len(watch) == 3 and json.loads(watch[0])["run_id"] == rid
        assert "store: files" in cli(tmp_path, "status").stdout
        err = cli(tmp_path, "state", "nope")
        assert err.returncode == 1 and "no run 'nope'" in err.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    gone = cli(tmp_path, "runs")
    assert gone.returncode == 3 and f"no daemon is running for the project at {tmp_path}" in gone.stderr
    assert "abstractruntime serve" in gone.stderr and ".sock" in gone.stderr


def test_help_is_helpful():
    out = cli(ROOT, "--help").stdout
    for word in ("serve", "start", "resume", "runs", "answer", "watch", "examples:"):
        assert word in out
    serve = cli(ROOT, "serve", "--help").stdout
    assert "--stdio" in serve and "--tcp" in serve and "--workflows" in serve


def test_a_token_from_the_environment_must_be_long_enough(tmp_path, monkeypatch):
    monkeypatch.setenv("ABSTRACTRUNTIME_TOKEN", "short")
    p = cli(tmp_path, "serve", "--tcp", "127.0.0.1:0", "--data", str(tmp_path / "data"), "--store", "memory")
    assert p.returncode == 2 and "$ABSTRACTRUNTIME_TOKEN is too short" in p.stderr and "Traceback" not in p.stderr


def test_a_database_that_cannot_be_reached_is_named_at_once(tmp_path):
    import pytest

    pytest.importorskip("psycopg", reason="pip install 'abstractruntime[postgres]'")
    p = cli(tmp_path, "serve", "--store", "postgres", "--dsn", f"host={tmp_path / 'nowhere'} dbname=runs",
            "--data", str(tmp_path / "data"))
    assert p.returncode == 2 and "cannot connect to PostgreSQL" in p.stderr and "nowhere" in p.stderr
    assert "Traceback" not in p.stderr
