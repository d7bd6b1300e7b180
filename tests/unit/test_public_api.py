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
    for path in (SRC / "core").glob("*.py"):
        for level, module in _imports(path):
            if level == 0:
                assert module.split(".")[0] in stdlib, f"{path.name} imports third-party {module}"
            else:
                # relative imports must stay inside core (level 1: from .x)
                assert level == 1, f"{path.name} imports ..{module} from outside the kernel"


def test_storage_depends_only_on_core():
    for path in (SRC / "storage").glob("*.py"):
        for level, module in _imports(path):
            if level == 2:
                assert module.startswith("core"), f"{path.name} imports ..{module}"
