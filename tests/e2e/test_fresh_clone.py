"""A newcomer's clone has nothing beside it: the unit tier passes there, and a tier whose tool is
missing says in one line what to install instead of failing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT


def clone(dest: Path) -> Path:
    """The working tree as a fresh clone would have it (tracked and new files, nothing ignored),
    alone in an empty folder: no ../shared beside it, no venv, no node_modules."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    target = dest / "p"
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.exists():
            continue  # deleted in the working tree, not yet committed
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target / rel, follow_symlinks=False)
    assert not (dest / "shared").exists() and os.listdir(dest) == ["p"]
    return target


def _env(path: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_") and k not in ("CI", "PYTHONPATH")}
    env["PATH"] = path
    return env


def test_the_unit_tier_passes_in_a_clone_with_nothing_beside_it(tmp_path):
    p = clone(tmp_path)
    env = _env(os.environ["PATH"])
    which = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'src'); import abstractruntime; "
                            "print(abstractruntime.__file__)"], cwd=p, env=env, capture_output=True, text=True)
    assert which.stdout.strip() == str(p / "src" / "abstractruntime" / "__init__.py")  # the clone's code is tested
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/unit", "-q", "-n", "2", "-p", "no:cacheprovider"],
                         cwd=p, env=env, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "the seed document is not beside this checkout" in run.stdout  # skipped, with its reason
    print(f"unit tier in a fresh clone: {took:.1f} s")


def test_a_run_without_node_neovim_and_chromium_skips_those_tiers_with_one_line_each(tmp_path):
    p = clone(tmp_path)
    bare = tmp_path / "bin"  # a PATH with Python and git only
    bare.mkdir()
    for tool in ("git",):
        found = shutil.which(tool)
        if found:
            (bare / tool).symlink_to(found)
    (bare / "python3").symlink_to(sys.executable)
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/e2e/test_typescript.py", "tests/e2e/test_neovim.py",
                          "tests/e2e/test_web.py", "-q", "-rs", "-p", "no:cacheprovider"], cwd=p, env=_env(str(bare)),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 5, run.stdout[-3000:]  # pytest's "no tests ran": every tier skipped, nothing failed
    skips = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 3, run.stdout
    assert any("TypeScript client tier skipped: npm not found; install Node.js and npm" in s for s in skips)
    assert any("Neovim plugin tier skipped: nvim not found; install Neovim" in s for s in skips)
    assert any("browser tier skipped: chromium not found; install Debian's chromium" in s for s in skips)
    print("\n".join(skips))


def test_in_ci_a_missing_tool_fails_instead_of_skipping(tmp_path):
    p = clone(tmp_path)
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    env = dict(_env(str(bare)), CI="true")
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/e2e/test_neovim.py", "-q", "-p", "no:cacheprovider"],
                         cwd=p, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "in CI, make test installs it" in run.stdout
