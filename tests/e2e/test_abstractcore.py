"""LLM calls and tools through AbstractCore: the real provider code (Ollama and OpenAI-compatible)
over real HTTP, against fake_llm.FakeLLMServer on 127.0.0.1 with scripted answers; in process
and through the daemon."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from daemon_fixture import daemon
from fake_llm import FakeLLMServer

from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
from abstractruntime.client.aio import AsyncClient, Target
from abstractruntime.client.connection import Connection
from abstractruntime.integrations.abstractcore import create_local_runtime, external_tool, tool
from conftest import ROOT

pytest.importorskip("abstractcore")

PROVIDERS = [("ollama", "qwen3:4b", ""), ("openai-compatible", "test-model", "/v1")]
SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"


@pytest.fixture
def llm_server():
    srv = FakeLLMServer()
    yield srv
    for rt in _RUNTIMES:  # AbstractCore's HTTP clients keep connections open: close them
        rt._handlers["llm_call"].close()
    _RUNTIMES.clear()
    srv.close()


_RUNTIMES: list = []


def one_call(payload):
    return WorkflowSpec(
        workflow_id="one",
        entry_node="ask",
        nodes={
            "ask": lambda run, ctx: StepPlan(node_id="ask", effect=Effect(EffectType.LLM_CALL, payload, "llm"), next_node="done"),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output=run.vars["llm"]),
        },
    )


def runtime(srv, provider, model, suffix, **kw):
    opts = {"api_key": SECRET} if provider != "ollama" else {}
    # 2 s per call: a loaded CI machine answered a fake model's reply after the 1 s this was once.
    rt = create_local_runtime(provider=provider, model=model, base_url=srv.url + suffix, timeout=2.0, **opts, **kw)
    _RUNTIMES.append(rt)
    return rt


@pytest.mark.parametrize("provider,model,suffix", PROVIDERS)
def test_text_tool_calls_retries_and_failures(llm_server, provider, model, suffix):
    rt = runtime(llm_server, provider, model, suffix)

    llm_server.add({"text": "Durable state is a checkpoint."})
    st = rt.start_and_tick(workflow=one_call({"prompt": "What is durable state?", "params": {"temperature": 0, "max_tokens": 64}}))
    out = st.output
    assert st.status.value == "completed" and out["content"] == "Durable state is a checkpoint."
    assert out["model"] == model and out["provider"] == provider and out["finish_reason"] == "stop"
    assert out["usage"]["total_tokens"] == 18 and out["tool_calls"] == []
    assert set(out) == {"content", "tool_calls", "usage", "model", "finish_reason", "provider"}  # no raw response
    sent = llm_server.posts()[-1]["body"]
    assert json.dumps(sent).count("What is durable state?") == 1

    llm_server.add({"tool_calls": [{"name": "lookup", "arguments": {"city": "Paris"}}]})
    schema = {"name": "lookup", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    st = rt.start_and_tick(workflow=one_call({"messages": [{"role": "user", "content": "weather?"}], "tools": [schema]}))
    assert [(c["name"], c["arguments"]) for c in st.output["tool_calls"]] == [("lookup", {"city": "Paris"})]

    # A 500, then success: the kernel's retry policy, every attempt in the ledger.
    llm_server.add({"status": 500}, {"text": "second time lucky"})
    st = rt.start_and_tick(workflow=one_call({"prompt": "hi"}))
    assert st.output["content"] == "second time lucky"
    attempts = [(r["status"], r["attempt"]) for r in rt.get_ledger(st.run_id) if r["node_id"] == "ask"]
    assert attempts == [("started", 1), ("failed", 1), ("started", 2), ("completed", 2)]

    # A timeout on every attempt: the run fails, naming provider, model and cause.
    llm_server.add({"sleep": 2.6}, {"sleep": 2.6}, {"sleep": 2.6})
    st = rt.start_and_tick(workflow=one_call({"prompt": "hi"}))
    assert st.status.value == "failed"
    assert provider in st.error and model in st.error and "timed out" in st.error and "after 3 attempts" in st.error

    # A malformed body is not worth retrying: one attempt, a clear failure.
    llm_server.add({"malformed": True})
    st = rt.start_and_tick(workflow=one_call({"prompt": "hi"}))
    assert st.status.value == "failed" and f"{provider} model {model}" in st.error and "Expecting value" in st.error
    assert sum(1 for r in rt.get_ledger(st.run_id) if r["status"] == "started") == 1

    # Connection refused is transient too.
    dead = create_local_runtime(provider=provider, model=model, base_url="http://127.0.0.1:9" + suffix, timeout=1.0,
                                **({"validate_model": False} if provider != "ollama" else {}))
    _RUNTIMES.append(dead)
    st = dead.start_and_tick(workflow=one_call({"prompt": "hi"}))
    assert st.status.value == "failed" and "Connection refused" in st.error and "after 3 attempts" in st.error


def test_response_schema_gives_parsed_json(llm_server):
    rt = runtime(llm_server, "ollama", "qwen3:4b", "")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    llm_server.add({"text": '```json\n{"city": "Lyon"}\n```'}, {"text": "Lyon, I think"})
    st = rt.start_and_tick(workflow=one_call({"prompt": "Which city?", "response_schema": schema}))
    assert st.output["data"] == {"city": "Lyon"}
    told = json.dumps(llm_server.posts()[-1]["body"])
    assert "Answer with JSON only" in told and "required" in told  # the model was given the schema
    st = rt.start_and_tick(workflow=one_call({"prompt": "Which city?", "response_schema": schema}))
    assert st.status.value == "failed" and "the answer is not JSON" in st.error


def test_no_secret_in_state_ledger_or_messages(llm_server):
    rt = runtime(llm_server, "openai-compatible", "test-model", "/v1")
    llm_server.add({"echo_headers": True})  # a provider that prints the key back in its error
    st = rt.start_and_tick(workflow=one_call({"prompt": "hi"}))
    assert st.status.value == "failed" and "***" in st.error
    everything = json.dumps(st.to_dict()) + json.dumps(rt.get_ledger(st.run_id))
    assert SECRET not in everything
    assert llm_server.posts()[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"  # it was used, only not kept
    bad = rt.start_and_tick(workflow=one_call({"prompt": "hi", "params": {"api_key": "x"}}))
    assert bad.status.value == "failed" and "must not carry credentials" in bad.error


def test_tools_allowed_approval_denied_and_external_in_process(llm_server):
    ran = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        ran.append(("add", a, b))
        return a + b

    @tool(policy="approval")
    def wipe(path: str) -> str:
        """Delete a folder."""
        ran.append(("wipe", path))
        return "wiped"

    lookup = external_tool("lookup", description="Done by the host")
    rt = create_local_runtime(provider="ollama", model="qwen3:4b", base_url=llm_server.url, tools=[add, wipe, lookup])
    _RUNTIMES.append(rt)
    calls = [
        {"name": "add", "arguments": {"a": 1, "b": 2}, "call_id": "c1"},
        {"name": "wipe", "arguments": {"path": "/tmp/x"}, "call_id": "c2"},
        {"name": "lookup", "arguments": {"q": "x"}, "call_id": "c3"},
        {"name": "nope", "arguments": {}, "call_id": "c4"},
    ]
    wf = WorkflowSpec(
        workflow_id="tools",
        entry_node="act",
        nodes={
            "act": lambda run, ctx: StepPlan(node_id="act", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, "out"), next_node="done"),
            "done": lambda run, ctx: StepPlan(node_id="done", complete_output=run.vars["out"]),
        },
    )
    st = rt.start_and_tick(workflow=wf)
    w = st.waiting
    assert w.reason.value == "user" and w.choices == ["approve", "deny"] and "wipe" in w.prompt and "/tmp/x" in w.prompt
    assert ran == []  # nothing runs before every decision is in
    st = rt.resume(workflow=wf, run_id=st.run_id, wait_key=w.wait_key, payload={"text": "deny"})
    w = st.waiting
    assert w.reason.value == "job" and w.details["effect"]["payload"]["tool_calls"][0]["name"] == "lookup"
    assert ran == []
    st = rt.resume(workflow=wf, run_id=st.run_id, wait_key=w.wait_key,
                   payload={"results": [{"call_id": "c3", "output": {"found": 1}}]})
    assert st.status.value == "completed" and ran == [("add", 1, 2)]
    by = {r["call_id"]: r for r in st.output["results"]}
    assert by["c1"] == {"call_id": "c1", "name": "add", "success": True, "output": 3}
    assert by["c2"]["denied"] is True and by["c2"]["success"] is False
    assert by["c3"]["output"] == {"found": 1} and by["c3"]["success"] is True
    assert "unknown tool 'nope'" in by["c4"]["error"]


# -- through the daemon ---------------------------------------------------------------------------------


def serve_args(srv, *extra):
    return ["--llm-provider", "openai-compatible", "--llm-model", "test-model", "--llm-base-url", srv.url + "/v1",
            "--llm-timeout", "5", "--llm-api-key-env", "AR_TEST_KEY", *extra]


@pytest.fixture
def agent_dir(tmp_path):
    wf = tmp_path / "workflows"
    wf.mkdir()
    shutil.copy(ROOT / "examples" / "workflows" / "agent.py", wf / "agent.py")
    # The refund tool also writes to a file, so a test can count how often it really ran.
    text = (wf / "agent.py").read_text()
    text = text.replace('    return {"order_id": order_id, "refunded": amount}',
                        '    with open(__import__("os").environ["AR_TOOL_LOG"], "a") as f:\n'
                        '        f.write(order_id + "\\n")\n'
                        '    return {"order_id": order_id, "refunded": amount}')
    (wf / "agent.py").write_text(text)
    return wf


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("AR_TEST_KEY", SECRET)
    monkeypatch.setenv("AR_TOOL_LOG", str(tmp_path / "refunds.log"))
    return tmp_path


def script_agent(srv, final="Refunded 39 EUR."):
    srv.add(
        {"tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A-1001"}},
                        {"name": "refund_order", "arguments": {"order_id": "A-1001", "amount": 39.0}}]},
        {"text": final},
    )


def wait_for(c, run_id, cond, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = c.state(run_id)
        if cond(st):
            return st
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} is still {c.state(run_id).status}")


def test_the_agent_example_waits_for_approval_and_finishes(llm_server, agent_dir, env):
    with daemon(env, "unix", workflows=agent_dir, extra=serve_args(llm_server)) as d, d.client() as c:
        script_agent(llm_server)
        st = c.start("agent").state
        assert st.status == "waiting", (st.output, st.error, st.vars.get("tool_results"))
        assert st.waiting.reason == "user" and st.waiting.choices == ["approve", "deny"]
        assert "refund_order" in st.waiting.prompt and "A-1001" in st.waiting.prompt
        listed = c.runs(status="waiting").runs[0]
        assert listed.prompt == st.waiting.prompt  # what `abstractruntime answer` and editors show
        st = c.resume(st.run_id, {"text": "approve"})
        assert st.status == "completed" and st.output == {"answer": "Refunded 39 EUR.", "turns": 1}
        results = st.vars["tool_results"]["results"]
        assert [r["output"] for r in results] == [{"item": "kettle", "amount": 39.0, "status": "delivered"},
                                                  {"order_id": "A-1001", "refunded": 39.0}]
        assert (env / "refunds.log").read_text() == "A-1001\n"
        # The model saw the tool results on its second call.
        second = llm_server.posts()[-1]["body"]["messages"]
        assert any(m.get("role") == "tool" and "refunded" in str(m.get("content")) for m in second)
        log = (env / "daemon-unix.log").read_text()
        everything = json.dumps(st.model_dump()) + json.dumps([r.model_dump() for r in c.ledger(st.run_id, limit=1000).records]) + log
        assert SECRET not in everything


def test_a_denied_tool_is_seen_by_the_workflow(llm_server, agent_dir, env):
    with daemon(env, "unix", workflows=agent_dir, extra=serve_args(llm_server)) as d, d.client() as c:
        script_agent(llm_server, final="I could not refund it.")
        run = c.start("agent").run_id
        st = c.resume(run, {"text": "deny"})
        assert st.status == "completed" and st.output["answer"] == "I could not refund it."
        refund = st.vars["tool_results"]["results"][1]
        assert refund["denied"] is True and refund["success"] is False and "denied" in refund["error"]
        assert not (env / "refunds.log").exists()
        tool_msg = [m for m in llm_server.posts()[-1]["body"]["messages"] if m.get("role") == "tool"]
        assert any("denied" in str(m.get("content")) for m in tool_msg)


def test_a_crash_after_the_tool_ran_does_not_run_it_again(llm_server, agent_dir, env):
    d = daemon(env, "unix", workflows=agent_dir, extra=serve_args(llm_server))
    with d as proc:
        c = proc.client()
        # The model's second call hangs: the daemon dies after the tools ran and were recorded,
        # before the next step is committed.
        llm_server.add(
            {"tool_calls": [{"name": "refund_order", "arguments": {"order_id": "A-1001", "amount": 39.0}}]},
            {"sleep": 30},
        )
        run = c.start("agent").run_id
        resume = subprocess.Popen(
            [sys.executable, "-m", "abstractruntime", "resume", run, "--text", "approve", "--socket", proc.socket],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while time.time() < deadline and len(llm_server.posts()) < 2:
            time.sleep(0.05)
        assert (env / "refunds.log").read_text() == "A-1001\n"
        c.close()
        proc.kill(signal.SIGKILL)
        resume.wait(30)
        llm_server.script.clear()
        llm_server.add({"text": "Done."})
        proc.start()  # the same data folder
        with proc.client() as c2:
            st = c2.state(run)
            if st.status == "waiting":  # the resume's commit was lost with the crash: answer again
                st = c2.resume(run, {"text": "approve"})
            st = wait_for(c2, run, lambda s: s.status == "completed")
            assert st.output["answer"] == "Done."
            assert (env / "refunds.log").read_text() == "A-1001\n"  # ran once, its recorded result reused
            records = c2.ledger(run, limit=1000).records
            assert c2.status().pid != 0 and any(r.result and "results" in r.result for r in records)


def test_an_external_tool_is_executed_by_a_python_client(llm_server, tmp_path, env):
    wf = tmp_path / "workflows"
    wf.mkdir()
    (wf / "ext.py").write_text(textwrap.dedent("""
        from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec
        from abstractruntime.integrations.abstractcore import external_tool

        geocode = external_tool("geocode", description="Coordinates of a city (done by the host)")

        def act(run, ctx):
            calls = [{"name": "geocode", "arguments": {"city": "Lyon"}, "call_id": "g1"}]
            return StepPlan(node_id="act", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, "geo"), next_node="done")

        def done(run, ctx):
            return StepPlan(node_id="done", complete_output=run.vars["geo"])

        ext = WorkflowSpec(workflow_id="ext", entry_node="act", nodes={"act": act, "done": done})
        """))
    with daemon(env, "unix", workflows=wf) as d, d.client() as c:
        run = c.start("ext").run_id
        job = next(r for r in c.runs(status="waiting").runs if r.wait_reason == "job")
        st = c.state(job.run_id)
        calls = st.waiting.details["effect"]["payload"]["tool_calls"]
        results = [{"call_id": x["call_id"], "output": {"lat": 45.76, "lon": 4.84}} for x in calls]  # the host's work
        done = c.resume(run, {"results": results}, wait_key=st.waiting.wait_key)
        assert done.status == "completed"
        assert done.output["results"] == [{"call_id": "g1", "name": "geocode", "success": True, "output": {"lat": 45.76, "lon": 4.84}}]


def test_streamed_tokens_reach_subscribers_and_editors_see_progress(llm_server, tmp_path, env):
    wf = tmp_path / "workflows"
    wf.mkdir()
    (wf / "one.py").write_text(textwrap.dedent("""
        from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

        def ask(run, ctx):
            return StepPlan(node_id="ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "tell me"}, "llm"), next_node="done")

        def done(run, ctx):
            return StepPlan(node_id="done", complete_output={"text": run.vars["llm"]["content"]})

        story = WorkflowSpec(workflow_id="story", entry_node="ask", nodes={"ask": ask, "done": done})
        """))
    tokens = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "ledger."]
    llm_server.add({"tokens": tokens, "gap": 0.08})

    async def scenario(d):
        sub = await AsyncClient(Target("unix", path=d.socket)).connect()
        # An editor: work-done progress comes as requests and $/progress notifications.
        progress = []
        conn = await Connection.unix(d.socket)
        conn.on_request("window/workDoneProgress/create", lambda p: None)
        conn.on_notification("$/progress", progress.append)
        await conn.request("initialize", {"processId": None, "rootUri": None,
                                          "capabilities": {"textDocument": {}, "window": {"workDoneProgress": True}}})
        conn.notify("initialized", {})
        try:
            events = sub.subscribe()
            first = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0.2)
            run = (await sub.start("story")).run_id
            pieces, kinds = [], []
            ev = await asyncio.wait_for(first, 10)
            while True:
                if ev.run_id == run:
                    kinds.append(ev.kind)
                    if ev.kind == "progress":
                        pieces.append(ev.progress.text)
                    if ev.kind == "state" and ev.state.status == "completed":
                        break
                ev = await asyncio.wait_for(events.__anext__(), 10)
            await events.aclose()
            assert "".join(pieces) == "".join(tokens) and len(pieces) >= 3, pieces
            st = await sub.state(run)
            assert st.output == {"text": "".join(tokens)}
            led = (await sub.ledger(run)).records
            assert [r.status for r in led if r.node_id == "ask" and r.effect] == ["started", "completed"]  # one result
            assert not any("progress" in json.dumps(r.model_dump()) for r in led)
            kinds_seen = [p["value"]["kind"] for p in progress]
            assert kinds_seen[0] == "begin" and kinds_seen[-1] == "end", progress
            assert "llm_call" in progress[0]["value"]["title"]
        finally:
            await conn.close()
            await sub.close()

    with daemon(env, "unix", workflows=wf, extra=serve_args(llm_server)) as d:
        asyncio.run(scenario(d))


def test_serve_without_a_model_fails_llm_calls_clearly(tmp_path):
    wf = tmp_path / "workflows"
    wf.mkdir()
    shutil.copy(ROOT / "examples" / "workflows" / "agent.py", wf / "agent.py")
    with daemon(tmp_path, "unix", workflows=wf) as d, d.client() as c:
        st = c.start("agent").state
        assert st.status == "failed" and "no LLM is configured" in st.error and "--llm-provider" in st.error
    bad = subprocess.run([sys.executable, "-m", "abstractruntime", "serve", "--data", str(tmp_path / "d2"),
                          "--llm-provider", "ollama", "--llm-model", "x", "--llm-api-key-env", "AR_NOT_SET_ANYWHERE"],
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "AR_NOT_SET_ANYWHERE" in bad.stderr


def test_a_key_echoed_by_the_provider_never_reaches_the_daemons_log(llm_server, agent_dir, env):
    # Some OpenAI-compatible servers print the key back in a 401 body; AbstractCore's own
    # loggers then log that body. The daemon's log handler masks the key in every record.
    with daemon(env, "unix", workflows=agent_dir, extra=serve_args(llm_server, "--log-level", "debug")) as d, d.client() as c:
        llm_server.add({"echo_headers": True})
        st = c.start("agent").state
        assert st.status == "failed" and "401" in st.error and "***" in st.error
        assert llm_server.posts()[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"  # the key was sent
    log = (env / "daemon-unix.log").read_text()
    assert SECRET not in log
    # AbstractCore's own record of the failure went through the daemon's handler (its import used
    # to replace the root handlers with its own, one on stdout), with the key masked.
    assert re.search(r"\d ERROR OpenAICompatibleProvider: Generation failed .*bad key: Bearer \*\*\*", log)
