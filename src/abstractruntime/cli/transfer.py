"""`abstractruntime export` and `import`: a project's runs and ledgers as JSON lines, from any
store to any store (see `storage/transfer.py`). They open the stores themselves, so a data
folder's daemon must be stopped first (its lock says so); a PostgreSQL store is shared and
needs no stop."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import UsageError


def _open(args: argparse.Namespace) -> Any:
    from .. import project
    from ..daemon.hub import DataFolderInUse, lock_data_dir
    from ..protocol import discovery
    from ..storage import open_stores

    proj = project.load(config=args.config, flags=project.flags_from_args(args))
    kind = proj.store
    if kind == "memory":
        raise UsageError("the memory store keeps nothing to export or import into; pick files, sqlite or postgres")
    if kind == "postgres":
        dsn = proj.get("dsn")
        if not dsn:
            raise UsageError("--store postgres needs --dsn (or dsn in the project config)")
        return open_stores("postgres", dsn), None
    data = proj.data_dir
    discovery.ensure_data_dir(data)
    try:
        lock = lock_data_dir(data)  # one writer per folder: a running daemon would race us
    except DataFolderInUse as e:
        raise UsageError(f"{e}; `abstractruntime stop` it, then run this again") from None
    where = os.path.join(data, "runs") if kind == "files" else data
    return open_stores(kind, where), lock


def export(args: argparse.Namespace) -> int:
    from ..storage.transfer import export_runs

    stores, lock = _open(args)
    try:
        if args.out in (None, "-"):
            n = export_runs(stores.runs, stores.ledger, sys.stdout)
            sys.stdout.flush()
        else:
            with open(args.out, "w", encoding="utf-8") as f:
                n = export_runs(stores.runs, stores.ledger, f)
                f.flush()
                os.fsync(f.fileno())
        print(
            f"exported {n} run(s) from the {stores.kind} store" + (f" to {args.out}" if args.out else ""),
            file=sys.stderr,
        )
    finally:
        stores.close()
        if lock is not None:
            os.close(lock)
    return 0


def import_(args: argparse.Namespace) -> int:
    from ..storage.transfer import ExportFormatError, import_runs

    source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    stores, lock = _open(args)
    try:
        done = import_runs(stores.runs, source)
    except ExportFormatError as e:
        raise UsageError(f"{args.file}: {e}") from None
    finally:
        stores.close()
        if lock is not None:
            os.close(lock)
        if source is not sys.stdin:
            source.close()
    print(
        f"imported {done['imported']} run(s) into the {stores.kind} store"
        + (f"; {done['skipped']} already there, skipped" if done["skipped"] else ""),
        file=sys.stderr,
    )
    return 0
