"""Hot reload with a real daemon subprocess and real file edits in a temporary workflow folder.

Each test edits a workflow module the way an editor saves it, waits for the daemon's
`workflows/changed` notification, and checks what a user of the daemon sees: the next step
runs the new code, a broken edit keeps the old version serving and reports its line, a removed
node strands the runs that need it (and migrate or restoring the node frees them), and the
daemon's pid and its clients' connections survive all of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from daemon_fixture import daemon

from abstractruntime.client.connection import env_with_package
from abstractruntime.core.errors import InvalidWorkflowError, RunStrandedError, WorkflowNotFoundError

HEADER = """\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def ask(run, ctx):
    return StepPlan(
        node_id="ask",
        effect=Effect(EffectType.ASK_USER, {"prompt": "Ship it?", "choices": ["yes", "no"]}, result_key="answer"),
        next_node=NEXT,
    )
"""


def module(code: str = "v1", *, next_node: str = "finish", with_finish: bool = True, extra: str = "") -> str:
    """A workflow `dev`: ask, then `finish` (or another node) reports `code`."""
    body = HEADER.replace("NEXT", repr(next_node))
    nodes = {"ask": "ask"}
    if with_finish:
        body += textwrap.dedent(f"""

            def finish(run, ctx):
                return StepPlan(node_id="finish", complete_output={{"code": {code!r}, "answer": run.vars["answer"]["text"]}})
            """)
        nodes["finish"] = "finish"
    if next_node != "finish":
        body += textwrap.dedent(f"""

            def {next_node}(run, ctx):
                return StepPlan(node_id={next_node!r}, complete_output={{"code": {code!r}, "via": {next_node!r}}})
            """)
        nodes[next_node] = next_node
    body += extra
    spec = ", ".join(f"{k!r}: {v}" for k, v in nodes.items())
    body += f"\n\ndev = WorkflowSpec(workflow_id=\"dev\", entry_node=\"ask\", nodes={{{spec}}})\n"
    return body


def save(path: Path, text: str) -> None:
    """Write like an editor with atomic saves: a temp file renamed over the module."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def wf_dir(tmp_path):
    d = tmp_path / "workflows"
    d.mkdir()
    (d / "dev.py").write_text(module("v1"))
    return d


@pytest.fixture
def d(tmp_path, wf_dir):
    with daemon(tmp_path, "unix", workflows=wf_dir) as proc:
        yield proc


def version_of(c, workflow_id="dev"):
    return {w.workflow_id: w for w in c.workflows_list().workflows}[workflow_id]


def next_change(c, *, want=lambda ch: True, timeout=15.0):
    """The next `workflows/changed` that satisfies `want` (editors may trigger extra ones)."""
    while True:
        ch = c.next_workflow_change(timeout=timeout)
        if want(ch):
            return ch


def test_an_edit_changes_the_next_step_of_a_waiting_run(d, wf_dir):
    with d.client() as c, d.client() as bystander:
        pid = c.status().pid
        v1 = version_of(c).version
        run = c.start("dev").run_id
        assert c.state(run).status == "waiting"

        save(wf_dir / "dev.py", module("v2"))
        ch = next_change(c, want=lambda ch: any(x.workflow_id == "dev" for x in ch.changed))
        [change] = ch.changed
        assert change.old_version == v1 and change.new_version not in (None, v1)
        assert change.file == str(wf_dir / "dev.py") and ch.stranded == [] and ch.load_errors == []
        v2 = change.new_version
        assert version_of(c).version == v2

        st = c.resume(run, {"text": "yes"})
        assert st.status == "completed" and st.output == {"code": "v2", "answer": "yes"}
        assert st.workflow_version == v1 and st.last_version == v2
        versions = [r.workflow_version for r in c.ledger(run).records]
        assert versions[0] == v1 and versions[-1] == v2, versions
        # The other client heard the same notification and is still connected.
        assert bystander.next_workflow_change(timeout=5).changed[0].new_version == v2
        assert bystander.status().pid == pid == c.status().pid


