"""Neovim headless (Debian's `neovim`, 0.7.2 in CI) drives a real daemon through the plugin in
clients/neovim: it lists the waiting runs, answers one with a choice and one with free text,
answers a prompt pushed while it is open, and sees the code lens count change."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from daemon_fixture import WORKFLOWS, daemon

from abstractruntime.client.connection import env_with_package
from conftest import ROOT, require_tool

NVIM = require_tool("nvim", "Neovim 0.7+ (Debian: apt install neovim)", "Neovim plugin")

NAME_FLOW = textwrap.dedent("""
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def ask_name(run, ctx):
        return StepPlan(node_id="ask_name", effect=Effect(EffectType.ASK_USER, {"prompt": "Your name?"}, result_key="name"),
                        next_node="greet")

    def greet(run, ctx):
        return StepPlan(node_id="greet", complete_output={"greeting": "Hello, " + run.vars["name"]["text"]})

    name = WorkflowSpec(workflow_id="name", entry_node="ask_name", nodes={"ask_name": ask_name, "greet": greet})
    """)


def test_the_plugin_lists_answers_and_counts_waiting_runs(tmp_path):
    wf = tmp_path / "workflows"
    wf.mkdir()
    shutil.copy(WORKFLOWS / "flows.py", wf / "flows.py")
    (wf / "name.py").write_text(NAME_FLOW)
    with daemon(tmp_path, "unix", workflows=wf) as d, d.client() as c:
        c.start("ask")  # a finished run, listed after the waiting ones
        c.resume(c.runs(status="waiting").runs[0].run_id, {"text": "no"})
        choice = c.start("ask").run_id
        text = c.start("name").run_id
        out = tmp_path / "out.json"
        env = dict(
            env_with_package(),
            AR_CMD=json.dumps([sys.executable, "-m", "abstractruntime", "lsp", "--data", str(d.data), "--socket", d.socket]),
            AR_WORKFLOWS=str(wf),
            AR_FLOWS=str(wf / "flows.py"),
            AR_OUT=str(out),
            AR_RUN_CHOICE=choice,
            AR_RUN_TEXT=text,
        )
        p = subprocess.run(
            [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-n",
             "--cmd", f"set rtp^={ROOT / 'clients' / 'neovim'}",
             "-c", f"luafile {ROOT / 'tests' / 'e2e' / 'nvim' / 'plugin_test.lua'}"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert out.exists(), f"nvim wrote nothing (exit {p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}"
        res = json.loads(out.read_text())
        assert "error" not in res, (res, (tmp_path / "daemon-unix.log").read_text()[-3000:])

        assert res["lens_before"] == "1 waiting - answer" and res["lens_after"] == "0 waiting"
        runs = res["runs"]
        assert [r.split("]")[0] for r in runs] == ["[waiting", "[waiting", "[completed"]
        assert any(choice in r and "? Continue? [yes/no]" in r for r in runs)
        assert res["choice_output"]["answer"] == {"text": "yes"}
        assert res["text_output"] == {"greeting": "Hello, Ada"}
        assert res["fork_origin"] == text and res["fork_status"] == "completed"  # :AbstractRuntimeFork
        assert res["prompt_output"]["answer"] == {"text": "no"}
        # What the script sees: the same runs, finished.
        assert c.state(choice).status == "completed" and c.state(text).output == {"greeting": "Hello, Ada"}
        assert c.runs(status="waiting").runs == []
