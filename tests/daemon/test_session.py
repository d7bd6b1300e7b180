"""The daemon in one process: a Hub on the in-memory store, its sessions, and the real Python
client over a socket pair (as pygls's own tests drive a server). No subprocess, no transport
set-up: what the session and the event log promise, checked in milliseconds. The e2e tier keeps
the transports, the crashes and the editors."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path
from typing import Any, Dict, List

import pytest

from abstractruntime.client.aio import AsyncClient
from abstractruntime.client.connection import Connection, ProtocolError
from abstractruntime.core.errors import WorkflowNotFoundError
from abstractruntime.daemon.hub import Hub
from abstractruntime.daemon.server import Daemon
from abstractruntime.protocol.errors import CursorExpiredError, ShuttingDownError

FLOWS = Path(__file__).resolve().parents[1] / "e2e" / "workflows" / "flows.py"


class PairTarget:
    """A client target on one end of a socket pair whose other end the daemon serves."""

    kind = "pair"
    token = None

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def open(self) -> Connection:
        ours, theirs = socket.socketpair()
        await asyncio.get_running_loop().connect_accepted_socket(self.daemon._connection, sock=theirs)
        cr, cw = await asyncio.open_connection(sock=ours, limit=1 << 24)
        return Connection._started(cr, cw)


@pytest.fixture
def hub(tmp_path):
    wf = tmp_path / "workflows"
    wf.mkdir()
    shutil.copy(FLOWS, wf / "flows.py")
    h = Hub(
        data_dir=str(tmp_path / "data"), workflow_dirs=[str(wf)], store="memory", workers=4, event_log_bytes=256 << 10
    )
    yield h
    h.close()


def run(hub: Hub, scenario: Any) -> None:
    async def main() -> None:
        daemon = Daemon(hub, watch=False)
        await scenario(daemon)
        for s in list(daemon.sessions):
            s.close()

    asyncio.run(main())


async def client(daemon: Daemon) -> AsyncClient:
    c = AsyncClient(PairTarget(daemon))  # type: ignore[arg-type]
    return await c.connect()


def test_backlog_then_live_each_event_exactly_once_in_order(hub):
    async def scenario(daemon):
        a, b = await client(daemon), await client(daemon)
        first = (await a.start("ask")).run_id
        await a.resume(first, {"text": "yes"})
        before = hub.events.cursor
        # Runs keep committing while b subscribes from the middle of the history.
        producer = asyncio.ensure_future(asyncio.gather(*[a.start("ask") for _ in range(30)]))
        seen: List[int] = []
        # Until every start has its reply and the newest event has come. (A reply and the
        # events of its commit travel on two connections: either may arrive first.)
        events = b.subscribe(after=before - 3).__aiter__()
        nxt = asyncio.ensure_future(events.__anext__())
        while not (producer.done() and seen and seen[-1] >= hub.events.cursor):
            waiting = {nxt} if producer.done() else {nxt, producer}
            done, _ = await asyncio.wait(waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            assert done, f"no event for 30 s; seen up to {seen[-1:]}, the log is at {hub.events.cursor}"
            if nxt.done():
                seen.append(nxt.result().cursor)
                nxt = asyncio.ensure_future(events.__anext__())
        nxt.cancel()
        await producer
        assert seen == list(range(before - 2, seen[-1] + 1))  # contiguous: nothing lost, nothing twice
        await a.close()
        await b.close()

    run(hub, scenario)


def test_an_expired_cursor_is_said_and_the_oldest_kept_is_not(hub):
    async def scenario(daemon):
        c = await client(daemon)
        start = hub.events.cursor
        for _ in range(60):  # each run's events push the 256 KB log past its budget
            rid = (await c.start("ask", {"pad": "x" * 4000})).run_id
            await c.resume(rid, {"text": "y" * 4000})
        oldest = hub.events.oldest()
        assert oldest is not None and oldest > start + 1
        with pytest.raises(CursorExpiredError) as e:
            await c._subscribe_once(None, start)
        assert e.value.data["oldest"] == oldest
        sub = await c._subscribe_once(None, oldest)  # from the oldest kept on: no gap
        assert sub.startswith("s-")
        await c.close()

    run(hub, scenario)


def test_malformed_frames_are_answered_and_the_connection_lives(hub):
    async def scenario(daemon):
        c = await client(daemon)
        got: List[Dict[str, Any]] = []
        conn = c.conn
        assert conn is not None
        orig = conn._dispatch
        conn._dispatch = lambda msg: got.append(msg) if msg.get("id") is None else orig(msg)  # type: ignore[method-assign]
        await conn.send_raw(b"Content-Length: 9\r\n\r\n{not json")
        await conn.send_raw(b'Content-Length: 15\r\n\r\n{"jsonrpc":"2"}')
        await conn.send_raw(b"Content-Length: 7\r\n\r\n[1,2,3]")
        while len(got) < 3:
            await asyncio.sleep(0.001)
        assert [m["error"]["code"] for m in got] == [-32700, -32600, -32600]
        assert (await c.status()).pid > 0  # the same connection is still served
        with pytest.raises(ProtocolError) as e:
            await c.call("runtime/ledger", {"run_id": "x", "limit": "10"})
        assert e.value.code == -32602
        await c.close()

    run(hub, scenario)


def test_shutdown_refuses_new_work_but_answers_status(hub):
    async def scenario(daemon):
        c = await client(daemon)
        rid = (await c.start("ask")).run_id
        hub.stopping = True
        with pytest.raises(ShuttingDownError):
            await c.resume(rid, {"text": "yes"})
        assert (await c.status()).pid > 0
        hub.stopping = False
        await c.close()

    run(hub, scenario)


def test_a_prompt_is_withdrawn_from_the_others_when_one_client_answers(hub):
    async def scenario(daemon):
        editors, prompts, withdrawn = [], [], []
        for _ in range(2):
            e = AsyncClient(PairTarget(daemon))  # type: ignore[arg-type]
            e.conn = await e.target.open()
            q: asyncio.Queue = asyncio.Queue()
            w: asyncio.Queue = asyncio.Queue()

            def on_prompt(params: Any, q: asyncio.Queue = q) -> Any:
                fut = asyncio.get_running_loop().create_future()
                q.put_nowait((params, fut))
                return fut

            e.conn.on_request("window/showMessageRequest", on_prompt)
            e.conn.on_notification("abstractruntime/promptWithdrawn", w.put_nowait)
            await e.conn.request("initialize", {"capabilities": {}, "initializationOptions": {"answerPrompts": True}})
            e.conn.notify("initialized", {})
            editors.append(e)
            prompts.append(q)
            withdrawn.append(w)
        script = await client(daemon)
        # No waiting for the editors' features to start (pygls loads on a thread): they follow
        # the runs from the moment each editor initialized.
        rid = (await script.start("ask")).run_id
        (pa, answer_a), (pb, answer_b) = [await asyncio.wait_for(q.get(), 5) for q in prompts]
        assert pa["abstractruntime"]["run_id"] == pb["abstractruntime"]["run_id"] == rid
        answer_a.set_result({"title": "yes"})
        gone = await asyncio.wait_for(withdrawn[1].get(), 5)
        assert gone["run_id"] == rid
        assert (await script.state(rid)).output["answer"] == {"text": "yes"}
        answer_b.set_result(None)
        for e in editors:
            await e.conn.close()
        await script.close()

    run(hub, scenario)


def test_an_unknown_workflow_is_1002_from_the_protocol_and_from_an_editor_command(hub):
    async def scenario(daemon):
        c = await client(daemon)
        with pytest.raises(WorkflowNotFoundError) as e:
            await c.start("nope")
        assert e.value.CODE == 1002 and "serving: ask" in str(e.value)
        ed = AsyncClient(PairTarget(daemon))  # type: ignore[arg-type]
        ed.conn = await ed.target.open()
        await ed.conn.request("initialize", {"capabilities": {"textDocument": {}}})
        ed.conn.notify("initialized", {})
        with pytest.raises(WorkflowNotFoundError) as e2:  # it was -32602 here, 1002 there
            await ed.conn.request(
                "workspace/executeCommand", {"command": "abstractruntime.start", "arguments": ["nope"]}
            )
        assert str(e2.value) == str(e.value)
        await ed.conn.close()
        await c.close()

    run(hub, scenario)