def test_a_broken_edit_keeps_the_old_version_serving_until_fixed(d, wf_dir):
    with d.client() as c:
        pid = c.status().pid
        v1 = version_of(c).version
        waiting = c.start("dev").run_id

        broken = module("v2").replace('    return StepPlan(\n        node_id="ask"', '    return StepPlan(\n        node_id="ask" ???', 1)
        bad_line = next(i for i, line in enumerate(broken.splitlines(), 1) if "???" in line)
        save(wf_dir / "dev.py", broken)
        ch = next_change(c, want=lambda ch: bool(ch.new_errors))
        [err] = ch.new_errors
        assert err.file == str(wf_dir / "dev.py") and err.line == bad_line and "SyntaxError" in err.message
        assert ch.changed == [] and ch.load_errors == [err]
        info = version_of(c)
        assert info.version == v1 and info.load_error == err
        # The old version keeps serving: new runs and resumes run v1's code.
        assert c.resume(waiting, {"text": "no"}).output == {"code": "v1", "answer": "no"}

        # An exception while the module runs is reported at its line too.
        raising = module("v2", extra="\n\nraise RuntimeError('config missing')\n")
        raise_line = len(raising.split("raise RuntimeError")[0].splitlines()) + 1
        save(wf_dir / "dev.py", raising)
        ch = next_change(c, want=lambda ch: bool(ch.new_errors))
        assert ch.new_errors[0].line == raise_line and ch.new_errors[0].message == "RuntimeError: config missing"
        # An invalid spec (its entry node is not a node) fails the whole module the same way.
        save(wf_dir / "dev.py", module("v2").replace('entry_node="ask"', 'entry_node="nope"'))
        ch = next_change(c, want=lambda ch: bool(ch.new_errors))
        assert "nope" in ch.new_errors[0].message and version_of(c).version == v1

        save(wf_dir / "dev.py", module("v3"))
        ch = next_change(c, want=lambda ch: bool(ch.changed))
        assert ch.changed[0].old_version == v1 and ch.load_errors == []
        assert version_of(c).load_error is None
        run = c.start("dev").run_id
        assert c.resume(run, {"text": "yes"}).output == {"code": "v3", "answer": "yes"}
        assert c.status().pid == pid


def test_removing_a_node_strands_its_waiting_runs_until_migrated_or_restored(d, wf_dir):
    with d.client() as c:
        pid = c.status().pid
        v1 = version_of(c).version
        a, b, done = c.start("dev").run_id, c.start("dev").run_id, c.start("dev").run_id
        c.resume(done, {"text": "yes"})

        # The new version has no `finish`: ask now leads to `wrap`. Runs waiting in `ask`
        # resume at `finish` (their wait recorded it), so both are stranded.
        save(wf_dir / "dev.py", module("v2", next_node="wrap", with_finish=False))
        ch = next_change(c, want=lambda ch: bool(ch.changed))
        v2 = ch.changed[0].new_version
        stranded = {s.run_id: s for s in ch.stranded}
        assert set(stranded) == {a, b}
        assert stranded[a].node_id == "finish" and stranded[a].reason == "node_missing"
        assert stranded[a].run_version == v1 and stranded[a].workflow_version == v2
        assert version_of(c).stranded == 2

        with pytest.raises(RunStrandedError) as e:
            c.resume(a, {"text": "yes"})
        msg = str(e.value)
        assert "'finish'" in msg and v1 in msg and v2 in msg, msg
        st = c.state(a)
        assert st.status == "waiting" and st.waiting.resume_to_node == "finish"  # nothing lost

        with pytest.raises(InvalidWorkflowError, match="has no node 'nowhere'"):
            c.migrate(a, "nowhere")
        moved = c.migrate(a, "wrap")
        assert moved.status == "waiting" and moved.waiting.resume_to_node == "wrap" and moved.last_version == v2
        assert c.ledger(a).records[-1].result["migrated"] == {
            "from_node": "finish", "to_node": "wrap", "from_version": v1, "to_version": v2,
        }
        assert c.resume(a, {"text": "yes"}).output == {"code": "v2", "via": "wrap"}
        assert version_of(c).stranded == 1

        # Restoring the node frees the other run, which resumes on the newest code.
        save(wf_dir / "dev.py", module("v3", next_node="wrap"))
        ch = next_change(c, want=lambda ch: bool(ch.changed))
        assert ch.stranded == [] and version_of(c).stranded == 0
        assert c.resume(b, {"text": "no"}).output == {"code": "v3", "answer": "no"}
        assert c.status().pid == pid


