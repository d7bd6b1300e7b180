"""The TypeScript client's own suite (Node's test runner, clients/typescript/test) against a
real daemon: `npm test` builds the generated types and the client, then runs it. `make test`
installs the npm packages first (`npm ci`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
    assert "# fail 0" in p.stdout and "# pass 7" in p.stdout, summary
