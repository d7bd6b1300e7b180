"""An editor connecting does not hold up the daemon's event loop while pygls and lsprotocol
are imported (0.3-1.2 s): the import runs on a thread of its own. In a fresh interpreter, since
the test checks which thread imported them first."""

from __future__ import annotations

from pathlib import Path

_IMPORT_PROBE = """
import asyncio, importlib.abc, shutil, sys, tempfile, threading
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import test_session as T

where = {}

class Probe(importlib.abc.MetaPathFinder):  # notes the thread that first imports lsprotocol
    def find_spec(self, name, path=None, target=None):
        if name == "lsprotocol.types":
            where.setdefault(name, threading.current_thread().name)
        return None

assert "lsprotocol.types" not in sys.modules
sys.meta_path.insert(0, Probe())
tmp = Path(tempfile.mkdtemp())
(tmp / "wf").mkdir()
shutil.copy(T.FLOWS, tmp / "wf" / "flows.py")
hub = T.Hub(data_dir=str(tmp / "data"), workflow_dirs=[str(tmp / "wf")], store="memory", workers=2)

async def main():
    daemon = T.Daemon(hub, watch=False)
    e = T.AsyncClient(T.PairTarget(daemon))
    e.conn = await e.target.open()
    await e.conn.request("initialize", {"capabilities": {"textDocument": {}}})
    e.conn.notify("initialized", {})
    await e.conn.request("textDocument/codeLens", {"textDocument": {"uri": "file:///nowhere.py"}})
    await e.conn.close()

asyncio.run(main())
hub.close()
print(where.get("lsprotocol.types"))
"""


def test_an_editor_connecting_does_not_hold_up_the_event_loop_with_its_imports():
    # pygls and lsprotocol take 0.3-1.2 s to import; on the loop, every client would wait.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, str(Path(__file__).resolve().parents[1] / "daemon")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "lsp-import"
