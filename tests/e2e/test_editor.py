"""Editors over standard LSP, through `abstractruntime lsp`, against a real daemon.

The editors here are raw LSP connections speaking what an editor sends (text document
capabilities, `answerPrompts`), each through its own `abstractruntime lsp` process; the script is
the Python client. Neovim itself drives the plugin in test_neovim.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_fixture import WORKFLOWS, daemon

from abstractruntime.client import Client
from abstractruntime.client.aio import AsyncClient, Target
from abstractruntime.client.connection import Connection, env_with_package
from abstractruntime.core.errors import RunFinishedError, RunNotFoundError
from abstractruntime.protocol import discovery

FLOWS = WORKFLOWS / "flows.py"
EDITOR_CAPS = {
    "textDocument": {"codeLens": {}, "synchronization": {}},
    "workspace": {"codeLens": {"refreshSupport": True}},
    "window": {"workDoneProgress": True},
}


class Editor:
    """One editor: an `abstractruntime lsp` process and what the daemon sent it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.prompts: asyncio.Queue = asyncio.Queue()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.withdrawn: asyncio.Queue = asyncio.Queue()
        self.diagnostics: asyncio.Queue = asyncio.Queue()
        self.refreshes = 0
        conn.on_request("window/showMessageRequest", self._prompt)
        conn.on_request("workspace/codeLens/refresh", self._refresh)
        conn.on_notification("window/showMessage", self.messages.put_nowait)
        conn.on_notification("abstractruntime/promptWithdrawn", self.withdrawn.put_nowait)
        conn.on_notification("textDocument/publishDiagnostics", self.diagnostics.put_nowait)

    def _prompt(self, params):
        answer = asyncio.get_running_loop().create_future()
        self.prompts.put_nowait((params, answer))
        return answer  # the "person" answers later, by setting it

    def _refresh(self, _params):
        self.refreshes += 1
        return None

    @classmethod
    async def open(cls, data: Path, cwd: Path, prompts: bool = True) -> Editor:
        conn = await Connection.spawn(
            [sys.executable, "-m", "abstractruntime", "lsp", "--data", str(data)], env=env_with_package(), cwd=str(cwd)
        )
        ed = cls(conn)
        await conn.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": cwd.as_uri(),
                "capabilities": EDITOR_CAPS,
                "initializationOptions": {"answerPrompts": prompts},
            },
            timeout=30,
        )
        conn.notify("initialized", {})
        return ed

    async def lenses(self, path: Path):
        got = await self.conn.request("textDocument/codeLens", {"textDocument": {"uri": path.as_uri()}}, timeout=10)
        return {(lens["range"]["start"]["line"], lens["command"]["title"]) for lens in got}

    async def command(self, name: str, *args):
        return await self.conn.request("workspace/executeCommand", {"command": name, "arguments": list(args)}, timeout=30)

    async def close(self) -> None:
        try:
            await self.conn.request("shutdown", None, timeout=5)
            self.conn.notify("exit", None)
        finally:
            await self.conn.close()


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines()) if text in line)


async def next_item(q: asyncio.Queue, timeout: float = 10.0):
    return await asyncio.wait_for(q.get(), timeout)


@pytest.fixture
def project(tmp_path):
    wf = tmp_path / "workflows"
    wf.mkdir()
    shutil.copy(FLOWS, wf / "flows.py")
    return tmp_path


