"""`abstractruntime`: run the daemon, and drive it from a terminal or a script.

Every command but `serve`, `lsp`, `init`, `config` and `completion` talks to the project's
daemon, found the way the Python client finds it (the discovery file in the data folder, else
the default socket). Output is for people by default (colour on a terminal only); `--json`
prints the protocol's JSON for scripts.

Exit codes: 0 done (a run completed), 1 a run failed or was cancelled, or the daemon refused
the request, 2 a usage mistake, 3 no daemon, 4 the run waits for an answer or an event,
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, Optional

from .. import __version__

EXAMPLES = """\
examples:
  abstractruntime serve --workflows examples/workflows
  abstractruntime start approval --vars '{"amount": 120}'
  abstractruntime execute greeting --vars '{"name": "Ada"}'    # wait for the outcome
  abstractruntime runs --status waiting
  abstractruntime answer                     # pick a waiting run, read the answer, resume it
  abstractruntime describe RUN_ID            # what it waits for, its versions, its last error
  abstractruntime emit expense_paid --run RUN_ID --payload '{"amount": 120}'
  abstractruntime retry RUN_ID               # a failed run, after fixing its node
  abstractruntime fork RUN_ID --seq 3 --vars '{"amount": 90}'
  abstractruntime watch                      # stream every event (Ctrl-C to stop)
  abstractruntime lsp                        # for an editor: joins (or starts) the project's daemon
  eval "$(abstractruntime completion bash)"  # tab completion, run ids included

