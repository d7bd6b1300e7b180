"""Hot reload: save -> new version serving and `workflows/changed` received, over N edits.

Ours: one daemon watches a workflow folder; a connected client edits a module (an atomic save:
temp file + rename, as editors do) and times the save to the moment the `workflows/changed`
naming the new version arrives. The daemon sends it after the registry holds the new version,
so at that moment the new code is serving; the bench checks it with `workflows/list` (not
timed) after every edit.

The peer, in the same run: restart-on-save, what one does without hot reload
(`watchfiles 'abstractruntime serve ...' DIR`, watchfiles's own CLI restarting the daemon):
timed from the save to the first `workflows/list` that shows the new version on a new
connection. Reported as p50/p90 for both and the ratio of the p50s. A third figure repeats ours
on the fsync'd file store with `--waiting` runs waiting in the edited workflow, each of which a
reload checks for a missing resume node.

    python bench/reload_bench.py [--edits 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, median, pct, save  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from abstractruntime.client.aio import AsyncClient, Target  # noqa: E402
from abstractruntime.client.connection import env_with_package  # noqa: E402
from abstractruntime.daemon.loader import source_version  # noqa: E402

MODULE = '''\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec


def ask(run, ctx):
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {{"prompt": "edit {n}?"}}, result_key="a"),
                    next_node="done")


def done(run, ctx):
    return StepPlan(node_id="done", complete_output={{"edit": {n}}})


flow = WorkflowSpec(workflow_id="flow", entry_node="ask", nodes={{"ask": ask, "done": done}})
'''


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def wait_socket(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"no socket at {path}")


async def ours(tmp: Path, edits: int, waiting: int = 0, store: str = "memory") -> tuple:
    wf = tmp / f"wf-{waiting}"
    wf.mkdir()
    mod = wf / "flow.py"
    mod.write_text(MODULE.format(n=0))
    sock = str(tmp / f"d{waiting}.sock")
    log = open(tmp / "ours.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "abstractruntime", "serve", "--data", str(tmp / f"data-{waiting}"), "--workflows",
         str(wf), "--socket", sock, "--store", store, "--log-level", "warning"],
        env=env_with_package(), stdout=subprocess.DEVNULL, stderr=log,
    )
    try:
        await wait_socket(sock)
        c = await AsyncClient(Target("unix", path=sock)).connect()
        # Waiting runs of the workflow: every reload checks each one for a missing resume node.
        for i in range(0, waiting, 200):
            await asyncio.gather(*(c.start("flow") for _ in range(min(200, waiting - i))))
        out, inside = [], []
        for n in range(1, edits + 1):
            text = MODULE.format(n=n)
            want = source_version(text.encode())
            t0 = time.perf_counter()
            write_atomic(mod, text)
            while True:
                ch = await c.next_workflow_change(timeout=10)
                if any(x.new_version == want for x in ch.changed):
                    break
            out.append(time.perf_counter() - t0)
            inside.append((ch.elapsed_ms or 0) / 1000)
            serving = {w.workflow_id: w.version for w in await c.workflows()}
            assert serving["flow"] == want, (serving, want)
            await asyncio.sleep(0.05)  # edits a person makes are apart
        await c.close()
        return out, inside
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


async def restart_on_save(tmp: Path, edits: int) -> list:
    wf = tmp / "wf-peer"
    wf.mkdir()
    mod = wf / "flow.py"
    mod.write_text(MODULE.format(n=0))
    sock = str(tmp / "peer.sock")
    serve = (
        f"{sys.executable} -m abstractruntime serve --data {tmp / 'data-peer'} --workflows {wf} --socket {sock} "
        "--store memory --no-watch --log-level warning"
    )
    watchfiles = shutil.which("watchfiles", path=os.path.dirname(sys.executable)) or "watchfiles"
    log = open(tmp / "peer.log", "wb")
    proc = subprocess.Popen(
        [watchfiles, "--filter", "python", "--non-recursive", "--sigint-timeout", "5", serve, str(wf)],
        env=env_with_package(), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )
    try:
        await wait_socket(sock)
        out = []
        for n in range(1, edits + 1):
            text = MODULE.format(n=n)
            want = source_version(text.encode())
            t0 = time.perf_counter()
            write_atomic(mod, text)
            while True:
                try:
                    c = await AsyncClient(Target("unix", path=sock)).connect()
                    try:
                        serving = {w.workflow_id: w.version for w in await c.workflows()}
                    finally:
                        await c.close()
                    if serving.get("flow") == want:
                        break
                except Exception:  # the old daemon stopping, or the new one not listening yet
                    if time.perf_counter() - t0 > 30:
                        raise
                await asyncio.sleep(0.005)
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
        return out
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--waiting", type=int, default=10_000, help="waiting runs in the loaded variant")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ar-reload-"))
    try:
        a, a_in = asyncio.run(ours(tmp, args.edits))
        b = asyncio.run(restart_on_save(tmp, args.edits))
        loaded, loaded_in = asyncio.run(ours(tmp, args.edits, waiting=args.waiting, store="files"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ms = lambda xs, p: round(pct(xs, p) * 1000, 1)  # noqa: E731
    result = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "edits": args.edits,
        "hot_reload_ms": {"p50": ms(a, 50), "p90": ms(a, 90), "max": round(max(a) * 1000, 1)},
        "rescan_in_daemon_ms": {"p50": ms(a_in, 50), "p90": ms(a_in, 90)},
        f"rescan_in_daemon_{args.waiting}_waiting_ms": {"p50": ms(loaded_in, 50), "p90": ms(loaded_in, 90)},
        f"hot_reload_{args.waiting}_waiting_files_ms": {
            "p50": ms(loaded, 50),
            "p90": ms(loaded, 90),
            "max": round(max(loaded) * 1000, 1),
        },
        "restart_on_save_ms": {"p50": ms(b, 50), "p90": ms(b, 90), "max": round(max(b) * 1000, 1)},
        "ratio_p50_restart_over_hot": round(median(b) / median(a), 2),
    }
    print(
        f"save -> serving, {args.edits} edits: hot reload p50 {result['hot_reload_ms']['p50']} ms "
        f"p90 {result['hot_reload_ms']['p90']} ms; restart-on-save p50 {result['restart_on_save_ms']['p50']} ms "
        f"p90 {result['restart_on_save_ms']['p90']} ms; restart/hot = {result['ratio_p50_restart_over_hot']}x; "
        f"hot reload with {args.waiting} waiting runs (file store) p50 {ms(loaded, 50)} ms",
        file=sys.stderr,
    )
    save("reload", result)
    import json

    print(json.dumps(result))


if __name__ == "__main__":
    main()
