"""The TypeScript client's own suite (Node's test runner, clients/typescript/test) against a
real daemon: `npm test` builds the generated types and the client, then runs it. `make test`
installs the npm packages first (`npm ci`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from docs_blocks import DOCS, blocks, make_reader_folder

from conftest import ROOT, require_tool

PKG = ROOT / "clients" / "typescript"
NPM = require_tool("npm", "Node.js and npm (Debian: apt install nodejs npm)", "TypeScript client")


def test_the_typescript_client_suite():
    if not (PKG / "node_modules").exists():
        pytest.fail("clients/typescript/node_modules is missing: run `make test` (it runs npm ci)")
    env = dict(os.environ, AR_PYTHON=sys.executable)
    p = subprocess.run([NPM, "test"], cwd=PKG, env=env, capture_output=True, text=True, timeout=600)
    summary = "\n".join(line for line in p.stdout.splitlines() if line.startswith(("ok", "not ok", "# pass", "# fail")))
    assert p.returncode == 0, f"{summary}\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}"
    assert "# fail 0" in p.stdout and "# pass 8" in p.stdout, summary


def test_the_web_page_in_the_package_is_built_from_its_sources():
    """The page the daemon serves (src/abstractruntime/web/static, shipped so that pip needs no
    Node) is what clients/typescript/web builds to: type-checked, bundled, byte for byte."""
    p = subprocess.run([NPM, "run", "check:web"], cwd=PKG, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_the_typescript_blocks_of_the_docs_compile_and_run(tmp_path):
    """Each TypeScript block of the docs, type-checked against the built client and run under Node
    in a folder laid out like this repository (its `RuntimeClient.spawn()` starts the daemon)."""
    if not (PKG / "dist" / "src" / "index.js").exists():
        subprocess.run([NPM, "run", "build"], cwd=PKG, check=True, capture_output=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    folder = tmp_path / "reader"
    make_reader_folder(folder, env)
    ts_blocks = [b for d in DOCS for b in blocks(d) if b.runner == "typescript" and not b.not_run]
    assert ts_blocks, "no TypeScript block found in the docs"
    for b in ts_blocks:
        work = tmp_path / f"block{b.index}"
        (work / "node_modules" / "@abstractruntime").mkdir(parents=True)
        (work / "node_modules" / "@abstractruntime" / "client").symlink_to(PKG)
        (work / "main.ts").write_text(b.code)
        (work / "tsconfig.json").write_text(json.dumps({
            "compilerOptions": {"target": "ES2022", "module": "node16", "moduleResolution": "node16", "strict": True,
                                "esModuleInterop": True, "skipLibCheck": True, "types": ["node"],
                                "typeRoots": [str(PKG / "node_modules" / "@types")]},
            "files": ["main.ts"],
        }))
        tsc = subprocess.run([str(PKG / "node_modules" / ".bin" / "tsc"), "-p", str(work)], capture_output=True, text=True,
                             timeout=300)
        assert tsc.returncode == 0, f"{b.where} does not compile:\n{tsc.stdout}{tsc.stderr}"
        try:
            run = subprocess.run(["node", str(work / "main.js")], cwd=folder, env=env, capture_output=True, text=True,
                                 timeout=120)
        finally:
            subprocess.run([str(folder / ".venv" / "bin" / "abstractruntime"), "stop"], cwd=folder, env=env,
                           capture_output=True, timeout=60)
        assert run.returncode == 0, f"{b.where} failed:\n{run.stdout}\n{run.stderr}"
        if "approval" in b.code:
            assert "waiting Approve an expense of 120 EUR?" in run.stdout and "decision: 'approve'" in run.stdout
