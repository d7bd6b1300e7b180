"""Loading workflow modules from folders, and loading them again when they change.

Convention: every `.py` file directly in a workflow folder is a module (files whose name starts
with `_` or `.` are skipped: helpers, editor temp files). Each `WorkflowSpec` bound at the
module's top level is a workflow, registered under its `workflow_id`; a workflow id defined by
two files is an error naming both, and the file loaded first keeps it.

Each load imports the file as a *fresh* module object under a private name
(`_abstractruntime_workflows.m<path hash>_<version>`) that is removed from `sys.modules` once
the module has run: a user module can never collide with it, and an edited module never sees
state left by its previous version (unlike `importlib.reload`, which re-executes into the old
module's namespace).

A file's version is a hash of its source. A rescan re-imports only files whose source changed,
and replaces a file's workflows in the registry only if the whole module imported and every
spec in it is valid: a broken edit leaves the previous version serving and records the error
(file, line, message) until the file changes again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..core.spec import WorkflowSpec
from ..scheduler.registry import WorkflowRegistry


def source_version(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:12]


def is_workflow_file(name: str) -> bool:
    base = os.path.basename(name)
    return base.endswith(".py") and not base.startswith(("_", "."))


def load_module(path: str, source: Optional[bytes] = None) -> Tuple[List[WorkflowSpec], List[Any]]:
    """Import one file as a fresh module: its WorkflowSpecs and its tools (raises on any error)."""
    if source is None:
        with open(path, "rb") as f:
            source = f.read()
    version = source_version(source)
    name = f"_abstractruntime_workflows.m{hashlib.sha1(path.encode()).hexdigest()[:10]}_{version}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up while it executes
    try:
        # Compile the bytes we hashed, not whatever is on disk a moment later: the version
        # then names exactly the code that serves.
        code = compile(source, path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    finally:
        sys.modules.pop(name, None)
    found: Dict[str, WorkflowSpec] = {}
    tools: Dict[str, Any] = {}
    for value in vars(module).values():
        if getattr(value, "_abstractruntime_tool", False) is True:  # an integrations Tool
            tools[value.name] = value
            continue
        if not isinstance(value, WorkflowSpec):
            continue
        other = found.get(value.workflow_id)
        if other is not None and other is not value:
            raise ValueError(f"workflow {value.workflow_id!r} is defined twice in {path}")
        value.version = version
        value.source = path
        found[value.workflow_id] = value
    return list(found.values()), list(tools.values())


@dataclass
class _FileState:
    version: Optional[str] = None  # the source version now serving (None: never loaded)
    workflow_ids: List[str] = field(default_factory=list)
    tool_names: List[str] = field(default_factory=list)
    error: Optional[Dict[str, Any]] = None  # the load error of the file's current source
    error_version: Optional[str] = None
    # (kind, name) of the workflows and tools another file held when this one failed to load
    # for defining them too: the same source is tried again once they are free.
    conflicts: List[Tuple[str, str]] = field(default_factory=list)


@dataclass
class WorkflowChange:
    workflow_id: str
    file: str
    old_version: Optional[str]  # None: newly added
    new_version: Optional[str]  # None: removed

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReloadResult:
    changes: List[WorkflowChange] = field(default_factory=list)
    new_errors: List[Dict[str, Any]] = field(default_factory=list)  # errors this rescan found
    cleared: List[str] = field(default_factory=list)  # files whose error went away

    @property
    def anything(self) -> bool:
        return bool(self.changes or self.new_errors or self.cleared)


class WorkflowCatalog:
    """The workflow files of some folders, and which of their workflows the registry serves."""

    def __init__(self, dirs: List[str], registry: WorkflowRegistry, tools: Any = None) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.registry = registry
        # A ToolRegistry (integrations) for the tools workflow modules define, or None.
        self.tools = tools
        self._tool_owner: Dict[str, str] = {}
        self._files: Dict[str, _FileState] = {}
        self._owner: Dict[str, str] = {}  # workflow id -> the file that defines it
        self._missing_dirs: List[str] = []
        self._lock = threading.Lock()  # one rescan at a time (the watcher and `workflows/reload`)

    # -- queries --------------------------------------------------------------------------------

    def errors(self) -> List[Dict[str, Any]]:
        out = [{"file": d, "line": None, "message": "workflow folder does not exist"} for d in self._missing_dirs]
        out += [st.error for _, st in sorted(self._files.items()) if st.error is not None]
        return out

    def file_error(self, path: Optional[str]) -> Optional[Dict[str, Any]]:
        st = self._files.get(path) if path else None
        return st.error if st is not None else None

    def existing_dirs(self) -> List[str]:
        return [d for d in self.dirs if os.path.isdir(d)]

    # -- loading --------------------------------------------------------------------------------

    def rescan(self) -> ReloadResult:
        with self._lock:
            return self._rescan()

    def _rescan(self) -> ReloadResult:
        result = ReloadResult()
        present: Dict[str, bytes] = {}
        self._missing_dirs = []
        for d in self.dirs:
            try:
                names = sorted(os.listdir(d))
            except (FileNotFoundError, NotADirectoryError):
                self._missing_dirs.append(d)
                continue
            for name in names:
                path = os.path.join(d, name)
                if not is_workflow_file(name):
                    continue
                try:
                    with open(path, "rb") as f:
                        present[path] = f.read()
                except (FileNotFoundError, IsADirectoryError):
                    continue  # gone between the listing and the read (an editor's rename)

        # Deleted files first: a workflow moved from one file to another is then free to load.
        for path in [p for p in self._files if p not in present]:
            st = self._files.pop(path)
            for wid in st.workflow_ids:
                self._unregister(wid, path, st.version, result)
            self._set_tools(path, st, [])
            if st.error is not None:
                result.cleared.append(path)

        for path, source in present.items():
            version = source_version(source)
            st = self._files.setdefault(path, _FileState())
            if version == st.version and st.error is None:
                continue  # unchanged
            if version == st.error_version and not self._conflict_resolved(path, st):
                continue  # the same broken source as before: its error stands
            try:
                specs, tools = load_module(path, source)
            except (Exception, SystemExit) as e:  # isolation boundary: a broken module stops nothing else
                self._failed(st, version, describe_error(path, e), [], result)
                continue
            taken = self._taken(path, "tool", [t.name for t in tools]) or self._taken(
                path, "workflow", [wf.workflow_id for wf in specs]
            )
            if taken:
                kind, name = taken[0]
                owner = self._owners(kind)[name]
                err = {"file": path, "line": None, "message": f"{kind} {name!r} is defined in both {owner} and {path}"}
                self._failed(st, version, err, taken, result)
                continue
            if st.error is not None:
                result.cleared.append(path)
            st.error = st.error_version = None
            st.conflicts = []
            new_ids = [wf.workflow_id for wf in specs]
            for wid in st.workflow_ids:
                if wid not in new_ids:
                    self._unregister(wid, path, st.version, result)
            for wf in specs:
                old = self.registry.get(wf.workflow_id)
                old_version = old.version if old is not None and self._owner.get(wf.workflow_id) == path else None
                self.registry.register(wf)
                self._owner[wf.workflow_id] = path
                if old_version != wf.version:
                    result.changes.append(WorkflowChange(wf.workflow_id, path, old_version, wf.version))
            st.version, st.workflow_ids = version, new_ids
            self._set_tools(path, st, tools)
        return result

    def _set_tools(self, path: str, st: _FileState, tools: List[Any]) -> None:
        if self.tools is None:
            return
        for name in st.tool_names:
            if self._tool_owner.get(name) == path:
                del self._tool_owner[name]
                self.tools.remove(name)
        for t in tools:
            self.tools.add(t)
            self._tool_owner[t.name] = path
        st.tool_names = [t.name for t in tools]

    def _owners(self, kind: str) -> Dict[str, str]:
        return self._tool_owner if kind == "tool" else self._owner

    def _taken(self, path: str, kind: str, names: List[str]) -> List[Tuple[str, str]]:
        """The names another file already defines."""
        owners = self._owners(kind)
        return [(kind, n) for n in names if owners.get(n, path) != path]

    def _failed(
        self,
        st: _FileState,
        version: str,
        error: Dict[str, Any],
        conflicts: List[Tuple[str, str]],
        result: ReloadResult,
    ) -> None:
        if st.error != error:
            result.new_errors.append(error)
        st.error, st.error_version, st.conflicts = error, version, conflicts

    def _conflict_resolved(self, path: str, st: _FileState) -> bool:
        return bool(st.conflicts) and all(self._owners(k).get(n, path) == path for k, n in st.conflicts)

    def _unregister(self, wid: str, path: str, version: Optional[str], result: ReloadResult) -> None:
        if self._owner.get(wid) != path:
            return
        del self._owner[wid]
        self.registry.unregister(wid)
        result.changes.append(WorkflowChange(wid, path, version, None))


def describe_error(path: str, e: BaseException) -> Dict[str, Any]:
    """File, line and message of a load error: the line of a syntax error, else the deepest
    frame of the traceback that is in the file itself."""
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    if line is None:
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if frame.filename == path:
                line = frame.lineno
                break
    return {"file": path, "line": line, "message": f"{type(e).__name__}: {e}"}
