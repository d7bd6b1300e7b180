"""Every file operation the durable stores make, through one seam a test can make fail.

The stores call `_fs.pwrite(...)`, `_fs.fdatasync(...)` and so on, never `os.*` directly. With
no fault configured these names *are* the `os` functions (no cost). A fault spec rebinds them
to counting wrappers:

    pwrite:ENOSPC@3       the 3rd pwrite fails with ENOSPC (errno names from the errno module)
    pwrite:ENOSPC@3-5     calls 3 to 5 fail; `@3+`: every call from the 3rd on
    crash:fdatasync@7     the process dies (SIGKILL) just before the 7th fdatasync
    crash:fdatasync@7!    ... just after it

Several rules are separated by commas. The spec comes from `$ABSTRACTRUNTIME_FAULTS` when this
module is imported (for a subprocess under test), or from `configure(spec)` in process.
Operations: open, write, pwrite, fsync, fdatasync, syncfs, replace, ftruncate, unlink, and
`sqlite_commit` / `sqlite_committed` (checked by the SQLite store just before and just after
each COMMIT: SQLite's own I/O cannot be reached from Python).
"""

from __future__ import annotations

import errno as errno_module
import os
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

ENV = "ABSTRACTRUNTIME_FAULTS"


def _load_syncfs() -> Optional[Callable[[int], None]]:
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syncfs
        fn.argtypes = [ctypes.c_int]

        def syncfs(fd: int) -> None:
            if fn(fd) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"syncfs: {os.strerror(e)}")

        return syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()
HAS_SYNCFS = _syncfs is not None


def _no_syncfs(fd: int) -> None:
    raise OSError(errno_module.ENOSYS, "syncfs is not available here")


REAL: Dict[str, Callable[..., Any]] = {
    "open": os.open,
    "write": os.write,
    "pwrite": os.pwrite,
    "fsync": os.fsync,
    "fdatasync": os.fdatasync,
    "syncfs": _syncfs or _no_syncfs,
    "replace": os.replace,
    "ftruncate": os.ftruncate,
    "unlink": os.unlink,
}

open = os.open  # noqa: A001 - the seam mirrors the os names
write = os.write
pwrite = os.pwrite
fsync = os.fsync
fdatasync = os.fdatasync
syncfs = REAL["syncfs"]
replace = os.replace
ftruncate = os.ftruncate
unlink = os.unlink


# Points with no os call behind them, checked by the SQLite store around each COMMIT.
CHECKS = ("sqlite_commit", "sqlite_committed")


def check(op: str) -> None:
    """Count a call of `op` that has no os function (it may fail or crash under a fault)."""
    if op in _RULES:
        _hit(op)


@dataclass
class _Rule:
    op: str
    kind: str  # "fail" or "crash"
    err: int
    first: int
    last: Optional[int]  # None: every call from `first` on
    after: bool = False  # crash after the call instead of before

    def matches(self, n: int) -> bool:
        return n >= self.first and (self.last is None or n <= self.last)


_RULES: Dict[str, List[_Rule]] = {}
_counts: Dict[str, int] = {}
_lock = threading.Lock()
_SPEC = re.compile(r"^(?P<a>\w+):(?P<b>\w+)@(?P<first>\d+)(?:(?P<plus>\+)|-(?P<last>\d+))?(?P<after>!)?$")


def parse(spec: str) -> List[_Rule]:
    rules = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _SPEC.match(part)
        if m is None:
            raise ValueError(f"bad fault rule {part!r} (e.g. pwrite:ENOSPC@3, crash:fdatasync@7)")
        first = int(m["first"])
        last = None if m["plus"] else int(m["last"]) if m["last"] else first
        if m["a"] == "crash":
            op = m["b"]
            rules.append(_Rule(op, "crash", 0, first, first, after=bool(m["after"])))
        else:
            op, name = m["a"], m["b"]
            if op == "sqlite_committed":
                raise ValueError("sqlite_committed is after a COMMIT that succeeded: only crash rules apply there")
            code = getattr(errno_module, name, None)
            if not isinstance(code, int):
                raise ValueError(f"unknown errno {name!r} in fault rule {part!r}")
            rules.append(_Rule(op, "fail", code, first, last))
        if op not in REAL and op not in CHECKS:
            known = ", ".join([*REAL, *CHECKS])
            raise ValueError(f"unknown operation {op!r} in fault rule {part!r} (known: {known})")
    return rules


def _hit(op: str) -> Optional[_Rule]:
    """Count a call of `op`; act on a rule that fires before the call; return one that fires
    after it."""
    with _lock:
        n = _counts[op] = _counts.get(op, 0) + 1
    after = None
    for rule in _RULES.get(op, ()):
        if not rule.matches(n):
            continue
        if rule.kind == "crash":
            if rule.after:
                after = rule
                continue
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(rule.err, f"{os.strerror(rule.err)} (injected: {op} call {n})")
    return after


def _wrap(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kw: Any) -> Any:
        after = _hit(op)
        result = fn(*args, **kw)
        if after is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    call.__name__ = op
    return call


def configure(spec: Optional[str]) -> None:
    """Install the fault rules of `spec` (None or "": none) and reset the call counts."""
    rules = parse(spec or "")
    with _lock:
        _RULES.clear()
        _counts.clear()
        for r in rules:
            _RULES.setdefault(r.op, []).append(r)
    g = globals()
    for op, fn in REAL.items():
        g[op] = _wrap(op, fn) if op in _RULES else fn


def calls(op: str) -> int:
    """How many calls of `op` were counted since `configure` (only ops with a rule count)."""
    return _counts.get(op, 0)


if os.environ.get(ENV):
    configure(os.environ[ENV])
