"""Finding the project's daemon from any folder of the project, like git finds a repository: the
CLI, the Python client and `abstractruntime lsp` (an editor's daemon serves what `serve` would,
the same model included); and what each says when no daemon runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from abstractruntime.client import Client, DaemonNotRunning
from abstractruntime.client.connection import env_with_package
from abstractruntime.protocol import discovery
from conftest import ROOT

WORKFLOWS = ROOT / "tests" / "e2e" / "workflows"


def clean_env():
    env = env_with_package()
    for k in [k for k in env if k.startswith("ABSTRACTRUNTIME_")]:
        del env[k]
    return env


def cli(cwd, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "abstractruntime", *args], cwd=cwd, env=clean_env(),
                          input=stdin, capture_output=True, text=True, timeout=60)


@pytest.fixture
def proj(tmp_path):
    root = tmp_path / "proj"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "abstractruntime.toml").write_text(
        f'workflows = ["{WORKFLOWS}"]\ndata = "var/runtime"\n'
        '[model]\nprovider = "ollama"\nmodel = "from-config"\nbase_url = "http://127.0.0.1:9"\n'
    )
    return root


def wait_socket(data_dir, timeout=20.0):
    info_path = discovery.discovery_file(str(data_dir))
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = discovery.read_discovery(str(data_dir))
        if info and info.get("socket") and os.path.exists(info["socket"]):
            return info["socket"]
        time.sleep(0.02)
    raise AssertionError(f"no daemon announced itself in {info_path}")


def test_cli_and_python_client_from_a_nested_folder(proj):
    deep = proj / "src" / "deep"
    before = cli(deep, "runs")
    sock = discovery.default_socket(str(proj / "var" / "runtime"))
    assert before.returncode == 3
    assert f"no daemon is running for the project at {proj}" in before.stderr and sock in before.stderr
    assert f"`abstractruntime serve` in {proj}" in before.stderr
    with pytest.raises(DaemonNotRunning, match=f"project at {proj}: nothing answers at unix socket {sock}"):
        Client.discover(start=str(deep)).connect()

    daemon = subprocess.Popen([sys.executable, "-m", "abstractruntime", "serve"], cwd=deep, env=clean_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_socket(proj / "var" / "runtime")
        started = cli(deep, "start", "ask")
        assert started.returncode == 0 and "waiting (user): Continue?" in started.stdout, started.stderr
        status = cli(proj / "src", "status").stdout
        assert f"listening: {sock}" in status
        assert f"project: {proj}  (config: {proj}/abstractruntime.toml)" in status
        assert f"data: {proj}/var/runtime  (store: files)" in status
        assert "model: ollama/from-config" in status
        with Client.discover(start=str(deep)) as c:
            assert [r.workflow_id for r in c.runs(status="waiting").runs] == ["ask"]
            assert c.status().project_root == str(proj)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert daemon.returncode == 0


def test_outside_any_project_the_message_says_how_to_make_one(tmp_path):
    out = cli(tmp_path, "status")
    assert out.returncode == 3 and f"no abstractruntime project in {tmp_path} or any folder above it" in out.stderr
    assert "abstractruntime init" in out.stderr


def test_an_editor_started_daemon_has_the_projects_settings_and_model(proj):
    deep = proj / "src" / "deep"
    # What an editor runs, in whatever folder it was opened: the proxy starts the daemon.
    with Client.spawn([sys.executable, "-m", "abstractruntime", "lsp"], cwd=str(deep), env=clean_env()) as editor:
        st = editor.status()
        assert st.project_root == str(proj) and st.config_file == str(proj / "abstractruntime.toml")
        assert st.data_dir == str(proj / "var" / "runtime") and st.workflow_dirs == [str(WORKFLOWS)]
        assert st.model == "ollama/from-config"
        pid = st.pid
    # It outlives the editor and is the project's daemon for every other client.
    with Client.discover(start=str(proj)) as c:
        assert c.status().pid == pid
    stopped = cli(deep, "stop")
    assert stopped.returncode == 0 and str(pid) in stopped.stdout
