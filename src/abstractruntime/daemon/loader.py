"""Loading workflow modules from folders, and loading them again when they change.

Convention: every `.py` file directly in a workflow folder is a module (files whose name starts
with `.` are skipped: editor temp files; files whose name starts with `_` are *helpers*). Each
`WorkflowSpec` bound at the module's top level is a workflow, registered under its
`workflow_id`; a workflow id defined by two files is an error naming both, and the file loaded
first keeps it.

Helpers: a workflow module may import any sibling `.py` file of its folder by name
(`from _policy import limit`), as a script imports the files beside it. The import is resolved
by the module's own `__import__` (a private builtins table), not through `sys.path`: each folder
sees only its own files, so two folders with a `_policy.py` never see each other's, and each
load of a workflow module gets fresh copies of its helpers. A workflow's version covers its
helpers' sources too: editing a helper reloads every workflow module that imported it, each as
a new version, and a broken helper is a load error of each of them, at the helper's line.

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

import builtins
import hashlib
import importlib.util
import os
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..core.clock import SYSTEM_CLOCK
from ..core.spec import WorkflowSpec
from ..scheduler.registry import WorkflowRegistry

_import = builtins.__import__


def source_version(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:12]


def module_version(source: bytes, deps: Dict[str, str]) -> str:
    """A workflow module's version: its source, and the sources of the helpers it imported."""
    if not deps:
        return source_version(source)
    h = hashlib.sha256(source)
    for path in sorted(deps):
        h.update(f"\0{os.path.basename(path)}\0{deps[path]}".encode())
    return h.hexdigest()[:12]


def is_python_file(name: str) -> bool:
    """A workflow module or a helper (what the watcher reacts to)."""
    base = os.path.basename(name)
    return base.endswith(".py") and not base.startswith(".")


def is_workflow_file(name: str) -> bool:
    base = os.path.basename(name)
    return is_python_file(name) and not base.startswith("_")


def read_version(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return source_version(f.read())
    except (FileNotFoundError, IsADirectoryError):
        return None


def _exec_fresh(path: str, source: bytes, module_builtins: Dict[str, Any]) -> Any:
    """Execute `source` as a new module object under a private name (registered in
    `sys.modules` only while it runs: dataclasses look their module up then)."""
    name = f"_abstractruntime_workflows.m{hashlib.sha1(path.encode()).hexdigest()[:10]}_{source_version(source)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__builtins__"] = module_builtins
    sys.modules[name] = module
    try:
        # Compile the bytes we hashed, not whatever is on disk a moment later: the version
        # then names exactly the code that serves.
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module