def test_two_editors_and_a_script_first_answer_wins(project):
    flows = project / "workflows" / "flows.py"
    ask_line = line_of(flows, "def _ask(")
    spec_line = line_of(flows, 'ask = WorkflowSpec(workflow_id="ask"')

    async def scenario(d):
        a = await Editor.open(d.data, project)
        b = await Editor.open(d.data, project)
        script = await AsyncClient(Target("unix", path=d.socket)).connect()
        try:
            assert (ask_line, "0 waiting") in await a.lenses(flows)
            assert (spec_line, "start ask") in await a.lenses(flows)
            # From the cursor before the start: the subscription is made at the first read, and
            # the run may complete before that; the replay then still delivers its events.
            events = script.subscribe(after=(await script.status()).cursor)
            run = (await script.start("ask")).run_id

            (pa, answer_a), (pb, answer_b) = await next_item(a.prompts), await next_item(b.prompts)
            for p in (pa, pb):
                assert p["message"] == "ask: Continue?" and [x["title"] for x in p["actions"]] == ["yes", "no"]
                assert p["abstractruntime"]["run_id"] == run
            assert (ask_line, "1 waiting - answer") in await b.lenses(flows)

            answer_a.set_result({"title": "yes"})  # the first answer
            while True:
                ev = await asyncio.wait_for(events.__anext__(), 10)
                if ev.run_id == run and ev.kind == "state" and ev.state.status == "completed":
                    break  # the script sees the run move on
            assert (await next_item(b.withdrawn))["run_id"] == run  # b's prompt is withdrawn
            answer_b.set_result({"title": "no"})  # ... and b answers late anyway
            msg = await next_item(b.messages)
            assert "already answered (run not waiting)" in msg["message"]
            st = await script.state(run)
            assert st.status == "completed" and st.output["answer"] == {"text": "yes"}
            for _ in range(100):  # lens refreshes are batched (50 ms)
                if a.refreshes and b.refreshes:
                    break
                await asyncio.sleep(0.02)
            assert a.refreshes >= 1 and b.refreshes >= 1 and (ask_line, "0 waiting") in await a.lenses(flows)
            await events.aclose()
        finally:
            await script.close()
            await a.close()
            await b.close()

    with daemon(project, "unix", workflows=project / "workflows") as d:
        asyncio.run(scenario(d))


def test_commands_lenses_and_free_text_answers(project):
    flows = project / "workflows" / "flows.py"
    ask_line = line_of(flows, "def _ask(")

    async def scenario(d):
        ed = await Editor.open(d.data, project, prompts=False)
        try:
            started = [await ed.command("abstractruntime.start", "ask") for _ in range(2)]
            assert all(s["status"] == "waiting" for s in started)
            assert (ask_line, "2 waiting - answer") in await ed.lenses(flows)
            assert ed.prompts.empty()  # not opted in: no prompts pushed

            # Free text through the command, with the text as an argument.
            done = await ed.command("abstractruntime.answer", started[0]["run_id"], "yes please")
            assert done["status"] == "completed" and done["state"]["output"]["answer"] == {"text": "yes please"}
            assert (ask_line, "1 waiting - answer") in await ed.lenses(flows)

            # The lens's own arguments: the oldest run at that node; the choice comes back
            # through window/showMessageRequest.
            pending = asyncio.ensure_future(ed.command("abstractruntime.answer", {"workflow_id": "ask", "node_id": "ask"}))
            params, answer = await next_item(ed.prompts)
            assert [x["title"] for x in params["actions"]] == ["yes", "no"]
            answer.set_result({"title": "no"})
            res = await pending
            assert res["run_id"] == started[1]["run_id"] and res["state"]["output"]["answer"] == {"text": "no"}
            assert (ask_line, "0 waiting") in await ed.lenses(flows)

            shown = await ed.command("abstractruntime.showRun", res["run_id"])
            assert shown["status"] == "completed"
            other = await ed.command("abstractruntime.start", {"workflow_id": "ask", "vars": {"x": 1}})
            assert (await ed.command("abstractruntime.cancel", other["run_id"], "no"))["status"] == "cancelled"
            with pytest.raises(RunFinishedError):  # code 1005, as over the protocol's own methods
                await ed.command("abstractruntime.answer", other["run_id"], "late")
            with pytest.raises(RunNotFoundError, match="no run 'nope'"):
                await ed.command("abstractruntime.showRun", "nope")
        finally:
            await ed.close()

    with daemon(project, "unix", workflows=project / "workflows") as d:
        asyncio.run(scenario(d))


