"""The web page, in a real browser: Debian's chromium driven by Playwright for Python, against a
daemon in a subprocess serving `--http`. The page signs in the way a person does, through the
one-time link `abstractruntime ui` prints.

Screenshots go to $WEB_SCREENSHOTS when it is set (`make screenshots` points it at docs/web/,
which docs/web.md shows), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from daemon_fixture import cli, start_web_daemon

from conftest import IN_CI

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_MISSING = None
if CHROMIUM is None:
    _MISSING = "browser tier skipped: chromium not found; install Debian's chromium (apt-get install chromium)"
else:
    try:
        from playwright.sync_api import Page, expect, sync_playwright
    except ImportError:
        _MISSING = "browser tier skipped: Playwright for Python not found; pip install playwright"
if _MISSING:
    if IN_CI:
        pytest.fail(f"{_MISSING} (in CI, make test installs it)", pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)

# Chromium's background services call home (this machine's network refuses them, slowly); a
# container's /dev/shm can be too small for its shared memory: it uses /tmp instead.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]

FLOWS = textwrap.dedent('''
    import os

    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def ask(run, ctx):
        return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {
            "prompt": f"Approve an expense of {run.vars.get('amount', 0)} EUR?",
            "choices": ["approve", "reject"], "allow_free_text": False}, "decision"), next_node="decide")

    def decide(run, ctx):
        return StepPlan(node_id="decide", next_node="book" if run.vars["decision"]["text"] == "approve" else "done")

    def book(run, ctx):
        return StepPlan(node_id="book", next_node="done")

    def done(run, ctx):
        return StepPlan(node_id="done", complete_output={"decision": run.vars["decision"]["text"]})

    expense = WorkflowSpec(workflow_id="expense", entry_node="ask",
                           nodes={"ask": ask, "decide": decide, "book": book, "done": done})

    def check(run, ctx):
        return StepPlan(node_id="check", next_node="total")

    def total(run, ctx):
        raise ValueError("the invoice total is negative")

    invoice = WorkflowSpec(workflow_id="invoice", entry_node="check", nodes={"check": check, "total": total})

    def count(run, ctx):
        run.vars["count"] = run.vars.get("count", 1)
        return StepPlan(node_id="count", next_node="double")

    def double(run, ctx):
        run.vars["doubled"] = run.vars["count"] * 2
        return StepPlan(node_id="double", next_node="confirm")

    def confirm(run, ctx):
        return StepPlan(node_id="confirm", effect=Effect(EffectType.ASK_USER, {
            "prompt": f"Double is {run.vars['doubled']}: fine?"}, "ok"), next_node="finish")

    def finish(run, ctx):
        return StepPlan(node_id="finish", complete_output={"doubled": run.vars["doubled"]})

    doubler = WorkflowSpec(workflow_id="doubler", entry_node="count",
                           nodes={"count": count, "double": double, "confirm": confirm, "finish": finish})

    def pay(run, ctx):
        return StepPlan(node_id="pay", effect=Effect(EffectType.WAIT_EVENT, {"name": "paid", "scope": "run"}, "payment"),
                        next_node="receipt")

    def receipt(run, ctx):
        return StepPlan(node_id="receipt", complete_output={"paid": run.vars["payment"]})

    payment = WorkflowSpec(workflow_id="payment", entry_node="pay", nodes={"pay": pay, "receipt": receipt})

    def fetch(run, ctx):  # fails until the test opens the bank (a file beside the workflow folder)
        if not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(__file__)), "bank-open")):
            raise ConnectionError("the bank is closed")
        return StepPlan(node_id="fetch", complete_output={"fetched": True})

    bank = WorkflowSpec(workflow_id="bank", entry_node="fetch", nodes={"fetch": fetch})

    def book_trip(run, ctx):
        return StepPlan(node_id="book_trip", effect=Effect(EffectType.START_SUBWORKFLOW, {
            "workflow_id": "expense", "vars": {"amount": 900}}, "approval"), next_node="booked")

    def booked(run, ctx):
        return StepPlan(node_id="booked", complete_output={"approval": run.vars["approval"]})

    trip = WorkflowSpec(workflow_id="trip", entry_node="book_trip", nodes={"book_trip": book_trip, "booked": booked})
    ''')


def dev_module(with_finish: bool) -> str:
    return textwrap.dedent(f'''
        from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

        def ask(run, ctx):
            return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {{"prompt": "Ship it?"}}, "answer"),
                            next_node={"'finish'" if with_finish else "'wrap'"})

        def finish(run, ctx):
            return StepPlan(node_id="finish", complete_output={{"via": "finish"}})

        def wrap(run, ctx):
            return StepPlan(node_id="wrap", complete_output={{"via": "wrap"}})

        dev = WorkflowSpec(workflow_id="dev", entry_node="ask",
                           nodes={{"ask": ask, {'"finish": finish, ' if with_finish else ""}"wrap": wrap}})
        ''')


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("WEB_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    wf = tmp / "wf"
    wf.mkdir()
    (wf / "flows.py").write_text(FLOWS)
    (wf / "dev.py").write_text(dev_module(with_finish=True))
    d = start_web_daemon(tmp, wf)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def login_link(d) -> str:
    r = cli(d.tmp, "ui", "--no-open", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    url = r.stdout.splitlines()[0]
    assert url.startswith(d.base + "/login?code="), r.stdout
    return url


def signed_in(ctx, d) -> Page:
    """A page of browser context `ctx`, signed in to `d` through a one-time link, and live."""
    pg = ctx.new_page()
    pg.goto(login_link(d))
    expect(pg.locator("#conn")).to_have_text("live")
    return pg


@pytest.fixture
def page(browser, web):
    """A fresh browser profile, signed in."""
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    yield signed_in(ctx, web)
    ctx.close()


def test_a_run_started_from_the_cli_appears_without_reload_and_is_answered_in_the_page(page: Page, web, shots):
    page.evaluate("window.sameDocument = true")  # gone if the page reloaded
    r = cli(web.tmp, "start", "expense", "--vars", '{"amount": 120}', "--socket", web.socket, "--json")
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]

    row = page.locator(f'#runs tr[data-run="{run_id}"]')
    expect(row).to_contain_text("waiting")
    expect(row).to_contain_text("Approve an expense of 120 EUR?")
    expect(page.locator(f'.waiting-list li[data-run="{run_id}"]')).to_contain_text("Approve an expense of 120 EUR?")
    assert page.evaluate("window.sameDocument") is True
    page.screenshot(path=shots / "runs.png", full_page=True)

    row.locator("a.run-id").click()
    expect(page.locator("#run-id")).to_have_text(run_id)
    expect(page.locator(".chain")).to_contain_text("verified")
    expect(page.locator('.graph .node.current[data-node="ask"]')).to_have_count(1)
    page.screenshot(path=shots / "run-waiting.png", full_page=True)
    page.get_by_role("button", name="approve").click()

    expect(page.locator(".run-header .status")).to_contain_text("completed")
    timeline = page.locator("#timeline tbody")
    expect(timeline.locator("tr", has_text="book")).not_to_have_count(0)
    expect(timeline.locator('tr[data-status="completed"]', has_text="ask")).to_contain_text('answered “approve”')
    # The path it took is drawn: ask -> decide -> book -> done, and no node is current.
    for node in ("ask", "decide", "book", "done"):
        expect(page.locator(f'.graph .node.on-path[data-node="{node}"]')).to_have_count(1)
    expect(page.locator(".graph .edge.on-path[data-edge='decide>book']")).to_have_count(1)
    expect(page.locator(".graph .node.current")).to_have_count(0)
    expect(page.locator(".chain")).to_contain_text("verified, 6 record(s)")
    page.screenshot(path=shots / "run-completed.png", full_page=True)
    with web.client() as c:
        assert c.state(run_id).output == {"decision": "approve"}


def test_a_failed_runs_traceback_is_shown(page: Page, web, shots):
    with web.client() as c:
        run_id = c.start("invoice").run_id
        assert c.state(run_id).status == "failed"
    page.locator("#filter-status").select_option("failed")
    expect(page).to_have_url(re.compile(r"#/\?status=failed$"))
    expect(page.locator('#runs tbody tr[data-run]:not([data-status="failed"])')).to_have_count(0)
    row = page.locator(f'#runs tr[data-run="{run_id}"]')
    expect(row).to_contain_text("the invoice total is negative")
    row.locator("a.run-id").click()
    failed = page.locator('#timeline tr[data-status="failed"]')
    expect(failed).to_contain_text("the invoice total is negative")
    failed.locator("summary", has_text="traceback").click()
    tb = failed.locator(".traceback pre")
    expect(tb).to_be_visible()
    expect(tb).to_contain_text("Traceback (most recent call last)")
    expect(tb).to_contain_text("in total")
    expect(tb).to_contain_text("ValueError: the invoice total is negative")
    expect(page.locator("#retry")).to_be_visible()
    page.screenshot(path=shots / "run-failed.png", full_page=True)


def test_a_fork_from_a_middle_step_starts_a_run_whose_origin_is_shown(page: Page, web, shots):
    with web.client() as c:
        src = c.start("doubler", {"count": 1})
        assert src.state.waiting.prompt == "Double is 2: fine?"
        records = c.ledger(src.run_id).records
    after_count = next(r.seq for r in records if r.node_id == "count" and r.status == "completed")
    page.goto(f"{web.base}/#/run/{src.run_id}")
    row = page.locator(f'#timeline tr[data-seq="{after_count}"]')
    row.get_by_role("button", name=f"Fork from record {after_count}").click()
    page.locator(f"#fork-vars-{after_count}").fill('{"count": 5}')
    page.screenshot(path=shots / "fork-form.png", full_page=True)
    page.get_by_role("button", name=f"Start a fork after record {after_count}").click()

    origin = page.locator("#fork-origin")
    expect(origin).to_contain_text(src.run_id)
    expect(origin).to_contain_text(f"after record {after_count}")
    expect(origin).to_contain_text('{"count":5}')
    expect(page.locator(".actions .prompt")).to_have_text("Double is 10: fine?")
    fork_id = page.locator("#run-id").inner_text()
    assert fork_id != src.run_id
    with web.client() as c:
        st = c.state(fork_id)
        assert st.vars["doubled"] == 10 and st.status == "waiting"
    page.screenshot(path=shots / "fork.png", full_page=True)


def test_a_stranded_run_after_a_reload_shows_and_migrates(page: Page, web, shots):
    with web.client() as c:
        run_id = c.start("dev").run_id
        assert c.state(run_id).waiting.resume_to_node == "finish"
    page.goto(f"{web.base}/#/workflows")
    expect(page.locator("#workflows tr[data-workflow='dev']")).to_be_visible()
    try:
        (web.wf / "dev.py").write_text(dev_module(with_finish=False))  # `finish` is gone
        expect(page.locator("#banner")).to_contain_text("stranded")  # told by workflows/changed
        form = page.locator(f'#stranded form[data-run="{run_id}"]')
        expect(form).to_contain_text("finish")
        page.screenshot(path=shots / "stranded.png", full_page=True)
        form.locator("select").select_option("wrap")
        form.get_by_role("button", name="Migrate").click()
        expect(page.locator("#banner")).to_contain_text(f"Migrated run {run_id} to node wrap")
        expect(page.locator(f'#stranded form[data-run="{run_id}"]')).to_have_count(0)
        with web.client() as c:
            st = c.state(run_id)
            assert st.status == "waiting" and st.waiting.resume_to_node == "wrap"
            assert c.resume(run_id, {"text": "yes"}).output == {"via": "wrap"}
    finally:
        (web.wf / "dev.py").write_text(dev_module(with_finish=True))


def test_a_load_error_shows_with_its_file_and_line(page: Page, web, shots):
    page.goto(f"{web.base}/#/workflows")
    expect(page.locator("#workflows tr[data-workflow='expense']")).to_be_visible()
    broken = web.wf / "broken.py"
    try:
        broken.write_text("from abstractruntime import WorkflowSpec\n\ndef oops(:\n")
        expect(page.locator("#load-errors")).to_contain_text("broken.py:3")
        expect(page.locator("#banner")).to_contain_text("failed to load")
        page.screenshot(path=shots / "workflows.png", full_page=True)
    finally:
        broken.unlink()
    expect(page.locator("#load-errors")).to_have_count(0)


def test_emit_an_event_cancel_and_retry_from_the_page(page: Page, web, shots):
    with web.client() as c:
        waiting = c.start("payment").run_id
        doomed = c.start("expense", {"amount": 1}).run_id
        failed = c.start("bank").run_id
        assert c.state(failed).status == "failed"

    page.goto(f"{web.base}/#/run/{waiting}")
    expect(page.locator(".actions form.emit")).to_contain_text("paid")
    page.locator("#event-payload").fill('{"amount": 42}')
    page.get_by_role("button", name="Emit paid").click()
    expect(page.locator(".run-header .status")).to_contain_text("completed")

    page.goto(f"{web.base}/#/run/{doomed}")
    page.once("dialog", lambda d: d.accept())  # "Cancel run ...?"
    page.locator("#cancel").click()
    expect(page.locator(".run-header .status")).to_contain_text("cancelled")

    (web.tmp / "bank-open").write_text("")
    page.goto(f"{web.base}/#/run/{failed}")
    expect(page.locator("#timeline")).to_contain_text("the bank is closed")
    page.locator("#retry").click()
    expect(page.locator(".run-header .status")).to_contain_text("completed")
    expect(page.locator("#timeline tbody tr").last).to_contain_text("fetched")
    with web.client() as c:
        assert c.state(waiting).output == {"paid": {"amount": 42}}
        assert c.state(doomed).status == "cancelled"
        assert c.state(failed).output == {"fetched": True}


def test_a_parent_and_its_child_link_to_each_other(page: Page, web):
    with web.client() as c:
        parent = c.start("trip").run_id
        child = c.runs(parent_run_id=parent).runs[0]
        assert child.workflow_id == "expense" and child.status == "waiting"
    page.goto(f"{web.base}/#/?workflow=expense")
    expect(page.locator(f'#runs tr[data-run="{child.run_id}"] .tag')).to_have_text("child")
    page.goto(f"{web.base}/#/run/{parent}")
    kids = page.locator(".run-header dd", has_text="expense, waiting")
    expect(kids).to_contain_text(child.run_id[:8])
    kids.locator("a.run-id").click()
    expect(page.locator("#run-id")).to_have_text(child.run_id)
    expect(page.locator(".run-header dd", has_text=parent)).to_be_visible()
    # Answering the child in the page wakes the parent, whose page shows it.
    page.get_by_role("button", name="approve").click()
    expect(page.locator(".run-header .status")).to_contain_text("completed")
    page.locator(".run-header dd a", has_text=parent).click()
    expect(page.locator(".run-header .status")).to_contain_text("completed")


def test_the_runs_list_pages_newest_first(page: Page, web):
    with web.client() as c:
        ids = [c.start("invoice").run_id for _ in range(55)]
        total = len(c.runs(workflow_id="invoice", limit=1000).runs)
    page.locator("#filter-workflow").select_option("invoice")
    rows = page.locator("#runs tbody tr[data-run]")
    expect(rows).to_have_count(50)
    assert rows.first.get_attribute("data-run") == ids[-1]  # newest first
    older = page.get_by_role("link", name=re.compile(r"older"))
    expect(older).to_contain_text(f"({total - 50} more)")
    older.click()
    expect(rows).to_have_count(total - 50)
    assert ids[-51] in [rows.nth(i).get_attribute("data-run") for i in range(total - 50)]
    page.get_by_role("link", name=re.compile(r"newer")).click()
    expect(rows).to_have_count(50)
    assert rows.first.get_attribute("data-run") == ids[-1]


def test_a_wrong_or_missing_token_gets_no_data(browser, web, shots):
    with web.client() as c:
        c.start("expense", {"amount": 7})  # there is data to leak
    ctx = browser.new_context()
    try:
        pg = ctx.new_page()
        seen = []
        pg.on("websocket", lambda ws: ws.on("framereceived", lambda f: seen.append(f)))
        pg.goto(web.base + "/")  # no cookie
        expect(pg.locator(".signin")).to_contain_text("Not signed in")
        expect(pg.locator("#conn")).to_have_text("not connected")
        assert pg.locator("#runs").count() == 0
        pg.screenshot(path=shots / "signed-out.png")

        port = web.base.rsplit(":", 1)[1]
        ctx.add_cookies([{"name": f"abstractruntime_{port}", "value": "x" * 43, "url": web.base}])
        pg.reload()
        expect(pg.locator(".signin")).to_contain_text("Not signed in")
        assert seen == []  # not one frame reached the page

        # A login link works once.
        url = login_link(web)
        assert pg.goto(url).status == 200 and pg.locator("#conn").inner_text() in ("connecting…", "live")
        expect(pg.locator("#conn")).to_have_text("live")
        again = pg.goto(url)
        assert again.status == 403 and "used already or has expired" in pg.content()
    finally:
        ctx.close()


def test_a_page_from_another_origin_cannot_connect(page: Page, web):
    # A page of another origin (another port on this machine) in a browser that is signed in:
    # the cookie goes with its handshake (same site), the Origin check refuses it.
    target = web.base.replace("http://", "ws://") + "/rpc"

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (f"<title>evil</title><script>const ws = new WebSocket({json.dumps(target)});"
                    "ws.onopen = () => document.title = 'open';"
                    "ws.onerror = () => document.title = 'refused';</script>").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{srv.server_address[1]}/")
        expect(page).to_have_title("refused")
        log = web.log.read_text()
        assert re.search(r"refused a WebSocket from origin 'http://127\.0\.0\.1:\d+'", log), log[-2000:]
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_page_follows_a_daemon_that_restarts_with_the_same_token(browser, tmp_path, monkeypatch):
    monkeypatch.setenv("ABSTRACTRUNTIME_TOKEN", "a-token-several-daemons-share")
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "flows.py").write_text(FLOWS)
    d = start_web_daemon(tmp_path, wf)
    ctx = browser.new_context()
    try:
        pg = signed_in(ctx, d)
        pg.evaluate("window.sameDocument = true")
        d.stop()
        expect(pg.locator("#conn")).to_have_text("reconnecting…")
        d.start()
        expect(pg.locator("#conn")).to_have_text("live")
        with d.client() as c:
            run_id = c.start("expense", {"amount": 5}).run_id
        expect(pg.locator(f'#runs tr[data-run="{run_id}"]')).to_contain_text("waiting")
        assert pg.evaluate("window.sameDocument") is True
    finally:
        ctx.close()
        d.stop()


def test_keyboard_at_phone_width_finds_and_answers_a_run(browser, web, shots):
    with web.client() as c:
        run_id = c.start("expense", {"amount": 33}).run_id
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        pg = signed_in(ctx, web)
        expect(pg.locator(f'#runs tr[data-run="{run_id}"]')).to_be_visible()
        pg.screenshot(path=shots / "phone-runs.png", full_page=True)
        pg.keyboard.press("/")
        expect(pg.locator("#search")).to_be_focused()
        pg.keyboard.type(run_id[:13])
        pg.keyboard.press("Enter")
        expect(pg.locator("#run-id")).to_have_text(run_id)
        for _ in range(40):  # Tab to the answer
            pg.keyboard.press("Tab")
            if pg.evaluate("document.activeElement.textContent") == "approve":
                break
        pg.keyboard.press("Enter")
        expect(pg.locator(".run-header .status")).to_contain_text("completed")
        expect(pg.locator(".chain")).to_contain_text("verified, 6 record(s)")  # checked again as records came
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the run page is {width}px wide at phone width"
        pg.screenshot(path=shots / "phone-run.png", full_page=True)
    finally:
        ctx.close()


def test_streamed_model_tokens_show_live_in_the_timeline(browser, tmp_path, shots):
    pytest.importorskip("abstractcore", reason="the streaming test needs abstractruntime[abstractcore]")
    from fake_llm import FakeLLMServer

    srv = FakeLLMServer()
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "story.py").write_text(textwrap.dedent("""
        from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

        def go(run, ctx):  # the page opens the run while it waits here, before the model streams
            return StepPlan(node_id="go", effect=Effect(EffectType.ASK_USER, {"prompt": "Tell it?"}, "go"),
                            next_node="ask")

        def ask(run, ctx):
            return StepPlan(node_id="ask", effect=Effect(EffectType.LLM_CALL, {"prompt": "tell me"}, "llm"),
                            next_node="done")

        def done(run, ctx):
            return StepPlan(node_id="done", complete_output={"text": run.vars["llm"]["content"]})

        story = WorkflowSpec(workflow_id="story", entry_node="go", nodes={"go": go, "ask": ask, "done": done})
        """))
    tokens = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "ledger."]
    srv.add({"tokens": tokens, "gap": 0.05})
    d = start_web_daemon(tmp_path, wf, "--llm-provider", "openai-compatible", "--llm-model", "test-model",
                         "--llm-base-url", srv.url + "/v1", "--llm-timeout", "5")
    ctx = browser.new_context()
    try:
        pg = signed_in(ctx, d)
        with d.client() as c:
            run_id = c.start("story").run_id
            pg.goto(f"{d.base}/#/run/{run_id}")
            expect(pg.locator(".actions .prompt")).to_have_text("Tell it?")
            # Record every piece the page appends to its live output, as it appends it.
            pg.evaluate("""() => { window.pieces = [];
                new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes)
                    if (n.nodeType === 3) window.pieces.push(n.textContent); })
                  .observe(document.querySelector('pre.live'), {childList: true}); }""")
            c.resume(run_id, {"text": "go"})
        expect(pg.locator(".run-header .status")).to_contain_text("completed")
        pieces = pg.evaluate("window.pieces")
        assert "".join(pieces).endswith("".join(tokens)) and len(pieces) >= 3, pieces
        expect(pg.locator("pre.live")).to_be_hidden()  # the record of the call holds the whole answer now
        expect(pg.locator("#timeline tbody")).to_contain_text("ledger.")
    finally:
        ctx.close()
        d.stop()
        srv.close()