def test_a_stranded_timer_waits_and_resumes_once_its_node_is_back(d, wf_dir):
    timer = textwrap.dedent("""
        from datetime import datetime, timedelta, timezone
        from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

        def nap(run, ctx):
            until = (datetime.now(timezone.utc) + timedelta(seconds=1.5)).isoformat()
            return StepPlan(node_id="nap", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node=NEXT)

        def wake(run, ctx):
            return StepPlan(node_id="wake", complete_output={"woke": VERSION})

        def other(run, ctx):
            return StepPlan(node_id="other", complete_output={"other": True})

        napper = WorkflowSpec(workflow_id="napper", entry_node="nap", nodes=NODES)
        """)

    def napper(version, nodes):
        return timer.replace("NEXT", '"wake"').replace("VERSION", repr(version)).replace("NODES", nodes)

    with d.client() as c:
        save(wf_dir / "napper.py", napper("v1", '{"nap": nap, "wake": wake}'))
        next_change(c, want=lambda ch: any(x.workflow_id == "napper" for x in ch.changed))
        run = c.start("napper").run_id
        save(wf_dir / "napper.py", napper("v2", '{"nap": nap, "other": other}'))
        ch = next_change(c, want=lambda ch: bool(ch.changed))
        assert [s.run_id for s in ch.stranded] == [run]
        cycles = c.status().scheduler["poll_cycles"]
        time.sleep(2.5)  # the timer falls due while its node is missing: the run keeps waiting
        st = c.state(run)
        assert st.status == "waiting" and st.error is None
        # ... parked, not retried in a loop (the scheduler wakes a few times a second at most).
        assert c.status().scheduler["poll_cycles"] - cycles < 20
        save(wf_dir / "napper.py", napper("v3", '{"nap": nap, "wake": wake, "other": other}'))
        next_change(c, want=lambda ch: bool(ch.changed))
        deadline = time.time() + 10
        while c.state(run).status == "waiting" and time.time() < deadline:
            time.sleep(0.05)
        assert c.state(run).output == {"woke": "v3"}


def test_deleting_a_file_unregisters_its_workflows_and_reports_their_runs(d, wf_dir):
    with d.client() as c:
        run = c.start("dev").run_id
        (wf_dir / "dev.py").unlink()
        ch = next_change(c, want=lambda ch: bool(ch.changed))
        assert ch.changed[0].workflow_id == "dev" and ch.changed[0].new_version is None
        assert [(s.run_id, s.reason) for s in ch.stranded] == [(run, "workflow_removed")]
        assert "dev" not in {w.workflow_id for w in c.workflows()}
        assert c.state(run).status == "waiting"  # the run stays in the store
        with pytest.raises(WorkflowNotFoundError):
            c.start("dev")
        (wf_dir / "dev.py").write_text(module("v9"))
        next_change(c, want=lambda ch: bool(ch.changed))
        assert c.resume(run, {"text": "yes"}).output == {"code": "v9", "answer": "yes"}


def test_two_files_defining_one_workflow_is_an_error_naming_both(d, wf_dir):
    with d.client() as c:
        save(wf_dir / "zz_copy.py", module("copy"))
        ch = next_change(c, want=lambda ch: bool(ch.new_errors))
        msg = ch.new_errors[0].message
        assert str(wf_dir / "dev.py") in msg and str(wf_dir / "zz_copy.py") in msg
        assert version_of(c).source == str(wf_dir / "dev.py")
        # Once the first file lets go of the id, the second one (unchanged) takes it.
        (wf_dir / "dev.py").unlink()
        ch = next_change(c, want=lambda ch: any(x.new_version for x in ch.changed))
        assert version_of(c).source == str(wf_dir / "zz_copy.py") and ch.load_errors == []