def test_diagnostics_for_load_errors_and_stranded_runs(project):
    wf_dir = project / "workflows"
    broken = wf_dir / "broken.py"

    async def scenario(d):
        ed = await Editor.open(d.data, project, prompts=False)
        script = await AsyncClient(Target("unix", path=d.socket)).connect()
        try:
            broken.write_text("from abstractruntime import WorkflowSpec\n\nx = (\n")
            diag = await next_item(ed.diagnostics)
            assert diag["uri"] == broken.as_uri()
            [dg] = diag["diagnostics"]
            assert dg["severity"] == 1 and dg["range"]["start"]["line"] == 2 and "SyntaxError" in dg["message"]
            broken.unlink()
            assert (await next_item(ed.diagnostics)) == {"uri": broken.as_uri(), "diagnostics": []}

            run = (await script.start("ask")).run_id
            flows = wf_dir / "flows.py"
            flows.write_text(flows.read_text().replace('next_node="done"', 'next_node="finish"', 1).replace(
                '"done": _done})', '"finish": _done})', 1))
            while True:
                diag = await next_item(ed.diagnostics)
                if diag["uri"] == flows.as_uri() and diag["diagnostics"]:
                    break
            [dg] = diag["diagnostics"]
            assert dg["severity"] == 2 and "stranded" in dg["message"] and "'done'" in dg["message"]
            assert dg["range"]["start"]["line"] == line_of(flows, 'ask = WorkflowSpec(workflow_id="ask"')
            await script.migrate(run, "finish")
            await script.reload_workflows()  # no file changed: diagnostics follow the next reload
        finally:
            await script.close()
            await ed.close()

    with daemon(project, "unix", workflows=project / "workflows") as d:
        asyncio.run(scenario(d))


