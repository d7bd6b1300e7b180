"""The public surface is declared once and the kernel's import direction holds."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "abstractruntime"

PACKAGES = ["abstractruntime", "abstractruntime.core", "abstractruntime.storage", "abstractruntime.scheduler"]

# The published package's module paths are checked in tests/compat/test_published_names.py.


@pytest.mark.parametrize("pkg", PACKAGES)
def test_all_is_sorted_and_importable(pkg):
    mod = importlib.import_module(pkg)
    assert list(mod.__all__) == sorted(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{pkg}.{name}"


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield 0, a.name


def test_the_kernel_imports_no_outer_layer_and_no_third_party_package():
    import sys

    stdlib = sys.stdlib_module_names
    # orjson is optional (tried, with the standard library as the fallback): see the next test.
    optional = {("jsonutil.py", "orjson")}
    for path in (SRC / "core").glob("*.py"):
        for level, module in _imports(path):
            if level == 0:
                ok = module.split(".")[0] in stdlib or (path.name, module) in optional
                assert ok, f"{path.name} imports third-party {module}"
            else:
                # relative imports must stay inside core (level 1: from .x)
                assert level == 1, f"{path.name} imports ..{module} from outside the kernel"


def test_the_kernel_runs_without_orjson():
    """With orjson unimportable the kernel, its stores and the codec helpers work as before."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["orjson"] = None  # any import of it fails
from abstractruntime import Effect, EffectType, Runtime, StepPlan, WorkflowSpec
from abstractruntime.core import jsonutil
from abstractruntime.storage import InMemoryLedgerStore, InMemoryRunStore
assert jsonutil._orjson is None
ask = lambda run, ctx: StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?"}, "a"), next_node="end")
end = lambda run, ctx: StepPlan(node_id="end", complete_output={"a": run.vars["a"], "big": 2**70})
wf = WorkflowSpec(workflow_id="w", entry_node="ask", nodes={"ask": ask, "end": end})
rt = Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore())
rid = rt.start(workflow=wf)
st = rt.tick(workflow=wf, run_id=rid)
st = rt.resume(workflow=wf, run_id=rid, wait_key=st.waiting.wait_key, payload={"text": "é"})
assert st.output == {"a": {"text": "é"}, "big": 2**70}, st.output
assert rt.get_state(rid).output == st.output and rt.verify_ledger(rid)["ok"]
assert jsonutil.loads(jsonutil.wire({"x": [1, 2.5, None]})) == {"x": [1, 2.5, None]}
print("ok")
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env_with_src())
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_the_json_helpers_give_the_standard_librarys_values_where_orjson_refuses():
    from abstractruntime.core.jsonutil import loads, wire

    assert loads('{"n": 1180591620717411303424}') == {"n": 2**70}  # beyond 64 bits
    assert loads('"\\ud800"') == "\ud800"  # a lone surrogate
    assert loads(b'{"t": "caf\xc3\xa9", "f": 0.1}') == {"t": "café", "f": 0.1}
    assert loads(wire({"n": 2**70, "k": {"a": [1.5e300, -0.0]}})) == {"n": 2**70, "k": {"a": [1.5e300, -0.0]}}


def test_storage_depends_only_on_core():
    for path in (SRC / "storage").glob("*.py"):
        for level, module in _imports(path):
            if level == 2:
                assert module.startswith("core"), f"{path.name} imports ..{module}"


def _env_with_src() -> dict:
    import os

    return dict(os.environ, PYTHONPATH=str(SRC.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