def test_reload_on_request_without_watching(tmp_path, wf_dir):
    with daemon(tmp_path, "unix", workflows=wf_dir, extra=["--no-watch"]) as proc:
        with proc.client() as c:
            v1 = version_of(c).version
            save(wf_dir / "dev.py", module("v2"))
            assert version_of(c).version == v1  # nothing watches
            report = c.reload_workflows()
            assert report.changed[0].old_version == v1 and version_of(c).version == report.changed[0].new_version
            assert c.next_workflow_change(timeout=5).changed == report.changed  # clients still hear of it
            assert c.reload_workflows().changed == []  # nothing changed since
        out = subprocess.run(
            [sys.executable, "-m", "abstractruntime", "reload", "--socket", proc.socket, "--json"],
            env=env_with_package(), capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["changed"] == []


def test_saving_a_helper_reloads_the_workflows_that_import_it(tmp_path):
    wf = tmp_path / "workflows"
    wf.mkdir()
    save(wf / "_policy.py", "LIMIT = 100\n")
    uses = textwrap.dedent("""
        from _policy import LIMIT
        from abstractruntime import StepPlan, WorkflowSpec

        def go(run, ctx):
            return StepPlan(node_id="go", complete_output={{"limit": LIMIT}})

        {name} = WorkflowSpec(workflow_id={name!r}, entry_node="go", nodes={{"go": go}})
        """)
    save(wf / "a.py", uses.format(name="a"))
    save(wf / "b.py", uses.format(name="b"))
    with daemon(tmp_path, "unix", workflows=wf) as d, d.client() as c:
        assert c.start("a").state.output == {"limit": 100}
        save(wf / "_policy.py", "LIMIT = 250\n")
        ch = next_change(c, want=lambda ch: bool(ch.changed))
        assert sorted(x.workflow_id for x in ch.changed) == ["a", "b"]
        assert c.start("b").state.output == {"limit": 250}
        save(wf / "_policy.py", "LIMIT = (\n")
        ch = next_change(c, want=lambda ch: bool(ch.new_errors))
        assert {(e.file, e.line, e.module) for e in ch.new_errors} == {
            (str(wf / "_policy.py"), 1, str(wf / "a.py")), (str(wf / "_policy.py"), 1, str(wf / "b.py"))}
        assert c.start("a").state.output == {"limit": 250}  # the last good version serves on


def test_an_in_place_save_that_leaves_the_file_empty_for_a_moment_unregisters_nothing(tmp_path, wf_dir):
    # Editors that write in place truncate the file first; the daemon may see it empty. (A
    # 10 s grace period here: the 300 ms the test holds the file empty never come near it.)
    with daemon(tmp_path, "unix", workflows=wf_dir, extra=["--reload-grace", "10"]) as d, d.client() as c:
        path = wf_dir / "dev.py"
        text = module("v2")
        failures = []
        stop = threading.Event()

        def keep_starting():
            with d.client() as c2:
                while not stop.is_set():
                    try:
                        c2.start("dev")
                    except WorkflowNotFoundError as e:
                        failures.append(e)

        t = threading.Thread(target=keep_starting)
        t.start()
        try:
            with open(path, "w"):
                pass  # truncated: empty on disk
            time.sleep(0.3)  # the file stays empty for 300 ms, ten times the watcher's quiet window
            path.write_text(text)
            ch = next_change(c, want=lambda ch: any(x.workflow_id == "dev" for x in ch.changed))
            assert ch.changed[0].new_version is not None  # replaced, never removed
        finally:
            stop.set()
            t.join()
        assert failures == []
        assert c.start("dev").state.status == "waiting"