exit codes: 0 ok/completed, 1 failed/cancelled/refused, 2 usage, 3 no daemon, 4 waiting, 130 interrupted
"""

STATUSES = ["running", "waiting", "completed", "failed", "cancelled"]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _run_id(p: argparse.ArgumentParser, help: str, nargs: Optional[str] = None) -> None:
    from .complete import run_ids

    a = p.add_argument("run_id", metavar="RUN_ID", nargs=nargs, help=help)
    a.completer = run_ids  # type: ignore[attr-defined]


def _workflow_arg(p: argparse.ArgumentParser, *names: str, **kw: Any) -> None:
    from .complete import workflow_ids

    a = p.add_argument(*names, **kw)
    a.completer = workflow_ids  # type: ignore[attr-defined]


def _start_args(p: argparse.ArgumentParser, workflow: str, vars_example: str) -> None:
    _workflow_arg(p, "workflow_id", metavar="WORKFLOW", help=f"the workflow to run, e.g. {workflow}")
    p.add_argument(
        "--vars", default="{}", metavar="JSON", help=f"initial variables, a JSON object: --vars '{vars_example}'"
    )
    p.add_argument("--session", metavar="ID", help="a session id (runs of one session share session-scoped events)")


def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("finding the daemon")
    g.add_argument(
        "--data",
        metavar="DIR",
        help="the daemon's data folder (default: the project's, found from the working folder upwards); "
        "e.g. --data ./.abstractruntime",
    )
    g.add_argument("--config", metavar="FILE", help="the project config file (default: found from the working folder)")
    g.add_argument("--socket", metavar="PATH", help="connect to this unix socket instead, e.g. --socket /tmp/ar.sock")
    g.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="connect over TCP, e.g. --tcp 127.0.0.1:7400 (the token is read from the data folder)",
    )
    g.add_argument(
        "--token", metavar="TOKEN", help="the TCP token, if it is not in the data folder (or $ABSTRACTRUNTIME_TOKEN)"
    )
    p.add_argument("--json", action="store_true", help="print the protocol's JSON instead of text (for scripts)")


def _wait_flags(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--no-wait",
        dest="wait",
        action="store_const",
        const="no",
        help=f"print the {what}'s id as soon as it is stored, and return",
    )
    g.add_argument(
        "--wait",
        dest="wait",
        action="store_const",
        const="end",
        help="wait for the outcome: exit 0 completed, 1 failed or cancelled, 4 waiting for an answer or event",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abstractruntime",
        description="A durable workflow runtime: the daemon, and a client for it.",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"abstractruntime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, examples: str, description: Optional[str] = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=description or help[:1].upper() + help[1:] + ".",
            epilog="examples:\n" + "\n".join("  " + line for line in examples.strip().splitlines()),
            formatter_class=_Formatter,
        )

    _serve_parser(command)
    _lsp_parser(command)

    p = command(
        "start",
        "start a run of a workflow",
        "abstractruntime start approval --vars '{\"amount\": 120}'\n"
        "abstractruntime start approval --no-wait     # the run id at once\n"
        "abstractruntime start approval --wait        # like `execute`",
        "Start a run and show it once it waits or ends (exit 1 if it failed). The run is stored before its "
        "first node runs; Ctrl-C leaves it running in the daemon and prints how to follow it.",
    )
    _start_args(p, "approval", '{"amount": 120}')
    _wait_flags(p, "run")
    _connection_args(p)

    p = command(
        "execute",
        "start a run and wait for its outcome",
        'abstractruntime execute greeting --vars \'{"name": "Ada"}\'\n'
        "abstractruntime execute approval && echo approved-and-done",
        "Start a run and follow it (through timers and child runs) until it ends or needs someone: exit 0 "
        "completed, 1 failed or cancelled, 4 waiting for an answer or an event.",
    )
    _start_args(p, "greeting", '{"name": "Ada"}')
    _connection_args(p)

    p = command(
        "resume",
        "answer a waiting run with a payload",
        "abstractruntime resume RUN_ID --text approve\nabstractruntime resume RUN_ID --payload '{\"amount\": 90}'",
        "Answer a waiting run: the payload goes to its wait's result_key and it goes on (exit 1 if it then "
        "fails). A prompt with choices takes only one of them.",
    )
    _run_id(p, "the waiting run")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--text", metavar="TEXT", help='answer with {"text": TEXT}, e.g. --text approve')
    g.add_argument(
        "--json-payload",
        "--payload",
        dest="payload",
        metavar="JSON",
        help="answer with this JSON object, e.g. --payload '{\"amount\": 90}'",
    )
    p.add_argument("--wait-key", metavar="KEY", help="only if the run still waits on this key (from `state --json`)")
    _connection_args(p)

    p = command(
        "state", "show a run's state", "abstractruntime state RUN_ID\nabstractruntime state RUN_ID --json | jq .vars"
    )
    _run_id(p, "the run to show")
    _connection_args(p)

    p = command(
        "describe",
        "everything about one run",
        "abstractruntime describe RUN_ID",
        "A run's status, what it waits for (the event to emit, the timer, the prompt and its choices, the "
        "deadline), its versions, parent and children, fork origin and last error with its traceback.",
    )
    _run_id(p, "the run to describe")
    _connection_args(p)

    p = command("cancel", "cancel a run", 'abstractruntime cancel RUN_ID --reason "no longer needed"')
    _run_id(p, "the run to cancel")
    p.add_argument("--reason", metavar="TEXT", help='why, kept in the run\'s error: --reason "duplicate"')
    _connection_args(p)

    p = command(
        "runs",
        "list runs, newest first",
        "abstractruntime runs\n"
        "abstractruntime runs --status waiting --workflow approval\n"
        "abstractruntime runs --since 2h --limit 100\n"
        "abstractruntime runs --cursor RUN_ID      # the next page",
        "List runs newest first, a page at a time: what each waits for, failed runs' errors, stranded and "
        "child runs marked.",
    )
    p.add_argument("--status", choices=STATUSES, help="only runs with this status, e.g. --status waiting")
    _workflow_arg(p, "--workflow", metavar="WORKFLOW", help="only runs of this workflow, e.g. --workflow approval")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="runs per page (default 20, at most 1000)")
    p.add_argument(
        "--cursor", metavar="RUN_ID", help="start after this run (the footer of the previous page says which)"
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="only runs updated since then: an age (30s, 10m, 2h, 3d) or an ISO-8601 time",
    )
    _connection_args(p)

    p = command(
        "ledger",
        "show a run's ledger records",
        "abstractruntime ledger RUN_ID\nabstractruntime ledger RUN_ID --after 10 --limit 5",
    )
    _run_id(p, "the run whose ledger to show")
    p.add_argument(
        "--after", type=int, default=0, metavar="SEQ", help="records after this seq (default 0: from the first)"
    )
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="at most this many records (default 1000)")
    _connection_args(p)

    p = command(
        "watch",
        "stream events (all runs, or one)",
        "abstractruntime watch\nabstractruntime watch RUN_ID --after 0     # replay its events first",
    )
    _run_id(p, "only this run's events (default: every run's)", nargs="?")
    p.add_argument("--after", type=int, metavar="CURSOR", help="replay events after this cursor first, e.g. --after 0")
    p.add_argument("--count", type=int, metavar="N", help="stop after this many events")
    _connection_args(p)

    p = command(
        "answer",
        "answer a waiting run's prompt (pick one, read the answer, resume)",
        "abstractruntime answer                    # choose among the waiting runs\n"
        "abstractruntime answer RUN_ID --text approve\n"
        "echo approve | abstractruntime answer RUN_ID",
        "Show a waiting run's prompt, read the answer (from the terminal, or a line of stdin) and resume it; "
        "then exit with its outcome: 0 completed, 1 failed or cancelled, 4 waiting again. End of input "
        "answers nothing (exit 1).",
    )
    _run_id(p, "answer this run (default: choose from the waiting runs)", nargs="?")
    p.add_argument("--text", metavar="TEXT", help="the answer, e.g. --text approve (default: read it)")
    _connection_args(p)

    p = command(
        "emit",
        "emit an event: resume every run waiting on it",
        "abstractruntime emit payment_received --payload '{\"amount\": 120}'\n"
        "abstractruntime emit expense_paid --run RUN_ID       # a run-scoped event\n"
        "abstractruntime emit review_done --scope session --session s-42",
    )
    p.add_argument("name", metavar="NAME", help="the event's name, e.g. expense_paid")
    p.add_argument(
        "--payload", default="null", metavar="JSON", help="the event's payload, JSON: --payload '{\"amount\": 5}'"
    )
    p.add_argument(
        "--scope",
        choices=["global", "session", "run"],
        help="whose waits it reaches (default: run with --run, else global)",
    )
    p.add_argument("--session", metavar="ID", help="for --scope session: the session, e.g. --session s-42")
    from .complete import run_ids

    a = p.add_argument("--run", metavar="RUN_ID", help="for a run-scoped event: the run that waits on it")
    a.completer = run_ids  # type: ignore[attr-defined]
    _connection_args(p)

    p = command(
        "retry",
        "run a failed run again from the node that failed",
        "abstractruntime retry RUN_ID               # after fixing the node (the daemon reloads it)\n"
        "abstractruntime retry RUN_ID --wait",
        "Run a failed run again from the node that failed, under the code loaded now; effects it recorded "
        "before are not run again. Exit 1 if it fails again.",
    )
    _run_id(p, "the failed run")
    _wait_flags(p, "run")
    _connection_args(p)

    p = command(
        "fork",
        "a new run from a run's state after one of its ledger records",
        "abstractruntime fork RUN_ID                # from its last record\n"
        "abstractruntime fork RUN_ID --seq 3 --vars '{\"amount\": 90}'",
        "Make a new run whose state is RUN_ID's after ledger record --seq (see `ledger`), with --vars merged "
        "in, and run it under the code loaded now. Effects recorded before that point are not run again; the "
        "new run's ledger names where it came from.",
    )
    _run_id(p, "the run to fork")
    p.add_argument("--seq", type=int, metavar="N", help="fork after this ledger record (default: the last)")
    p.add_argument("--vars", metavar="JSON", help="variables to change, a JSON object: --vars '{\"amount\": 90}'")
    _wait_flags(p, "new run")
    _connection_args(p)

    p = command(
        "init",
        "make the current folder a project: a config, a workflows/ folder with an example",
        "mkdir myproject && cd myproject && abstractruntime init",
        "Scaffold a project here: abstractruntime.toml, workflows/hello.py (a commented example) and a "
        ".gitignore line for the data folder. Refuses if the folder already has a config.",
    )
    p = command(
        "config",
        "the settings in effect and where each comes from",
        "abstractruntime config\nabstractruntime config --json",
        "Print the effective settings (flags > environment > config file > defaults) of the project found from "
        "the working folder, and the source of each.",
    )
    p.add_argument("--config", metavar="FILE", help="the project config (default: found from the working folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = command("status", "the daemon's version, uptime, store and run counts", "abstractruntime status")
    _connection_args(p)
    p = command(
        "ui",
        "open the daemon's web page (it must serve one: serve --http PORT)",
        "abstractruntime ui\nabstractruntime ui --no-open      # print the link only (to open elsewhere)",
        "Ask the daemon for a one-time link to its web page and open it in a browser. The link signs that "
        "browser in (a cookie holding the daemon's token) and works once, for two minutes.",
    )
    p.add_argument("--no-open", action="store_true", help="print the link, don't start a browser")
    _connection_args(p)
    p = command("stop", "stop the daemon (in-flight steps finish and are committed first)", "abstractruntime stop")
    _connection_args(p)
    p = command(
        "workflows", "the workflows the daemon serves, their versions and load errors", "abstractruntime workflows"
    )
    _connection_args(p)
    p = command(
        "reload", "reload the workflow files that changed (the daemon also watches them)", "abstractruntime reload"
    )
    _connection_args(p)
    p = command(
        "migrate",
        "move a waiting run that a code change stranded on to a node of the new version",
        "abstractruntime migrate RUN_ID\nabstractruntime migrate RUN_ID --to-node review",
    )
    _run_id(p, "the stranded (waiting) run")
    p.add_argument(
        "--to-node",
        metavar="NODE",
        help="resume there, e.g. --to-node review (default: its resume node, else the entry)",
    )
    _connection_args(p)

    for name, what, examples in (
        (
            "export",
            "write every run and its ledger as JSON lines (a backup, or a move to another store)",
            "abstractruntime export --out runs.jsonl          # the project's store (stop its daemon first)\n"
            "abstractruntime export --store postgres --dsn 'dbname=runs' > runs.jsonl",
        ),
        (
            "import",
            "read runs exported by `export` into a store (runs it already has are skipped)",
            "abstractruntime import runs.jsonl --store postgres --dsn 'dbname=runs'\n"
            "abstractruntime import - --store sqlite < runs.jsonl",
        ),
    ):
        p = command(
            name,
            what,
            examples,
            what[:1].upper() + what[1:] + ". It opens the store itself: a data folder's daemon must be stopped "
            "(a PostgreSQL store needs no stop). Every ledger's hash chain is the same in the target.",
        )
        if name == "export":
            p.add_argument("--out", metavar="FILE", help="write here (default: standard output), e.g. --out runs.jsonl")
        else:
            p.add_argument("file", metavar="FILE", help="the export to read, or - for standard input")
        p.add_argument("--data", metavar="DIR", help="the data folder (default: the project's .abstractruntime/)")
        p.add_argument("--store", choices=["files", "sqlite", "postgres"], help="the store (default: the config's)")
        p.add_argument("--dsn", metavar="DSN", help="for --store postgres: the database, e.g. 'dbname=runs'")
        p.add_argument("--config", metavar="FILE", help="the project config (default: found from the working folder)")

    p = command(
        "completion",
        "print the shell code for tab completion",
        'eval "$(abstractruntime completion bash)"     # in ~/.bashrc\n'
        'eval "$(abstractruntime completion zsh)"      # in ~/.zshrc',
        "Print the code that makes bash or zsh complete commands, flags, run ids and workflow ids (asked of "
        "the daemon) for abstractruntime.",
    )
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell: bash or zsh")
    return parser


def _serve_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    s = command(
        "serve",
        "run the daemon",
        "abstractruntime serve\n"
        "abstractruntime serve --workflows examples/workflows --store sqlite\n"
        "abstractruntime serve --tcp 127.0.0.1:7400\n"
        "abstractruntime serve --http 8765           # and the web page: `abstractruntime ui` opens it",
        "Run the daemon in the foreground (logs on stderr). SIGTERM or Ctrl-C stops it once its in-flight "
        "steps are committed; a second one stops it at once.",
    )
    where = s.add_mutually_exclusive_group()
    where.add_argument("--stdio", action="store_true", help="serve the one client on stdin/stdout (an editor)")
    where.add_argument(
        "--socket",
        metavar="PATH",
        help="unix socket path (default: a private per-project path, see docs/architecture.md)",
    )
    where.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="listen on TCP, e.g. 127.0.0.1:7400; clients send the token in DATA/daemon.token",
    )
    s.add_argument("--data", metavar="DIR", help="data folder (default: the project's .abstractruntime/)")
    s.add_argument(
        "--workflows",
        action="append",
        metavar="DIR",
        help="a workflow folder; repeatable (default: the config's, else the project's workflows/)",
    )
    s.add_argument(
        "--store",
        choices=["files", "sqlite", "memory", "postgres"],
        help="run store backend (default: the config's, else files; memory keeps nothing, for tests; postgres: "
        "several daemons share one database, see docs/deploy.md)",
    )
    s.add_argument(
        "--dsn",
        metavar="DSN",
        help="for --store postgres: the database, e.g. 'host=/run/postgresql dbname=runs' or "
        "postgresql://app@db/runs (the password from PGPASSWORD or ~/.pgpass, never the command line)",
    )
    s.add_argument(
        "--lease-s",
        type=float,
        metavar="SECONDS",
        help="for --store postgres: how long this daemon's hold on a run outlasts its last heartbeat; when it "
        "dies, the other daemons take its runs after this (default 30)",
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
        "--llm-provider",
        metavar="NAME",
        help="an AbstractCore provider: ollama, openai, openai-compatible, anthropic, ...",
    )
    llm.add_argument("--llm-model", metavar="MODEL", help="the model, e.g. qwen3:4b")
    llm.add_argument("--llm-base-url", metavar="URL", help="the provider's base URL (default: the provider's own)")
    llm.add_argument("--llm-timeout", type=float, metavar="SECONDS", help="seconds per provider call, e.g. 60")
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
    s.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help="also serve the web page and its WebSocket, e.g. --http 8765 (loopback; `abstractruntime ui` opens it "
        "signed in); see docs/web.md",
    )
    s.add_argument("--allow-remote", action="store_true", help="allow --tcp or --http on a non-loopback address")
    s.add_argument(
        "--workers", type=int, default=32, metavar="N", help="threads that run nodes and effects (default: 32)"
    )
    s.add_argument(
        "--max-frame", type=int, default=16 * 1024 * 1024, metavar="BYTES", help="largest accepted message in bytes"
    )
    s.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="how much the daemon logs on stderr (default: the config's, else info)",
    )


def _lsp_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "lsp",
        "what an editor runs: join stdio to the project's daemon (starting it if needed)",
        "abstractruntime lsp          # as an editor's language server command",
        "Join this process's stdin/stdout to the project's daemon (LSP framing passes through), starting the "
        "daemon in the background first if none is running. Point an editor's LSP client at this command "
        "(see docs/editors.md).",
    )
    p.add_argument("--data", metavar="DIR", help="the daemon's data folder (default: the project's)")
    p.add_argument(
        "--socket", metavar="PATH", help="the daemon's unix socket (default: the project's, found from the data folder)"
    )
    p.add_argument("--config", metavar="FILE", help="the project config (default: found from the working folder)")
    p.add_argument(
        "--workflows",
        action="append",
        metavar="DIR",
        help="for a daemon this starts: a workflow folder; repeatable (default: the config's)",
    )
    p.add_argument("--store", choices=["files", "sqlite"], help="for a daemon this starts (default: the config's)")


def connect(args: argparse.Namespace, *, timeout: Optional[float] = 120.0) -> Any:
    """A blocking client of the daemon the connection flags name (not yet connected)."""
    from ..client import Client
    from ..client.aio import AsyncClient, Target, discover_target

    socket = getattr(args, "socket", None)
    tcp = getattr(args, "tcp", None)
    data = getattr(args, "data", None)
    config = getattr(args, "config", None)
    if socket:
        target = Target("unix", path=socket)
    elif tcp:
        host, _, port = tcp.rpartition(":")
        if not port.isdigit():
            raise UsageError(f"--tcp wants HOST:PORT, e.g. 127.0.0.1:7400, not {tcp!r}")
        found = discover_target(data, config=config)
        token = (
            getattr(args, "token", None)
            or os.environ.get("ABSTRACTRUNTIME_TOKEN")
            or (found.token if found.kind == "tcp" else None)
        )
        target = Target("tcp", host=host or "127.0.0.1", port=int(port), token=token)
    else:
        target = discover_target(data, config=config)
    return Client(AsyncClient(target), timeout=timeout)


def _transfer(args: argparse.Namespace) -> int:
    from ..core.errors import AbstractRuntimeError
    from ..project import ConfigError
    from ..protocol.discovery import UnsafePathError
    from .transfer import export, import_

    try:
        return export(args) if args.command == "export" else import_(args)
    except (UsageError, ConfigError, UnsafePathError) as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 2
    except AbstractRuntimeError as e:  # a store that cannot be opened or written
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"abstractruntime: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 1


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    from .complete import autocomplete

    autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining
        # about the unflushed stdout at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "init":
        from ..scaffold import init

        return init(os.getcwd())
    if args.command == "config":
        from .commands import config

        return config(args)
    if args.command in ("export", "import"):
        return _transfer(args)
    if args.command == "completion":
        from .complete import shellcode

        print(shellcode(args.shell))
        return 0
    if args.command == "lsp":
        from ..client.lsp_proxy import run as run_lsp

        return run_lsp(args)
    if args.command == "serve":
        from ..daemon.server import run

        return run(args)
    from .commands import run_command

    return run_command(args)
