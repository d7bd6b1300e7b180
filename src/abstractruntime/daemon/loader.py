"""Loading workflow modules from folders.

Convention: every `.py` file in a workflow folder is a module; each `WorkflowSpec` bound at
its module level is a workflow, registered under its `workflow_id`. Modules are imported
under private names (`_abstractruntime_workflows.<hash>.<stem>`) that never collide with a
user's own modules, and are not left in `sys.modules`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from typing import Any, Dict, List, Tuple

from ..core.spec import WorkflowSpec


def load_module_specs(path: str) -> List[WorkflowSpec]:
    """Import one file as a fresh module and return its WorkflowSpecs (raises on any error)."""
    with open(path, "rb") as f:
        source = f.read()
    version = hashlib.sha256(source).hexdigest()[:12]
    name = f"_abstractruntime_workflows.m{hashlib.sha1(path.encode()).hexdigest()[:10]}_{version}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    found = []
    for value in vars(module).values():
        if isinstance(value, WorkflowSpec):
            value.version = version
            value.source = path
            found.append(value)
    return found


def load_workflow_dirs(dirs: List[str]) -> Tuple[List[WorkflowSpec], List[Dict[str, Any]]]:
    specs: List[WorkflowSpec] = []
    errors: List[Dict[str, Any]] = []
    where: Dict[str, str] = {}
    for d in dirs:
        if not os.path.isdir(d):
            errors.append({"file": d, "line": None, "message": "workflow folder does not exist"})
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(".py") or name.startswith("_"):
                continue
            path = os.path.join(d, name)
            try:
                found = load_module_specs(path)
            except Exception as e:  # isolation boundary: one broken module never stops the others
                errors.append(_describe(path, e))
                continue
            for wf in found:
                if wf.workflow_id in where:
                    errors.append(
                        {
                            "file": path,
                            "line": None,
                            "message": f"workflow {wf.workflow_id!r} is defined in both {where[wf.workflow_id]} and {path}",
                        }
                    )
                    continue
                where[wf.workflow_id] = path
                specs.append(wf)
    return specs, errors


def _describe(path: str, e: BaseException) -> Dict[str, Any]:
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    if line is None:
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if frame.filename == path:
                line = frame.lineno
                break
    return {"file": path, "line": line, "message": f"{type(e).__name__}: {e}"}
