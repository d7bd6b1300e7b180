"""Runs people steer, through the real daemon and the real CLI: deadlines across a restart,
run-scoped events, choices, a run visible (and recovered) from its first instant, retry after a
hot-reloaded fix, fork from a middle record, paging, exit codes, `answer` at end of input,
completion of a partial run id, the daemon's log."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_fixture import ROOT, DaemonProcess

from abstractruntime.client import ProtocolError
from abstractruntime.client.connection import env_with_package
from abstractruntime.storage.ledger_chain import verify_ledger_chain

LIFE = '''
import os
from pathlib import Path

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
from abstractruntime.integrations.abstractcore import tool

HERE = Path(__file__).parent


@tool
def charge(amount: int) -> dict:
    """Charge a card: every call leaves a line in charges.log."""
    with open(HERE / "charges.log", "a") as f:
        f.write(f"{amount}\\n")
    return {"charged": amount}


def quote(run, ctx):
    calls = [{"name": "charge", "arguments": {"amount": run.vars.get("amount", 10)}, "call_id": "c1"}]
    return StepPlan(node_id="quote", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, "charge"), next_node="ask")


def ask(run, ctx):
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Ship it?"}, "ok"), next_node="book")


def book(run, ctx):
    BROKEN
    return StepPlan(node_id="book", complete_output={"ok": run.vars["ok"], "qty": run.vars.get("qty", 1)})


shop = WorkflowSpec(workflow_id="shop", entry_node="quote", nodes={"quote": quote, "ask": ask, "book": book})


def first(run, ctx):
    # A long first step: it waits for a file the test writes (never a fixed sleep).
    gate = HERE / "gate"
    deadline = __import__("time").time() + 60
    while not gate.exists() and __import__("time").time() < deadline:
        __import__("time").sleep(0.02)
    return StepPlan(node_id="first", complete_output={"passed": True})


gated = WorkflowSpec(workflow_id="gated", entry_node="first", nodes={"first": first})


def spawn(run, ctx):
    child = {"workflow_id": "greeting", "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, child, "child"), next_node="end")


parent = WorkflowSpec(
    workflow_id="parent",
    entry_node="spawn",
    nodes={"spawn": spawn, "end": lambda run, ctx: StepPlan(node_id="end", complete_output=run.vars["child"])},
)
'''


def write_workflows(folder: Path, broken: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "workflows" / "expense.py", folder / "expense.py")
    shutil.copy(ROOT / "examples" / "workflows" / "greeting.py", folder / "greeting.py")
    body = LIFE.replace("BROKEN", 'raise RuntimeError("booking API down")' if broken else "pass")
    (folder / "life.py").write_text(body)
    return folder


def cli(d: DaemonProcess, *args, stdin=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "abstractruntime", *args, "--socket", d.socket],
        cwd=d.tmp,
        env={**env_with_package(), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for(predicate, timeout=30.0, what="a condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def life(tmp_path):
    wf = write_workflows(tmp_path / "wf")
    d = DaemonProcess(tmp_path, "unix", workflows=wf).start()
    try:
        yield d
    finally:
        d.stop()


# -- deadlines ---------------------------------------------------------------------------------------


def test_a_deadline_fires_across_a_daemon_restart_and_a_late_answer_is_refused(life):
    d = life
    with d.client() as c:
        slow = c.start("expense", {"amount": 50, "manager_timeout_s": 1.5, "director_timeout_s": 3600}).state
        quick = c.start("expense", {"amount": 20, "manager_timeout_s": 3600}).state
        assert slow.waiting.until and slow.waiting.details["deadline"] == {"on_timeout": "escalate"}
        # Answered in time: the deadline never fires.
        assert c.resume(quick.run_id, {"text": "reject"}).output == {"status": "rejected", "escalated": False}
    d.stop()  # down before the deadline...
    wait_for(lambda: time.time() > _epoch(slow.waiting.until) + 0.2, what="the deadline to pass")
    d.start()  # ...up after it: the deadline is a durable timer like any other
    with d.client() as c:
        st = wait_for(lambda: (s := c.state(slow.run_id)).current_node == "escalate" and s, what="the escalation")
        assert st.status == "waiting" and st.waiting.prompt.startswith("Director")
        assert st.vars["decision"]["timed_out"] is True and st.vars["escalated"] is True
        # The manager's answer comes late: the wait it answered is over.
        late = cli(d, "resume", slow.run_id, "--text", "approve", "--wait-key", slow.waiting.wait_key)
        assert late.returncode == 1 and "waits on" in late.stderr
        records = c.ledger(slow.run_id).records
        assert [r.result for r in records if "timed_out" in (r.result or {})][0]["timed_out"]["to_node"] == "escalate"


def _epoch(iso):
    from abstractruntime.core.timeutil import iso_to_epoch

    return iso_to_epoch(iso)


# -- events and choices ---------------------------------------------------------------------------------


def test_a_run_scoped_event_from_the_cli(life):
    d = life
    rid = json.loads(cli(d, "start", "expense", "--vars", '{"amount": 5}', "--json").stdout)["run_id"]
    assert cli(d, "answer", rid, "--text", "approve").returncode == 4  # now it waits for its payment
    state = cli(d, "state", rid).stdout
    assert f"abstractruntime emit expense_paid --run {rid}" in state
    missing = cli(d, "emit", "expense_paid", "--scope", "run")
    assert missing.returncode == 2 and "--run RUN_ID" in missing.stderr
    with d.client() as c:  # over the protocol, the same mistake is invalid params, not a daemon bug
        with pytest.raises(ProtocolError) as e:
            c.emit_event("expense_paid", {}, scope="run")
        assert e.value.code == -32602 and "give run_id" in str(e.value)
    sent = cli(d, "emit", "expense_paid", "--run", rid, "--payload", '{"amount": 5}')
    assert sent.returncode == 0 and rid in sent.stdout
    assert json.loads(cli(d, "state", rid, "--json").stdout)["output"]["status"] == "paid"


def test_choices_are_refused_over_the_protocol_and_the_run_keeps_waiting(life):
    with life.client() as c:
        rid = c.start("expense", {"amount": 5}).run_id
        with pytest.raises(ProtocolError) as e:
            c.resume(rid, {"text": "maybe"})
        assert e.value.code == -32602 and "'approve', 'reject'" in str(e.value)
        assert e.value.raw_data["choices"] == ["approve", "reject"]
        assert c.state(rid).status == "waiting"


# -- the first instant -------------------------------------------------------------------------------------


def test_a_run_is_listed_during_its_first_step_and_recovered_after_a_sigkill(life):
    d = life
    out = cli(d, "start", "gated", "--no-wait")
    rid = out.stdout.strip()
    assert out.returncode == 0 and len(rid) == 36, out.stderr
    listed = cli(d, "runs", "--json")
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)["runs"]] == [(rid, "running")]
    d.kill(signal.SIGKILL)  # during its first node
    (d.workflows / "gate").write_text("open")
    d.start()
    with d.client() as c:
        st = wait_for(lambda: (s := c.state(rid)).status == "completed" and s, what="the recovered run")
        assert st.output == {"passed": True}


def test_ctrl_c_while_waiting_prints_the_run_id_and_how_to_follow_it(life):
    d = life
    proc = subprocess.Popen(
        [sys.executable, "-m", "abstractruntime", "execute", "gated", "--socket", d.socket],
        cwd=d.tmp,
        env=env_with_package(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with d.client() as c:
        wait_for(lambda: c.runs(status="running").runs, what="the run to be stored")
        rid = c.runs(status="running").runs[0].run_id
        wait_for(lambda: c.status().subscriptions >= 1, what="the CLI to follow the run")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and f"abstractruntime watch {rid}" in err
    (d.workflows / "gate").write_text("open")


# -- retry and fork ------------------------------------------------------------------------------------------


def test_retry_after_fixing_the_node_then_fork_from_a_middle_record(life):
    d = life
    out = cli(d, "execute", "shop", "--vars", '{"amount": 30}')
    assert out.returncode == 4 and "Ship it?" in out.stdout  # waiting for an answer
    rid = json.loads(cli(d, "runs", "--json").stdout)["runs"][0]["run_id"]
    failed = cli(d, "answer", rid, "--text", "yes")
    assert failed.returncode == 1 and "booking API down" in failed.stdout
    described = cli(d, "describe", rid).stdout
    assert "RuntimeError: booking API down" in described and "Traceback" in described
    assert "booking API down" in cli(d, "runs").stdout
    assert "run " + rid + " (shop) failed at node book: node 'book' raised RuntimeError: booking API down" in d.log.read_text()

    with d.client() as c:
        old = next(w.version for w in c.workflows() if w.workflow_id == "shop")
        write_workflows(d.workflows, broken=False)  # the fix; the daemon reloads it
        wait_for(lambda: next(w.version for w in c.workflows() if w.workflow_id == "shop") != old, what="the reload")
    retried = cli(d, "retry", rid, "--wait")
    assert retried.returncode == 0 and "completed" in retried.stdout, retried.stderr
    charges = (d.workflows / "charges.log").read_text().split()
    assert charges == ["30"]  # charged once, though the run failed and was retried

    with d.client() as c:
        source = c.ledger(rid, limit=1000).records
        asked = next(r for r in source if r.status == "waiting")  # after the quote, before the answer
        forked = cli(d, "fork", rid, "--seq", str(asked.seq), "--vars", '{"qty": 3}', "--wait", "--json")
        assert forked.returncode == 4, forked.stderr  # it asks again
        fid = json.loads(forked.stdout)["run_id"]
        assert c.state(fid).waiting.prompt == "Ship it?" and c.state(fid).vars["charge"]
        done = cli(d, "answer", fid, "--text", "no")
        assert done.returncode == 0 and json.loads(cli(d, "state", fid, "--json").stdout)["output"] == {
            "ok": {"text": "no"},
            "qty": 3,
        }
        records = [r.model_dump(mode="json") for r in c.ledger(fid, limit=1000).records]
        assert verify_ledger_chain(records)["ok"]
        origin = records[0]["result"]["forked"]
        assert (origin["run_id"], origin["seq"], origin["record_hash"]) == (rid, asked.seq, asked.record_hash)
        assert f"from run {rid} after record {asked.seq}" in cli(d, "describe", fid).stdout
    assert (d.workflows / "charges.log").read_text().split() == ["30"]  # the recorded charge was not run again


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
        ([sys.executable, "-m", "abstractruntime", "start", "greeting", "--vars", "[1]", "--socket", d.socket], 2, "JSON object"),
        ([sys.executable, "-m", "abstractruntime", "runs", "--socket", str(tmp_path / "nowhere.sock")], 3, "no daemon answers"),
        ([sys.executable, "-m", "abstractruntime", "retry", "nope", "--socket", d.socket], 1, "no run 'nope'"),
        ([sys.executable, "-m", "abstractruntime", "fork", "x", "--vars", "{", "--socket", d.socket], 2, "not valid JSON"),
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
    assert moved.returncode == 0 and f"moved run {rid} from node greet" in moved.stdout and "to node hello" in moved.stdout
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


def test_a_second_sigterm_stops_at_once_and_the_run_is_recovered(life):
    d = life
    rid = cli(d, "start", "gated", "--no-wait").stdout.strip()
    with d.client() as c:
        wait_for(lambda: c.status().runs.get("running") == 1, what="the run to be running")
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "finishing 1 in-flight step" in d.log.read_text(), what="the stop message")
    assert d.proc.poll() is None  # it waits for the step...
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 1  # ...until told again
    assert "stopping at once" in d.log.read_text()
    (d.workflows / "gate").write_text("open")
    d.start()
    with d.client() as c:
        assert wait_for(lambda: c.state(rid).status == "completed", what="the recovered run")