class FolderImports:
    """The `__import__` of the modules loaded from one folder for one workflow module: a
    top-level `import name` whose `name.py` is a sibling file gets that file (fresh, once per
    load); anything else is an ordinary import. `deps` records each helper's source version."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.deps: Dict[str, str] = {}
        self._modules: Dict[str, Any] = {}
        self.builtins = dict(vars(builtins))
        self.builtins["__import__"] = self

    def __call__(self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level == 0 and "." not in name:
            path = os.path.join(self.folder, name + ".py")
            if name in self._modules:
                return self._modules[name]
            if os.path.isfile(path):
                return self._load(name, path)
        return _import(name, globals, locals, fromlist, level)

    def _load(self, name: str, path: str) -> Any:
        with open(path, "rb") as f:
            source = f.read()
        self.deps[path] = source_version(source)
        placeholder = types.ModuleType(name)
        # A helper importing the module that imports it (a cycle) sees it part-built, as with
        # Python's own imports.
        self._modules[name] = placeholder
        try:
            module = _exec_fresh(path, source, self.builtins)
        except BaseException:
            self._modules.pop(name, None)
            raise
        self._modules[name] = module
        return module


def load_module(
    path: str, source: Optional[bytes] = None, deps: Optional[Dict[str, str]] = None
) -> Tuple[List[WorkflowSpec], List[Any]]:
    """Import one file as a fresh module: its WorkflowSpecs and its tools (raises on any error).
    `deps`, if given, receives the source versions of the helpers it imported (even when the
    import fails half-way: a fix to one of them must trigger another try)."""
    if source is None:
        with open(path, "rb") as f:
            source = f.read()
    imports = FolderImports(os.path.dirname(path))
    try:
        module = _exec_fresh(path, source, imports.builtins)
    finally:
        if deps is not None:
            deps.update(imports.deps)
    version = module_version(source, imports.deps)
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
    # The helpers the last load attempt imported, with their source versions then.
    deps: Dict[str, str] = field(default_factory=dict)
    # A source that would remove workflows this file serves (an empty or half-written save),
    # first seen at this monotonic time: applied only once it has stood for the grace period.
    held_version: Optional[str] = None
    held_since: float = 0.0
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
    # Files whose new source would remove workflows and is held back: rescan again after this
    # many seconds to apply it if it still stands (None: nothing held).
    retry_after: Optional[float] = None

    @property
    def anything(self) -> bool:
        return bool(self.changes or self.new_errors or self.cleared)


class WorkflowCatalog:
    """The workflow files of some folders, and which of their workflows the registry serves."""

    def __init__(self, dirs: List[str], registry: WorkflowRegistry, tools: Any = None, clock: Any = None) -> None:
        self.clock = clock or SYSTEM_CLOCK  # the grace period of held-back saves goes by it
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.registry = registry
        # A ToolRegistry (integrations) for the tools workflow modules define, or None.
        self.tools = tools
        self._tool_owner: Dict[str, str] = {}
        self._files: Dict[str, _FileState] = {}
        self._owner: Dict[str, str] = {}  # workflow id -> the file that defines it
        self._missing_dirs: List[str] = []
        self._helpers: Dict[str, str] = {}  # helper file -> source version, at the last rescan
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

    def rescan(self, *, grace_s: float = 0.0) -> ReloadResult:
        """Load what changed. With `grace_s`, a file whose new source would remove workflows it
        serves (an editor's in-place save shows the file empty or cut short for a moment) is
        held back until that source has stood for `grace_s` seconds; `retry_after` says when
        to look again. Without it (an explicit reload), everything applies at once."""
        with self._lock:
            return self._rescan(grace_s)

    def _hold(self, st: _FileState, version: str, grace_s: float, result: ReloadResult) -> bool:
        """Whether to hold back this file's new source (see `rescan`)."""
        if grace_s <= 0:
            return False
        now = self.clock.monotonic()
        if st.held_version != version:
            st.held_version, st.held_since = version, now
        wait = st.held_since + grace_s - now
        if wait <= 0:
            return False
        result.retry_after = wait if result.retry_after is None else min(result.retry_after, wait)
        return True

    def _rescan(self, grace_s: float = 0.0) -> ReloadResult:
        result = ReloadResult()
        present: Dict[str, bytes] = {}
        versions: Dict[str, str] = {}  # every .py file of the folders, helpers included
        self._missing_dirs = []
        for d in self.dirs:
            try:
                names = sorted(os.listdir(d))
            except (FileNotFoundError, NotADirectoryError):
                self._missing_dirs.append(d)
                continue
            for name in names:
                path = os.path.join(d, name)
                if not is_python_file(name):
                    continue
                try:
                    with open(path, "rb") as f:
                        source = f.read()
                except (FileNotFoundError, IsADirectoryError):
                    continue  # gone between the listing and the read (an editor's rename)
                versions[path] = source_version(source)
                if is_workflow_file(name):
                    present[path] = source
        # A helper that appeared, changed or went away: erroring modules of its folder try
        # again (an import of a helper that did not exist yet recorded no dependency).
        helpers = {p: v for p, v in versions.items() if os.path.basename(p).startswith("_")}
        helper_dirs = {os.path.dirname(p) for p in set(helpers) ^ set(self._helpers)} | {
            os.path.dirname(p) for p in helpers if self._helpers.get(p) not in (None, helpers[p])
        }
        self._helpers = helpers

        # Deleted files first: a workflow moved from one file to another is then free to load.
        for path in [p for p in self._files if p not in present]:
            st = self._files.pop(path)
            for wid in st.workflow_ids:
                self._unregister(wid, path, st.version, result)
            self._set_tools(path, st, [])
            if st.error is not None:
                result.cleared.append(path)

        for path, source in present.items():
            st = self._files.setdefault(path, _FileState())
            version = module_version(source, {p: versions.get(p) or "missing" for p in st.deps})
            if version == st.version and st.error is None:
                continue  # unchanged, and so are its helpers
            retry = self._conflict_resolved(path, st) or os.path.dirname(path) in helper_dirs
            if version == st.error_version and not retry:
                continue  # the same broken source as before: its error stands
            if st.workflow_ids and not source.strip() and self._hold(st, version, grace_s, result):
                continue  # empty for now: most likely a save in progress
            deps: Dict[str, str] = {}
            try:
                specs, tools = load_module(path, source, deps)
            except (Exception, SystemExit) as e:  # isolation boundary: a broken module stops nothing else
                st.deps = deps
                self._failed(st, module_version(source, deps), describe_error(path, e), [], result)
                continue
            st.deps = deps
            version = module_version(source, deps)
            new_ids = [wf.workflow_id for wf in specs]
            if set(st.workflow_ids) - set(new_ids) and self._hold(st, version, grace_s, result):
                continue  # it would drop workflows: hold it back in case the save is not done
            st.held_version = None
            taken = self._taken(path, "tool", [t.name for t in tools]) or self._taken(
                path, "workflow", [wf.workflow_id for wf in specs]
            )
            if taken:
                kind, name = taken[0]
                owner = self._owners(kind)[name]
                err = {
                    "file": path,
                    "line": None,
                    "message": f"{kind} {name!r} is defined in both {owner} and {path}",
                    "module": path,
                }
                self._failed(st, version, err, taken, result)
                continue
            if st.error is not None:
                result.cleared.append(path)
            st.error = st.error_version = None
            st.conflicts = []
            for wid in st.workflow_ids:
                if wid not in new_ids:
                    self._unregister(wid, path, st.version, result)
            for wf in specs:
                old = self.registry.get(wf.workflow_id)
                old_version = old.version if old is not None and self._owner.get(wf.workflow_id) == path else None
                self.registry.register(wf, replace=True)
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
        if wid in self.registry:
            self.registry.unregister(wid)
        result.changes.append(WorkflowChange(wid, path, version, None))


def describe_error(path: str, e: BaseException) -> Dict[str, Any]:
    """Where a load error is and what it says: the file and line of a syntax error, else of the
    deepest frame of the traceback in the module's folder (a helper it imported, or the module
    itself). `module` is the workflow module whose load failed."""
    folder = os.path.dirname(path)
    where, line = path, None
    if isinstance(e, SyntaxError) and e.filename and os.path.dirname(os.path.abspath(e.filename)) == folder:
        where, line = os.path.abspath(e.filename), e.lineno
    else:
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if os.path.dirname(frame.filename) == folder:
                where, line = frame.filename, frame.lineno
                break
    message = f"{type(e).__name__}: {e}"
    if where != path:
        message += f" (in {os.path.basename(where)}, imported by {os.path.basename(path)})"
    return {"file": where, "line": line, "message": message, "module": path}
