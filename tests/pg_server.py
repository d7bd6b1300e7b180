"""A throwaway PostgreSQL server for the tests: `initdb` and `pg_ctl` from the machine's
PostgreSQL (Debian's `postgresql` package), in a temporary folder, on a unix socket only,
stopped at the end. As root (CI), the server runs as the `postgres` user: initdb refuses root."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional


def bindir() -> Optional[str]:
    """The folder holding initdb and pg_ctl, or None."""
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            return os.path.dirname(found)
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        d = out.stdout.strip()
        if out.returncode == 0 and os.path.exists(os.path.join(d, "initdb")):
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class PgServer:
    def __init__(self, bin_dir: str, *, durable: bool = False, max_connections: int = 200) -> None:
        # The tests run without fsync (they test behaviour, not the disk); the bench with it.
        self.durable = durable
        self.max_connections = max_connections
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="ar-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else None

    def _run(self, argv: List[str]) -> subprocess.CompletedProcess:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def start(self) -> PgServer:
        self.sock.mkdir(parents=True)
        if self.as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        p = self._run([f"{self.bin}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        if p.returncode != 0:
            raise RuntimeError(f"initdb failed: {p.stderr[-2000:]}")
        fsync = "on" if self.durable else "off"
        opts = f"-k {self.sock} -c listen_addresses='' -c fsync={fsync} -c max_connections={self.max_connections}"
        p = self._run([f"{self.bin}/pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start"])
        if p.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {p.stderr[-2000:]} {(self.root / 'log').read_text()[-2000:]}")
        return self

    @property
    def dsn(self) -> str:
        return f"host={self.sock} user=postgres dbname=postgres"

    def create_database(self, name: str) -> str:
        """A new database on this server; returns its DSN."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn.replace("dbname=postgres", f"dbname={name}")

    def stop(self) -> None:
        self._run([f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
