"""The CLI for steering runs, against the real daemon: paging, exit codes, `answer` at end of
input, completion of a partial run id, no tracebacks, help, stranded and child runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from daemon_fixture import wait_for
from steering_fixture import cli, serve_life

from abstractruntime.client.connection import env_with_package


@pytest.fixture
def life(tmp_path):
    """A daemon serving the steering workflows (tests/e2e/steering_fixture.py)."""
    yield from serve_life(tmp_path)


# -- the CLI ---------------------------------------------------------------------------------------------------


def test_runs_pages_newest_first_across_300_runs(life):
    with life.client() as c:
        ids = [c.start("greeting", wait=False).run_id for _ in range(300)]
    seen, cursor, footers = [], None, []
    while True:
        out = cli(life, "runs", "--limit", "120", *(["--cursor", cursor] if cursor else []))
        lines = out.stdout.splitlines()
        assert lines[0].startswith("RUN ")
        rows = [line.split()[0] for line in lines[1:] if not line.startswith(("RUN ", "more")) and "more —" not in line]
        seen += rows
        footer = [line for line in lines if "more — next: --cursor" in line]
        if not footer:
            break
        footers.append(footer[0].split(" more")[0])
        cursor = footer[0].rsplit(" ", 1)[1]
    assert footers == ["180", "60"]
    assert seen == ids[::-1]  # every run once, newest first


def test_exit_codes_of_execute_and_answer_and_answer_at_end_of_input(life):
    d = life
    waiting = cli(d, "execute", "greeting")
    assert waiting.returncode == 4 and "What is your name?" in waiting.stdout
    rid = json.loads(cli(d, "runs", "--json", "--limit", "1").stdout)["runs"][0]["run_id"]
    eof = cli(d, "answer", rid, stdin="")
    assert eof.returncode == 1 and "end of input" in eof.stderr and "nothing was sent" in eof.stderr
    assert json.loads(cli(d, "state", rid, "--json").stdout)["status"] == "waiting"  # not answered with ""
    ok = cli(d, "answer", rid, stdin="Ada\n")
    assert ok.returncode == 0 and "Hello, Ada" in ok.stdout

    cli(d, "start", "expense", "--vars", '{"amount": 1}')
    cli(d, "start", "expense", "--vars", '{"amount": 2}')
    # The picker: a letter and a number out of range ask again; then a choice by its number.
    picked = cli(d, "answer", stdin="abc\n99\n1\nmaybe\n2\n")
    assert picked.stderr.count("please enter a number from 1 to 2") == 2, picked.stderr
    assert "please answer one of: approve, reject" in picked.stderr
    assert picked.returncode == 0 and "rejected" in picked.stdout  # choice 2, reject: the run completes

    failing = cli(d, "execute", "shop")
    assert failing.returncode == 4
    fid = json.loads(cli(d, "runs", "--json", "--limit", "1").stdout)["runs"][0]["run_id"]
    assert cli(d, "answer", fid, "--text", "y").returncode == 1  # its next node fails


def test_completion_of_a_partial_run_id(life, tmp_path):
    d = life
    with d.client() as c:
        ids = [c.start("greeting", wait=False).run_id for _ in range(3)]
    target = ids[1]
    line = f"abstractruntime state --socket {d.socket} {target[:6]}"
    out = tmp_path / "completions"
    res = cli(
        d,
        env={
            "_ARGCOMPLETE": "1",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        },
    )
    assert res.returncode == 0, res.stderr
    candidates = [x.strip() for x in out.read_text().split("\v")]
    assert target in candidates and all(x.startswith(target[:6]) for x in candidates if x)
    for shell in ("bash", "zsh"):
        code = subprocess.run(
            [sys.executable, "-m", "abstractruntime", "completion", shell],
            env=env_with_package(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert code.returncode == 0 and "_ARGCOMPLETE" in code.stdout and "abstractruntime" in code.stdout


def test_no_traceback_for_user_mistakes(life, tmp_path):
    d = life
    (tmp_path / "afile").write_text("x")
    cases = [
        ([sys.executable, "-m", "abstractruntime", "serve", "--data", str(tmp_path / "afile")], 2, "data folder"),
        ([sys.executable, "-m", "abstractruntime", "runs", "--limit", "0", "--socket", d.socket], 2, "--limit"),
        (
            [sys.executable, "-m", "abstractruntime", "start", "greeting", "--vars", "[1]", "--socket", d.socket],
            2,
            "JSON object",
        ),
        (
            [sys.executable, "-m", "abstractruntime", "runs", "--socket", str(tmp_path / "nowhere.sock")],
            3,
            "no daemon answers",
        ),
        ([sys.executable, "-m", "abstractruntime", "retry", "nope", "--socket", d.socket], 1, "no run 'nope'"),
        (
            [sys.executable, "-m", "abstractruntime", "fork", "x", "--vars", "{", "--socket", d.socket],
            2,
            "not valid JSON",
        ),
    ]
    for argv, code, words in cases:
        p = subprocess.run(argv, env=env_with_package(), capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert p.returncode == code and words in p.stderr and "Traceback" not in p.stderr, (argv, p.stderr)
    # A closed pipe: quiet.
    with d.client() as c:
        rid = c.start("greeting").run_id
    shell = f"{sys.executable} -m abstractruntime describe {rid} --socket {d.socket} | head -1"
    p = subprocess.run(shell, shell=True, env=env_with_package(), capture_output=True, text=True, timeout=60)
    assert p.stdout.startswith("run") and p.stderr == ""


def test_sigterm_says_what_it_waits_for(life):
    d = life
    d.stop()
    assert "stopping: finishing 0 in-flight steps" in d.log.read_text()


def test_help_has_an_example_for_every_command_and_a_text_for_every_flag():
    from abstractruntime.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert p.epilog and "examples:" in p.epilog and f"abstractruntime {name}" in p.epilog or name == "init", name
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_a_stranded_run_is_marked_reported_before_asking_and_migrate_says_what_moved(life):
    d = life
    with d.client() as c:
        rid = c.start("greeting").run_id
        old = next(w.version for w in c.workflows() if w.workflow_id == "greeting")
        src = d.workflows / "greeting.py"
        src.write_text(src.read_text().replace('"greet"', '"hello"'))  # the node the run resumes at is renamed
        wait_for(lambda: next(w.version for w in c.workflows() if w.workflow_id == "greeting") != old, what="reload")
    listed = cli(d, "runs").stdout
    assert "waiting (stranded)" in listed and f"abstractruntime migrate {rid}" in listed
    asked = cli(d, "answer", rid, stdin="Ada\n")
    assert asked.returncode == 1 and "stranded" in asked.stderr and "What is your name?" not in asked.stdout
    moved = cli(d, "migrate", rid, "--to-node", "hello")
    assert (
        moved.returncode == 0 and f"moved run {rid} from node greet" in moved.stdout and "to node hello" in moved.stdout
    )
    assert cli(d, "answer", rid, stdin="Ada\n").returncode == 0


def test_runs_since_and_a_child_run_marked(life):
    d = life
    with d.client() as c:
        parent = c.start("parent").run_id
        child = c.runs(parent_run_id=parent).runs[0].run_id
    listed = cli(d, "runs", "--since", "1h").stdout
    assert f"greeting (child of {parent[:8]})" in listed and "a child run" in listed
    described = cli(d, "describe", parent).stdout
    assert f"its child run {child} (greeting)" in described and "children" in described
    assert cli(d, "runs", "--since", "2999-01-01T00:00:00+00:00").stdout.strip() == "no runs match"
