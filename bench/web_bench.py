"""From a commit to the web page's DOM showing it, beside a socket subscriber's figure.

One daemon (`--http`, fsync'd file stores) serves the page to Debian's chromium (Playwright,
headless) and a Python subscriber on its unix socket, both following every run. A driver
starts N runs one after another, each of which waits for an answer and is then answered: two
status changes per run (waiting, completed). For each, both clients' delays are taken from the
same commit:

- the subscriber: the `runtime/event` received, minus the event's `committed_at` (stamped by
  the daemon when the store reports the commit);
- the page: the runs table's row showing that status (a MutationObserver in the page stamps
  it when the row is put in the DOM), minus the same `committed_at`.

Both are on this machine's clock. The page's figure adds the WebSocket, the browser's JSON
parse, the TypeScript client and the DOM update; it stops before paint.

    python bench/web_bench.py [--runs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, median, pct, save  # noqa: E402
from daemon_bench import spawn_daemon  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from abstractruntime.client.aio import AsyncClient, Target  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]

OBSERVE = """() => {
  window.seen = {};
  const stamp = (tr) => {
    const key = tr.dataset.run + '|' + tr.dataset.status;
    if (!(key in window.seen)) window.seen[key] = performance.timeOrigin + performance.now();
  };
  new MutationObserver((ms) => { for (const m of ms) for (const n of m.addedNodes)
      if (n.nodeType === 1 && n.matches('tr[data-run]')) stamp(n); })
    .observe(document.querySelector('#runs tbody'), { childList: true });
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=500)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    tmp = Path(tempfile.mkdtemp(prefix="ar_web_"))
    port = free_port()
    proc, sock = spawn_daemon(tmp, "--http", f"127.0.0.1:{port}")
    committed: dict = {}  # (run, status) -> committed_at (epoch s)
    received: dict = {}  # (run, status) -> when the socket subscriber had it (epoch s)
    try:
        while not (tmp / "data" / "daemon.json").exists() or "http" not in json.loads((tmp / "data" / "daemon.json").read_text()):
            time.sleep(0.02)

        async def link() -> str:
            c = AsyncClient(Target("unix", path=sock))
            await c.connect()
            try:
                return (await c.web_link()).url
            finally:
                await c.close()

        url = asyncio.run(link())
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#conn:text('live')")
            page.evaluate(OBSERVE)

            async def drive() -> None:
                watcher = AsyncClient(Target("unix", path=sock))
                await watcher.connect()
                driver = AsyncClient(Target("unix", path=sock))
                await driver.connect()
                want = a.runs * 2

                async def watch() -> None:
                    async for ev in watcher.subscribe():
                        if ev.kind == "state" and ev.state is not None and ev.state.status in ("waiting", "completed"):
                            received[(ev.run_id, ev.state.status)] = time.time()
                            committed[(ev.run_id, ev.state.status)] = ev.committed_at
                            if len(received) >= want:
                                return

                task = asyncio.ensure_future(watch())
                await asyncio.sleep(0.2)
                for _ in range(a.runs):
                    rid = (await driver.start("ask")).run_id
                    await driver.resume(rid, {"text": "y"})
                    await asyncio.sleep(0.005)
                await asyncio.wait_for(task, 60)
                await watcher.close()
                await driver.close()

            # Playwright's sync API holds this thread's event loop: the clients run on another.
            driver = threading.Thread(target=lambda: asyncio.run(drive()))
            driver.start()
            driver.join()
            deadline = time.time() + 30
            while time.time() < deadline and page.evaluate("Object.keys(window.seen).length") < len(committed):
                time.sleep(0.05)
            seen = page.evaluate("window.seen")
            browser.close()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    page_ms, sock_ms = [], []
    for (run, status), t in committed.items():
        if t is None:
            continue
        sock_ms.append((received[(run, status)] - t) * 1000)
        dom = seen.get(f"{run}|{status}")
        if dom is not None:
            page_ms.append(dom - t * 1000)
    out = {
        "runs": a.runs,
        "changes": len(committed),
        "page_seen": len(page_ms),
        "page": {"p50_ms": median(page_ms), "p99_ms": pct(page_ms, 99), "max_ms": max(page_ms)},
        "socket": {"p50_ms": median(sock_ms), "p99_ms": pct(sock_ms, 99), "max_ms": max(sock_ms)},
    }
    out["page_over_socket_p50"] = out["page"]["p50_ms"] / out["socket"]["p50_ms"]
    print(f"{a.runs} runs, {len(committed)} status changes; the page showed {len(page_ms)}")
    for who in ("socket", "page"):
        r = out[who]
        print(f"  {who:<6} commit -> {'DOM' if who == 'page' else 'event'}: p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms")
    print(f"  page p50 / socket p50: {out['page_over_socket_p50']:.2f}x")
    save("web", out)


if __name__ == "__main__":
    main()
