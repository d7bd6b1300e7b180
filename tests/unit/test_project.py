"""The project config: where it is found, what wins (flags > environment > file > defaults), what
a bad value says, and `abstractruntime init`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from abstractruntime import project
from abstractruntime.project import ConfigError
from conftest import ROOT


def cli(cwd, *args, env=None):
    e = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for k in list(e):
        if k.startswith("ABSTRACTRUNTIME_"):
            del e[k]
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "abstractruntime", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=60
    )


def test_the_root_is_found_walking_up_like_git(tmp_path):
    (tmp_path / "abstractruntime.toml").write_text('store = "sqlite"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    p = project.load(start=str(deep), environ={})
    assert p.root == str(tmp_path) and p.config_file == str(tmp_path / "abstractruntime.toml")
    assert p.store == "sqlite" and p.source("store") == str(tmp_path / "abstractruntime.toml")
    # Paths default to the root, not to where the command ran.
    assert p.data_dir == str(tmp_path / ".abstractruntime")
    assert p.workflow_dirs == [str(tmp_path / "workflows")]


def test_pyproject_table_and_a_bare_data_folder_mark_a_root(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.abstractruntime]\nworkflows = ["flows"]\n')
    p = project.load(start=str(tmp_path), environ={})
    assert p.config_file == str(tmp_path / "pyproject.toml") and p.workflow_dirs == [str(tmp_path / "flows")]
    other = tmp_path / "other"
    (other / ".abstractruntime").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "y"\n')  # no table: not a marker
    (other / "sub").mkdir()
    p = project.load(start=str(other / "sub"), environ={})
    assert p.root == str(other) and p.config_file is None


def test_no_project_anywhere_is_the_working_folder(tmp_path):
    root, cfg, found = project.find_root(str(tmp_path))
    assert (root, cfg, found) == (str(tmp_path), None, False)


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path):
    (tmp_path / "abstractruntime.toml").write_text(
        'store = "sqlite"\nlog_level = "warning"\ndata = "var/data"\n'
        '[model]\nprovider = "ollama"\nmodel = "from-file"\n[model.options]\ntemperature = 0\n'
    )
    env = {"ABSTRACTRUNTIME_STORE": "memory", "ABSTRACTRUNTIME_LLM_MODEL": "from-env"}
    p = project.load(start=str(tmp_path), environ=env, flags={"store": "files", "model.options": {"seed": 1}})
    assert (p.store, p.source("store")) == ("files", "flag --store")
    assert (p.get("model.model"), p.source("model.model")) == ("from-env", "env ABSTRACTRUNTIME_LLM_MODEL")
    assert (p.log_level, p.source("log_level")) == ("warning", str(tmp_path / "abstractruntime.toml"))
    assert p.data_dir == str(tmp_path / "var" / "data")
    assert (p.get("external"), p.source("external")) == ([], "default")
    # A table merges: the flag's options win, the file's stay.
    assert p.get("model.options") == {"temperature": 0, "seed": 1}
    assert p.model(environ={}) == {"provider": "ollama", "model": "from-env", "options": {"temperature": 0, "seed": 1}}


def test_env_paths_are_relative_to_the_working_folder_and_lists_split(tmp_path):
    (tmp_path / "abstractruntime.toml").write_text("")
    env = {"ABSTRACTRUNTIME_WORKFLOWS": f"a{os.pathsep}/abs/b", "ABSTRACTRUNTIME_EXTERNAL": "tool_calls, llm_call"}
    p = project.load(start=str(tmp_path), environ=env)
    assert p.workflow_dirs == [str(tmp_path / "a"), "/abs/b"]
    assert p.external == ["tool_calls", "llm_call"]


def test_the_api_key_comes_from_the_named_variable_only(tmp_path):
    (tmp_path / "abstractruntime.toml").write_text(
        '[model]\nprovider = "openai"\nmodel = "m"\napi_key_env = "MY_KEY"\nbase_url = "http://x/v1"\n'
    )
    p = project.load(start=str(tmp_path), environ={})
    assert p.model(environ={"MY_KEY": "sk-secret"})["options"] == {"base_url": "http://x/v1", "api_key": "sk-secret"}
    with pytest.raises(ConfigError, match="names the environment variable MY_KEY, which is not set"):
        p.model(environ={})


@pytest.mark.parametrize(
    "text, message",
    [
        ('store = "postgresql"\n', "key 'store': expected one of files, sqlite, memory, postgres, got 'postgresql'"),
        ('workflows = "flows"\n', "key 'workflows': expected a list of strings, got 'flows'"),
        ('colour = "blue"\n', "unknown key 'colour' (known keys: workflows, data"),
        ("model = 3\n", "key 'model': expected a table ([model])"),
        ("[model]\ntimeout = -1\n", "key 'model.timeout': expected a positive number, got -1"),
        ('store = "files\n', "not valid TOML"),
    ],
)
def test_a_bad_config_names_the_file_the_key_and_what_was_expected(tmp_path, text, message):
    cfg = tmp_path / "abstractruntime.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        project.load(start=str(tmp_path), environ={})
    assert str(cfg) in str(e.value) and message in str(e.value)


def test_a_model_needs_provider_and_model(tmp_path):
    (tmp_path / "abstractruntime.toml").write_text('[model]\nmodel = "qwen3:4b"\n')
    with pytest.raises(ConfigError, match="model.provider is not set"):
        project.load(start=str(tmp_path), environ={}).model(environ={})


def test_a_bad_env_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="environment variable ABSTRACTRUNTIME_LLM_TIMEOUT: key 'model.timeout'"):
        project.load(start=str(tmp_path), environ={"ABSTRACTRUNTIME_LLM_TIMEOUT": "soon"})


def test_config_command_prints_each_setting_and_its_source(tmp_path):
    (tmp_path / "abstractruntime.toml").write_text('store = "sqlite"\n')
    (tmp_path / "deep").mkdir()
    out = cli(tmp_path / "deep", "config", env={"ABSTRACTRUNTIME_LOG_LEVEL": "debug"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"project root: {tmp_path}"
    assert any(
        line.split()[:2] == ["store", "sqlite"] and line.endswith(f"({tmp_path}/abstractruntime.toml)")
        for line in lines
    )
    assert any(
        line.split()[:2] == ["log_level", "debug"] and line.endswith("(env ABSTRACTRUNTIME_LOG_LEVEL)")
        for line in lines
    )
    assert any(
        line.split()[:2] == ["data", f"{tmp_path}/.abstractruntime"] and line.endswith("(default)") for line in lines
    )
    bad = cli(tmp_path, "config", env={"ABSTRACTRUNTIME_STORE": "nope"})
    assert bad.returncode == 2 and "ABSTRACTRUNTIME_STORE: key 'store': expected one of" in bad.stderr


def test_init_scaffolds_a_project_that_serves_and_refuses_a_second_time(tmp_path):
    (tmp_path / ".gitignore").write_text("*.pyc")  # no newline at the end: the line goes on its own
    out = cli(tmp_path, "init")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "abstractruntime.toml").is_file() and (tmp_path / "workflows" / "hello.py").is_file()
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n.abstractruntime/\n"
    p = project.load(start=str(tmp_path), environ={})
    assert p.workflow_dirs == [str(tmp_path / "workflows")] and p.store == "files" and p.model(environ={}) is None
    # The example is a real workflow: the daemon's loader serves it.
    from abstractruntime.daemon.loader import load_module

    specs, _ = load_module(str(tmp_path / "workflows" / "hello.py"))
    assert [s.workflow_id for s in specs] == ["hello"]
    again = cli(tmp_path, "init")
    assert again.returncode == 1 and "already exists; nothing was changed" in again.stderr
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n.abstractruntime/\n"
