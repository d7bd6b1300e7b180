"""`abstractruntime`: run the daemon, and drive it from a terminal or a script.

Every command but `serve` talks to the project's daemon, found the way the Python client
finds it (the discovery file in the data folder, else the default socket). Output is for
people by default; `--json` prints the protocol's JSON for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, List, Optional

from . import __version__

EXAMPLES = """\
examples:
  abstractruntime serve --workflows examples/workflows
  abstractruntime start approval --vars '{"amount": 120}'
  abstractruntime runs --status waiting
  abstractruntime answer                     # pick a waiting run, read the answer, resume it
  abstractruntime resume RUN_ID --text approve
  abstractruntime watch                      # stream every event (Ctrl-C to stop)
  abstractruntime serve --llm-provider ollama --llm-model qwen3:4b   # workflows may call a model
  abstractruntime lsp                        # for an editor: joins (or starts) the project's daemon
  abstractruntime reload                     # after editing on a filesystem without change events
"""


def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("finding the daemon")
    g.add_argument(
        "--data", help="the daemon's data folder (default: the project's, found from the working folder upwards)"
    )
    g.add_argument("--config", metavar="FILE", help="the project config file (default: found from the working folder)")
    g.add_argument("--socket", help="connect to this unix socket instead")
    g.add_argument("--tcp", metavar="HOST:PORT", help="connect over TCP (the token is read from the data folder)")
    g.add_argument("--token", help="the TCP token, if not in the data folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abstractruntime",
        description="A durable workflow runtime: the daemon, and a client for it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"abstractruntime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the daemon", description="Run the daemon in the foreground (logs on stderr).")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--stdio", action="store_true", help="serve the one client on stdin/stdout (an editor)")
    where.add_argument(
        "--socket", help="unix socket path (default: a private per-project path, see docs/architecture.md)"
    )
    where.add_argument(
        "--tcp", metavar="HOST:PORT", help="listen on TCP; clients must send the token written to DATA/daemon.token"
    )
    s.add_argument("--data", help="data folder (default: the project's .abstractruntime/)")
    s.add_argument(
        "--workflows",
        action="append",
        metavar="DIR",
        help="a workflow folder; repeatable (default: the config's, else the project's workflows/)",
    )
    s.add_argument(
        "--store",
        choices=["files", "sqlite", "memory"],
        help="run store backend (default: the config's, else files; memory keeps nothing, for tests)",
    )
    s.add_argument("--relaxed", action="store_true", help="skip fsync: safe against a process crash, not a power loss")
    s.add_argument(
        "--external",
        action="append",
        metavar="EFFECT_TYPE",
        default=[],
        help="an effect type a host outside the daemon executes (e.g. tool_calls): the run waits (reason job) "
        "with the effect until a client resumes it with the result; repeatable",
    )
    llm = s.add_argument_group("models (LLM_CALL through AbstractCore; pip install abstractruntime[abstractcore])")
    llm.add_argument(
        "--llm-provider", help="an AbstractCore provider: ollama, openai, openai-compatible, anthropic, ..."
    )
    llm.add_argument("--llm-model", help="the model, e.g. qwen3:4b")
    llm.add_argument("--llm-base-url", help="the provider's base URL (default: the provider's own)")
    llm.add_argument("--llm-timeout", type=float, help="seconds per provider call")
    llm.add_argument(
        "--llm-api-key-env",
        metavar="VAR",
        help="read the provider's API key from this environment variable (never pass keys as arguments)",
    )
    llm.add_argument(
        "--llm-option", action="append", default=[], metavar="KEY=VALUE", help="another provider option; repeatable"
    )
    s.add_argument(
        "--config",
        metavar="FILE",
        help="the project config (default: abstractruntime.toml or pyproject.toml [tool.abstractruntime], "
        "found from the working folder upwards); `abstractruntime config` shows what is in effect",
    )
    s.add_argument(
        "--no-watch",
        action="store_true",
        help="don't reload workflow files when they change (reload on request: `abstractruntime reload`)",
    )
    s.add_argument(
        "--reload-grace",
        type=float,
        metavar="SECONDS",
        help="how long a save that would remove workflows waits before it applies (default 1)",
    )
    s.add_argument("--allow-remote", action="store_true", help="allow --tcp on a non-loopback address")
    s.add_argument("--workers", type=int, default=32, help="threads that run nodes and effects (default: 32)")
    s.add_argument("--max-frame", type=int, default=16 * 1024 * 1024, help="largest accepted message in bytes")
    s.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: the config's, else info)",
    )

    p = sub.add_parser(
        "lsp",
        help="what an editor runs: join stdio to the project's daemon (starting it if needed)",
        description="Join this process's stdin/stdout to the project's daemon (LSP framing passes through), "
        "starting the daemon in the background first if none is running. Point an editor's LSP client at "
        "this command (see docs/editors.md).",
    )
    p.add_argument("--data", help="the daemon's data folder (default: the project's)")
    p.add_argument("--socket", help="the daemon's unix socket (default: the project's, found from the data folder)")
    p.add_argument("--config", metavar="FILE", help="the project config (default: found from the working folder)")
    p.add_argument(
        "--workflows",
        action="append",
        metavar="DIR",
        help="for a daemon this starts: a workflow folder; repeatable (default: the config's)",
    )
    p.add_argument("--store", choices=["files", "sqlite"], help="for a daemon this starts (default: the config's)")

    p = sub.add_parser("start", help="start a run of a workflow")
    p.add_argument("workflow_id")
    p.add_argument("--vars", default="{}", help="initial variables, a JSON object")
    p.add_argument("--session", help="session id (scopes session events)")
    _connection_args(p)

    p = sub.add_parser("resume", help="answer a waiting run")
    p.add_argument("run_id")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--text", help='answer with {"text": TEXT}')
    g.add_argument("--json-payload", "--payload", dest="payload", metavar="JSON", help="answer with this JSON object")
    p.add_argument("--wait-key", help="only if the run still waits on this key")
    _connection_args(p)

    for name, helptext in (("state", "show a run's state"), ("cancel", "cancel a run")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run_id")
        if name == "cancel":
            p.add_argument("--reason")
        _connection_args(p)

    p = sub.add_parser("runs", help="list runs (waiting ones show their prompt)")
    p.add_argument("--status", choices=["running", "waiting", "completed", "failed", "cancelled"])
    p.add_argument("--workflow")
    p.add_argument("--limit", type=int, default=50)
    _connection_args(p)

    p = sub.add_parser("ledger", help="show a run's ledger")
    p.add_argument("run_id")
    p.add_argument("--after", type=int, default=0)
    p.add_argument("--limit", type=int, default=1000)
    _connection_args(p)

    p = sub.add_parser("watch", help="stream events (all runs, or one)")
    p.add_argument("run_id", nargs="?")
    p.add_argument("--after", type=int, help="replay events after this cursor first")
    p.add_argument("--count", type=int, help="stop after this many events")
    _connection_args(p)

    p = sub.add_parser("answer", help="list waiting runs, show a prompt, read the answer, resume")
    p.add_argument("run_id", nargs="?", help="answer this run (default: choose from the waiting runs)")
    p.add_argument("--text", help="the answer (default: read it from stdin)")
    _connection_args(p)

    p = sub.add_parser("emit", help="emit an event: resume every run waiting on it")
    p.add_argument("name")
    p.add_argument("--payload", default="null", help="JSON payload")
    p.add_argument("--scope", choices=["global", "session", "run"])
    p.add_argument("--session")
    _connection_args(p)

    p = sub.add_parser(
        "init",
        help="make the current folder a project: a config, a workflows/ folder with an example",
        description="Scaffold a project here: abstractruntime.toml, workflows/hello.py (a commented example) "
        "and a .gitignore line for the data folder. Refuses if the folder already has a config.",
    )
    p = sub.add_parser(
        "config",
        help="the settings in effect and where each comes from",
        description="Print the effective settings (flags > environment > config file > defaults) of the project "
        "found from the working folder, and the source of each.",
    )
    p.add_argument("--config", metavar="FILE", help="the project config (default: found from the working folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("status", help="the daemon's version, uptime, store and run counts")
    _connection_args(p)
    p = sub.add_parser("stop", help="stop the daemon (in-flight steps finish and are committed first)")
    _connection_args(p)
    p = sub.add_parser("workflows", help="the workflows the daemon serves, their versions and load errors")
    _connection_args(p)
    p = sub.add_parser("reload", help="reload the workflow files that changed (the daemon also watches them)")
    _connection_args(p)
    p = sub.add_parser("migrate", help="move a waiting run that a code change stranded on to a node of the new version")
    p.add_argument("run_id")
    p.add_argument("--to-node", help="resume there (default: its resume node if it exists, else the entry node)")
    _connection_args(p)
    return parser


def _client(args: argparse.Namespace):
    from .client import Client
    from .client.aio import AsyncClient, Target, discover_target

    if args.socket:
        target = Target("unix", path=args.socket)
    elif args.tcp:
        host, _, port = args.tcp.rpartition(":")
        target = discover_target(args.data, config=args.config)
        token = args.token or (target.token if target.kind == "tcp" else None)
        target = Target("tcp", host=host or "127.0.0.1", port=int(port), token=token)
    else:
        target = discover_target(args.data, config=args.config)
    return Client(AsyncClient(target))


def _out(args: argparse.Namespace, obj: Any, text: str) -> None:
    if args.json:
        if hasattr(obj, "model_dump"):
            obj = obj.model_dump(mode="json")
        print(json.dumps(obj, indent=2))
    else:
        print(text)


def _describe_state(st: Any) -> str:
    lines = [f"run {st.run_id}  ({st.workflow_id})  {st.status}  at {st.current_node}"]
    if st.waiting:
        w = st.waiting
        lines.append(
            f"  waiting ({w.reason})"
            + (f": {w.prompt}" if w.prompt else "")
            + (f"  until {w.until}" if w.until else "")
        )
        if w.choices:
            lines.append(f"  choices: {', '.join(w.choices)}")
    if st.output is not None:
        lines.append(f"  output: {json.dumps(st.output)}")
    if st.error:
        lines.append(f"  error: {st.error}")
    return "\n".join(lines)


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise SystemExit(f"{what} is not valid JSON: {e}") from None


def _run_command(args: argparse.Namespace) -> int:
    with _client(args) as c:
        cmd = args.command
        if cmd == "start":
            vars_ = _json_arg(args.vars, "--vars")
            if not isinstance(vars_, dict):
                raise SystemExit("--vars must be a JSON object")
            r = c.start(args.workflow_id, vars_, session_id=args.session)
            _out(args, r, _describe_state(r.state))
        elif cmd == "resume":
            payload = {"text": args.text} if args.text is not None else _json_arg(args.payload, "--payload")
            if not isinstance(payload, dict):
                raise SystemExit("--payload must be a JSON object")
            st = c.resume(args.run_id, payload, wait_key=args.wait_key)
            _out(args, st, _describe_state(st))
        elif cmd == "state":
            st = c.state(args.run_id)
            _out(args, st, _describe_state(st))
        elif cmd == "cancel":
            st = c.cancel(args.run_id, args.reason)
            _out(args, st, _describe_state(st))
        elif cmd == "runs":
            r = c.runs(status=args.status, workflow_id=args.workflow, limit=args.limit)
            rows = [
                f"{s.run_id}  {s.workflow_id:<16} {s.status:<10} {s.current_node}"
                + (f"  ? {s.prompt}" if s.prompt else "")
                + (f"  [{'/'.join(s.choices)}]" if s.choices else "")
                for s in r.runs
            ]
            _out(args, r, "\n".join(rows) if rows else "no runs")
        elif cmd == "ledger":
            r = c.ledger(args.run_id, after=args.after, limit=args.limit)
            rows = [
                f"#{x.seq:<4} {x.node_id:<16} {x.status:<10}" + (f" {x.error}" if x.error else "") for x in r.records
            ]
            _out(args, r, "\n".join(rows) if rows else "no records")
        elif cmd == "watch":
            n = 0
            streaming = False
            try:
                for ev in c.subscribe(args.run_id, after=args.after):
                    if args.json:
                        print(json.dumps(ev.model_dump(mode="json")), flush=True)
                    elif ev.kind == "progress" and ev.progress:
                        # A model's answer as it is written: the pieces, on one line.
                        print(ev.progress.text, end="", flush=True)
                        streaming = True
                    else:
                        if streaming:
                            print()
                            streaming = False
                        what = (
                            f"{ev.record.node_id} {ev.record.status}"
                            if ev.record
                            else f"-> {ev.state.status if ev.state else '?'}"
                        )
                        print(f"[{ev.cursor}] {ev.run_id} {ev.kind}: {what}", flush=True)
                    n += 1
                    if args.count and n >= args.count:
                        break
            except KeyboardInterrupt:
                pass
        elif cmd == "answer":
            return _answer(c, args)
        elif cmd == "emit":
            resumed = c.emit_event(
                args.name, _json_arg(args.payload, "--payload"), scope=args.scope, session_id=args.session
            )
            _out(args, {"resumed": resumed}, f"resumed {len(resumed)} run(s)" + "".join(f"\n  {r}" for r in resumed))
        elif cmd == "status":
            s = c.status()
            _out(
                args,
                s,
                f"abstractruntime {s.version} (pid {s.pid}, up {s.uptime_s:.0f}s)\n"
                f"listening: {s.socket or s.tcp or '?'}\n"
                f"project: {s.project_root or '?'}  (config: {s.config_file or 'none, defaults'})\n"
                f"data: {s.data_dir}  (store: {s.store})\n"
                f"workflows: {', '.join(s.workflow_dirs) or 'none'}\n"
                f"model: {s.model or 'none'}\n"
                f"runs: {json.dumps(s.runs)}\nclients: {s.clients}",
            )
        elif cmd == "workflows":
            res = c.workflows_list()
            rows = [
                f"{w.workflow_id:<20} {w.version or '-':<12} {len(w.nodes)} nodes  {w.source or ''}"
                + (f"  ({w.stranded} stranded)" if w.stranded else "")
                for w in res.workflows
            ]
            rows += [f"load error: {_where(e)}: {e.message}" for e in res.load_errors]
            _out(args, res, "\n".join(rows) or "no workflows")
        elif cmd == "stop":
            pid = c.status().pid
            c.shutdown_daemon()
            _out(args, {"stopped": pid}, f"stopping the daemon (pid {pid})")
        elif cmd == "reload":
            r = c.reload_workflows()
            _out(args, r, _describe_reload(r))
        elif cmd == "migrate":
            st = c.migrate(args.run_id, args.to_node)
            _out(args, st, _describe_state(st))
    return 0


def _where(e: Any) -> str:
    return f"{e.file}:{e.line}" if e.line else e.file


def _describe_reload(r: Any) -> str:
    rows = [
        f"{c.workflow_id}: {c.old_version or 'new'} -> {c.new_version or 'removed'}  ({c.file})" for c in r.changed
    ] or ["no workflow changed"]
    rows += [f"load error: {_where(e)}: {e.message}" for e in r.load_errors]
    rows += [f"stranded: {x.run_id} ({x.workflow_id}) at {x.node_id}: {x.reason.replace('_', ' ')}" for x in r.stranded]
    return "\n".join(rows)


def _answer(c: Any, args: argparse.Namespace) -> int:
    if args.run_id:
        st = c.state(args.run_id)
        target = st
    else:
        waiting = [s for s in c.runs(status="waiting", limit=200).runs if s.prompt]
        if not waiting:
            print("no run is waiting for an answer")
            return 0
        for i, s in enumerate(waiting, 1):
            print(
                f"{i:>3}. {s.workflow_id:<16} {s.run_id}  ? {s.prompt}"
                + (f"  [{'/'.join(s.choices)}]" if s.choices else "")
            )
        if len(waiting) == 1:
            pick = 1
        else:
            raw = input("which run? [1] ").strip() if sys.stdin.isatty() else sys.stdin.readline().strip()
            pick = int(raw) if raw else 1
        target = c.state(waiting[pick - 1].run_id)
    w = target.waiting
    if target.status != "waiting" or w is None:
        print(f"run {target.run_id} is not waiting ({target.status})")
        return 1
    print(f"{w.prompt or 'answer:'}" + (f"  [{'/'.join(w.choices)}]" if w.choices else ""))
    text = args.text
    if text is None:
        text = input("> ").strip() if sys.stdin.isatty() else sys.stdin.readline().strip()
    if w.choices and not w.allow_free_text and text not in w.choices:
        if text.isdigit() and 1 <= int(text) <= len(w.choices):
            text = w.choices[int(text) - 1]
        else:
            print(f"please answer one of: {', '.join(w.choices)}", file=sys.stderr)
            return 2
    st = c.resume(target.run_id, {"text": text}, wait_key=w.wait_key)
    print(_describe_state(st))
    return 0


def _config(args: argparse.Namespace) -> int:
    from .project import ConfigError, load

    try:
        proj = load(config=args.config)
    except ConfigError as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 2
    rows = proj.describe()
    if args.json:
        print(json.dumps({"project_root": proj.root, "config_file": proj.config_file, "settings": rows}, indent=2))
        return 0
    print(f"project root: {proj.root}")
    print(f"config file:  {proj.config_file or 'none (defaults, environment and flags only)'}")
    width = max(len(r["key"]) for r in rows)
    for r in rows:
        value = r["value"]
        shown = (
            ", ".join(value)
            if isinstance(value, list)
            else ("-" if value in (None, {}) else json.dumps(value) if isinstance(value, dict) else str(value))
        )
        print(f"  {r['key']:<{width}}  {shown:<40}  ({r['source']})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "init":
        from .scaffold import init

        return init(os.getcwd())
    if args.command == "config":
        return _config(args)
    if args.command == "lsp":
        from .client.lsp_proxy import run as run_lsp

        return run_lsp(args)
    if args.command == "serve":
        from .daemon.server import run

        return run(args)
    from .client.aio import DaemonNotRunning
    from .client.connection import ConnectionLost
    from .core.errors import AbstractRuntimeError
    from .project import ConfigError
    from .protocol.discovery import UnsafePathError

    try:
        return _run_command(args)
    except DaemonNotRunning as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 3
    except (ConfigError, UnsafePathError) as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ConnectionRefusedError, ConnectionLost) as e:
        print(
            f"abstractruntime: cannot reach the daemon ({e}); start it with `abstractruntime serve` or `make serve`",
            file=sys.stderr,
        )
        return 3
    except AbstractRuntimeError as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 1