def test_lsp_starts_the_project_daemon_once_and_a_second_daemon_is_refused(tmp_path):
    shutil.copytree(WORKFLOWS, tmp_path / "workflows")
    data = tmp_path / ".abstractruntime"

    async def two_editors():
        a = await Editor.open(data, tmp_path)
        b = await Editor.open(data, tmp_path)
        try:
            return [await e.conn.request("daemon/status", {}, timeout=10) for e in (a, b)]
        finally:
            await a.close()
            await b.close()

    first, second = asyncio.run(two_editors())
    assert first["pid"] == second["pid"] and first["clients"] >= 1
    pid = first["pid"]
    try:
        # The daemon outlives the editors: a script finds it the usual way.
        with Client.discover(str(data)) as c:
            assert c.status().pid == pid and {w.workflow_id for w in c.workflows()} >= {"ask"}
        again = subprocess.run(
            [sys.executable, "-m", "abstractruntime", "serve", "--data", str(data), "--workflows", str(tmp_path / "workflows")],
            env=env_with_package(), cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        sock = discovery.default_socket(str(data))
        assert again.returncode == 1
        assert f"in use by another daemon (pid {pid}, at {sock})" in again.stderr
    finally:
        stop = subprocess.run([sys.executable, "-m", "abstractruntime", "stop", "--data", str(data)],
                              env=env_with_package(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and f"stopping the daemon (pid {pid})" in stop.stdout, stop.stderr
        deadline = time.time() + 20
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            time.sleep(0.05)
    log = (data / "daemon.log").read_text()
    assert "serving on unix socket" in log, log[-2000:]


def test_lsp_reports_a_daemon_that_cannot_start(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    p = subprocess.run(
        [sys.executable, "-m", "abstractruntime", "lsp", "--data", str(tmp_path / "data")],
        env=env_with_package(), cwd=tmp_path, capture_output=True, text=True, timeout=60, input="",
    )
    assert p.returncode == 1 and p.stderr.startswith("abstractruntime lsp: ")


def test_an_event_wait_with_a_prompt_is_a_prompt_too(project):
    (project / "workflows" / "gate.py").write_text(
        "from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec\n\n"
        "def wait(run, ctx):\n"
        "    return StepPlan(node_id='wait', effect=Effect(EffectType.WAIT_EVENT,\n"
        "        {'name': 'deploy', 'prompt': 'Deploy now?', 'choices': ['deploy']}, 'go'), next_node='done')\n\n"
        "def done(run, ctx):\n"
        "    return StepPlan(node_id='done', complete_output=run.vars['go'])\n\n"
        "gate = WorkflowSpec(workflow_id='gate', entry_node='wait', nodes={'wait': wait, 'done': done})\n"
    )

    async def scenario(d):
        ed = await Editor.open(d.data, project)
        script = await AsyncClient(Target("unix", path=d.socket)).connect()
        try:
            run = (await script.start("gate")).run_id
            params, answer = await next_item(ed.prompts)
            assert params["message"] == "gate: Deploy now?" and params["abstractruntime"]["run_id"] == run
            answer.set_result({"title": "deploy"})
            for _ in range(200):
                st = await script.state(run)
                if st.status == "completed":
                    break
                await asyncio.sleep(0.02)
            assert st.output == {"text": "deploy"}
        finally:
            await script.close()
            await ed.close()

    with daemon(project, "unix", workflows=project / "workflows") as d:
        asyncio.run(scenario(d))


FAILING = '''
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def ask(run, ctx):
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Amount?"}, "amount"), next_node="book")


def book(run, ctx):
    FIX
    return StepPlan(node_id="book", complete_output={"booked": run.vars["amount"], "note": run.vars.get("note")})


pay = WorkflowSpec(workflow_id="pay", entry_node="ask", nodes={"ask": ask, "book": book})
'''


def test_retry_and_fork_from_the_editor(project):
    pay = project / "workflows" / "pay.py"
    pay.write_text(FAILING.replace("FIX", 'raise RuntimeError("booking down")'))
    book_line = line_of(pay, "def book(")

    async def scenario(d):
        ed = await Editor.open(d.data, project, prompts=False)
        try:
            run = (await ed.command("abstractruntime.start", "pay"))["run_id"]
            failed = await ed.command("abstractruntime.answer", run, "90")
            assert failed["status"] == "failed" and "booking down" in failed["state"]["error"]
            assert (book_line, "1 failed - retry") in await ed.lenses(pay)

            def version():
                with d.client() as c:
                    return next(w.version for w in c.workflows() if w.workflow_id == "pay")

            old = await asyncio.to_thread(version)
            pay.write_text(FAILING.replace("FIX", "pass"))  # the fix, saved: the daemon reloads it
            for _ in range(500):
                if await asyncio.to_thread(version) != old:
                    break
                await asyncio.sleep(0.02)
            # The lens's arguments: the newest failed run at that node.
            done = await ed.command("abstractruntime.retry", {"workflow_id": "pay", "node_id": "book"})
            assert done["run_id"] == run and done["status"] == "completed"
            assert done["state"]["output"] == {"booked": {"text": "90"}, "note": None}
            assert (book_line, "1 failed - retry") not in await ed.lenses(pay)

            def answered_seq():  # the record of the answer: the fork books again, with a note
                with d.client() as c:
                    return next(r.seq for r in c.ledger(run).records if "resumed" in (r.result or {}))

            seq = await asyncio.to_thread(answered_seq)
            fork = await ed.command("abstractruntime.fork", {"run_id": run, "seq": seq, "vars": {"note": "again"}})
            assert fork["forked_from"] == run and fork["run_id"] != run
            assert fork["state"]["output"] == {"booked": {"text": "90"}, "note": "again"}
            with pytest.raises(RunNotFoundError):
                await ed.command("abstractruntime.fork", {"run_id": "nope"})
        finally:
            await ed.close()

    with daemon(project, "unix", workflows=project / "workflows") as d:
        asyncio.run(scenario(d))
