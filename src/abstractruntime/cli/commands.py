"""The client commands: each talks to the daemon, prints for a person (or JSON), and exits
with a code a script can act on (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from ..core.timeutil import epoch_to_iso
from . import UsageError, connect
from .show import (
    Style,
    age,
    describe_state,
    emit_command,
    event_of,
    first_line,
    table,
    until_text,
    waiting_for,
)

OK, FAILED, USAGE, NO_DAEMON, WAITING, INTERRUPTED = 0, 1, 2, 3, 4, 130


def run_command(args: argparse.Namespace) -> int:
    from ..client.aio import DaemonNotRunning
    from ..client.connection import ConnectionLost
    from ..core.errors import AbstractRuntimeError
    from ..project import ConfigError
    from ..protocol.discovery import UnsafePathError

    try:
        with connect(args) as c:
            return COMMANDS[args.command](c, args)
    except UsageError as e:
        return _fail(str(e), USAGE)
    except DaemonNotRunning as e:
        return _fail(str(e), NO_DAEMON)
    except (ConfigError, UnsafePathError) as e:
        return _fail(str(e), USAGE)
    except (ConnectionRefusedError, FileNotFoundError, ConnectionLost) as e:
        return _fail(f"cannot reach the daemon ({e}); start it with `abstractruntime serve` or `make serve`", NO_DAEMON)
    except AbstractRuntimeError as e:
        return _fail(str(e), FAILED)
    except TimeoutError:
        return _fail("the daemon did not answer in time", FAILED)
    except BrokenPipeError:
        raise  # our reader went away (`| head`): main exits quietly
    except OSError as e:  # a data folder we cannot read, a socket path that is a file, ...
        return _fail(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""), FAILED)


def _fail(message: str, code: int) -> int:
    print(f"abstractruntime: {message}", file=sys.stderr)
    return code


def _out(args: argparse.Namespace, obj: Any, text: str) -> None:
    if args.json:
        if hasattr(obj, "model_dump"):
            obj = obj.model_dump(mode="json")
        print(json.dumps(obj, indent=2))
    else:
        print(text)


def _json_arg(text: str, flag: str, *, obj: bool = False) -> Any:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{flag} is not valid JSON ({e}): {text!r}") from None
    if obj and not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object, like '{{\"amount\": 120}}', not {text!r}")
    return value


def _outcome(st: Any, *, waiting: int) -> int:
    if st.status == "completed":
        return OK
    if st.status in ("failed", "cancelled"):
        return FAILED
    return waiting


def _needs_someone(st: Any) -> bool:
    """A run that will not move on by itself: it ended, or waits for an answer, an event or a
    host (a timer or a child run moves on by itself; so does a deadline, but not soon enough to
    wait for it here)."""
    if st.status in ("completed", "failed", "cancelled"):
        return True
    w = st.waiting
    if st.status != "waiting" or w is None:
        return False
    return bool((w.details or {}).get("paused")) or w.reason in ("user", "event", "job")


def _follow(c: Any, run_id: str, settled: Callable[[Any], bool]) -> Any:
    """Wait until the run's state is `settled`; returns that state. Events are replayed from
    the cursor taken before the state is read, so no change falls between the two."""
    cursor = c.status().cursor
    st = c.state(run_id)
    if settled(st):
        return st
    for ev in c.subscribe(run_id, after=cursor):
        if ev.kind == "state" and ev.state is not None and ev.state.status != "running":
            st = c.state(run_id)
            if settled(st):
                return st
    return c.state(run_id)


def _interrupted(run_id: str) -> int:
    print(
        f"\nrun {run_id} goes on in the daemon; follow it with `abstractruntime watch {run_id}` "
        f"or look at it with `abstractruntime describe {run_id}`",
        file=sys.stderr,
    )
    return INTERRUPTED


def _run_and_show(c: Any, args: argparse.Namespace, run_id: str, stored: Any, mode: Optional[str]) -> int:
    """After a run was stored (start, retry, fork): show it once it settles (see `mode`)."""
    if mode == "no":
        _out(args, {"run_id": run_id, "state": stored.model_dump(mode="json")}, run_id)
        return OK
    try:
        if mode == "end":
            st = _follow(c, run_id, _needs_someone)
        else:
            st = _follow(c, run_id, lambda s: s.status != "running")
    except KeyboardInterrupt:
        return _interrupted(run_id)
    _out(args, {"run_id": run_id, "state": st.model_dump(mode="json")}, describe_state(st, Style()))
    return _outcome(st, waiting=WAITING if mode == "end" else OK)


# -- commands ---------------------------------------------------------------------------------------


def start(c: Any, args: argparse.Namespace) -> int:
    vars_ = _json_arg(args.vars, "--vars", obj=True)
    # Stored at once (wait false), then followed here: Ctrl-C always knows the run's id.
    r = c.start(args.workflow_id, vars_, session_id=args.session, wait=False)
    mode = "end" if args.command == "execute" else getattr(args, "wait", None)
    return _run_and_show(c, args, r.run_id, r.state, mode)


def retry(c: Any, args: argparse.Namespace) -> int:
    st = c.retry(args.run_id, wait=False)
    return _run_and_show(c, args, args.run_id, st, args.wait)


def fork(c: Any, args: argparse.Namespace) -> int:
    vars_ = _json_arg(args.vars, "--vars", obj=True) if args.vars is not None else None
    r = c.fork(args.run_id, seq=args.seq, vars=vars_, wait=False)
    if args.wait != "no" and not args.json:
        print(f"forked run {args.run_id} into {r.run_id}", file=sys.stderr)
    return _run_and_show(c, args, r.run_id, r.state, args.wait)


def resume(c: Any, args: argparse.Namespace) -> int:
    payload = {"text": args.text} if args.text is not None else _json_arg(args.payload, "--payload", obj=True)
    st = c.resume(args.run_id, payload, wait_key=args.wait_key)
    _out(args, st, describe_state(st, Style()))
    return _outcome(st, waiting=OK)


def state(c: Any, args: argparse.Namespace) -> int:
    st = c.state(args.run_id)
    _out(args, st, describe_state(st, Style()))
    return OK


def cancel(c: Any, args: argparse.Namespace) -> int:
    st = c.cancel(args.run_id, args.reason)
    _out(args, st, describe_state(st, Style()))
    return OK


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def _since(text: Optional[str]) -> Optional[str]:
    if text is None:
        return None
    m = _AGE.match(text.strip())
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return epoch_to_iso(time.time() - seconds)
    from ..core.timeutil import iso_to_epoch

    try:
        iso_to_epoch(text)
    except ValueError:
        raise UsageError(f"--since wants an age (30s, 10m, 2h, 3d) or an ISO-8601 time, not {text!r}") from None
    return text


def _stranded(c: Any) -> Dict[str, Any]:
    """workflow id -> its served WorkflowInfo (to tell which waiting runs are stranded)."""
    try:
        return {w.workflow_id: w for w in c.workflows()}
    except Exception:  # a listing still shows without the marks
        return {}


def _is_stranded(s: Any, served: Dict[str, Any]) -> bool:
    if s.status != "waiting" or not served:
        return False
    wf = served.get(s.workflow_id)
    return wf is None or (s.resume_node is not None and s.resume_node not in wf.nodes)


def runs(c: Any, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise UsageError(f"--limit must be from 1 to 1000, not {args.limit}")
    r = c.runs(
        status=args.status,
        workflow_id=args.workflow,
        limit=args.limit,
        cursor=args.cursor,
        order="newest",
        since=_since(args.since),
    )
    if args.json:
        _out(args, r, "")
        return OK
    if not r.runs:
        print("no runs" if not (args.status or args.workflow or args.since or args.cursor) else "no runs match")
        return OK
    served = _stranded(c) if any(s.status == "waiting" for s in r.runs) else {}
    style = Style()
    now = time.time()
    rows, plain = [], []
    for s in r.runs:
        status = s.status + (" (paused)" if s.paused else "")
        if _is_stranded(s, served):
            status += " (stranded)"
        if s.status == "waiting":
            what = waiting_for(s)
            if _is_stranded(s, served):
                what = f"stranded at {s.resume_node}: abstractruntime migrate {s.run_id}"
        elif s.status in ("failed", "cancelled"):
            what = first_line(s.error)
        else:
            what = ""
        workflow = s.workflow_id + (f" (child of {s.parent_run_id[:8]})" if s.parent_run_id else "")
        cells = [s.run_id, workflow, status, s.current_node, what, age(s.updated_at, now)]
        plain.append(cells)
        rows.append([*cells[:2], style.status(s.status, status), *cells[3:]])
    print(table(["RUN", "WORKFLOW", "STATUS", "NODE", "WAITING FOR / ERROR", "UPDATED"], rows, style, plain))
    if r.next:
        more = f"{r.remaining} more" if r.remaining is not None else "more"
        print(style.dim(f"{more} — next: --cursor {r.next}"))
    return OK


def ledger(c: Any, args: argparse.Namespace) -> int:
    r = c.ledger(args.run_id, after=args.after, limit=args.limit)
    rows = [
        f"#{x.seq:<4} {x.node_id:<16} {x.status:<10}" + _record_note(x) + (f" {first_line(x.error)}" if x.error else "")
        for x in r.records
    ]
    _out(args, r, "\n".join(rows) if rows else "no records")
    return OK


def _record_note(rec: Any) -> str:
    res = rec.result if isinstance(rec.result, dict) else {}
    if rec.effect:
        return f" {rec.effect.get('type')}"
    for key in ("started", "forked", "resumed", "timed_out", "retried", "migrated", "paused", "unpaused", "output"):
        if key in res:
            return f" ({key.replace('_', ' ')})"
    return ""


def _all_ledger(c: Any, run_id: str) -> List[Any]:
    out: List[Any] = []
    after = 0
    while True:
        page = c.ledger(run_id, after=after, limit=1000)
        out += page.records
        if page.next is None:
            return out
        after = page.next


def describe(c: Any, args: argparse.Namespace) -> int:
    st = c.state(args.run_id)
    records = _all_ledger(c, st.run_id)
    children = c.runs(parent_run_id=st.run_id, limit=1000, order="oldest").runs
    served = _stranded(c)
    if args.json:
        _out(
            args,
            {
                "state": st.model_dump(mode="json"),
                "children": [s.model_dump(mode="json") for s in children],
                "ledger": [r.model_dump(mode="json") for r in records],
            },
            "",
        )
        return OK
    style = Style()
    wf = served.get(st.workflow_id)
    out = [
        f"{style.bold('run')}       {st.run_id}",
        f"{style.bold('workflow')}  {st.workflow_id}",
        f"{style.bold('status')}    {style.status(st.status)} at node {st.current_node}, {st.steps} step(s), "
        f"updated {age(st.updated_at)}",
        f"{style.bold('versions')}  started under {st.workflow_version or 'unversioned'}, last step under "
        f"{st.last_version or 'unversioned'}; serving {wf.version if wf else 'nothing (workflow not loaded)'}",
    ]
    w = st.waiting
    if w is not None:
        out.append(f"{style.bold('waits for')} {_wait_text(st, w)}")
        node = w.resume_to_node or st.current_node
        if wf is None or node not in wf.nodes:
            out.append(f"  stranded: node {node!r} is not in the version serving; abstractruntime migrate {st.run_id}")
    if st.parent_run_id:
        out.append(f"{style.bold('parent')}    {st.parent_run_id}")
    if children:
        out.append(f"{style.bold('children')}")
        out += [f"  {s.run_id}  {s.workflow_id}  {style.status(s.status)}" for s in children]
    origin = records[0].result if records and isinstance(records[0].result, dict) else {}
    if "forked" in origin:
        f = origin["forked"]
        out.append(
            f"{style.bold('forked')}    from run {f.get('run_id')} after record {f.get('seq')} "
            f"(hash {str(f.get('record_hash'))[:16]}…)"
            + (f", vars changed: {json.dumps(f['changed_vars'])}" if f.get("changed_vars") else "")
        )
    if st.output is not None:
        out.append(f"{style.bold('output')}    {json.dumps(st.output)}")
    failed = [r for r in records if r.status == "failed"]
    if st.error or failed:
        last = failed[-1] if failed else None
        out.append(
            f"{style.bold('error')}     {style.status('failed', first_line(st.error or (last.error if last else '')))}"
        )
        if last is not None:
            out.append(f"  at node {last.node_id}, record #{last.seq}, {last.ended_at or last.started_at}")
            if last.traceback:
                out += ["  " + line for line in last.traceback.rstrip().splitlines()]
        if st.status == "failed":
            out.append(f"  retry it after a fix: abstractruntime retry {st.run_id}")
    out.append(f"{style.bold('ledger')}    {len(records)} record(s): abstractruntime ledger {st.run_id}")
    print("\n".join(out))
    return OK


def _wait_text(st: Any, w: Any) -> str:
    details = w.details or {}
    if details.get("paused"):
        text = "nothing: it is paused"
    elif w.reason == "user":
        text = f"an answer to {w.prompt!r}"
        if w.choices:
            text += f", one of {', '.join(w.choices)}" + ("" if w.allow_free_text else " (only these)")
        text += f"\n  answer it: abstractruntime answer {st.run_id}"
    elif w.reason == "event":
        ev = event_of(w.wait_key)
        text = (
            f"event {ev[0]!r} (scope {ev[1]})\n  send it: {emit_command(w.wait_key)} --payload JSON"
            if ev
            else f"the event with wait key {w.wait_key!r}"
        )
    elif w.reason == "until":
        text = f"a timer that fires at {until_text(w.until)}" if w.until else "a timer"
    elif w.reason == "subworkflow":
        text = f"its child run {details.get('sub_run_id')} ({details.get('sub_workflow_id')})"
    else:
        effect = (details.get("effect") or {}).get("type")
        text = f"a host to execute {effect or 'an effect'} and resume it with the result"
    deadline = (details.get("deadline") or {}) if isinstance(details.get("deadline"), dict) else None
    if deadline is not None and w.until:
        text += f"\n  deadline {until_text(w.until)}" + (
            f", then it goes on at {deadline['on_timeout']}" if deadline.get("on_timeout") else ""
        )
    return text


def watch(c: Any, args: argparse.Namespace) -> int:
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
    return OK


def emit(c: Any, args: argparse.Namespace) -> int:
    if args.scope == "session" and not args.session:
        raise UsageError("--scope session needs --session ID")
    if args.scope == "run" and not args.run:
        raise UsageError("--scope run needs --run RUN_ID (the run that waits on the event)")
    resumed = c.emit_event(
        args.name,
        _json_arg(args.payload, "--payload"),
        scope=args.scope,
        session_id=args.session,
        run_id=args.run,
    )
    _out(args, {"resumed": resumed}, f"resumed {len(resumed)} run(s)" + "".join(f"\n  {r}" for r in resumed))
    return OK


def status(c: Any, args: argparse.Namespace) -> int:
    s = c.status()
    _out(
        args,
        s,
        f"abstractruntime {s.version} (pid {s.pid}, up {s.uptime_s:.0f}s)\n"
        f"listening: {s.socket or s.tcp or '?'}\n"
        + (f"web page: http://{s.http}\n" if s.http else "")
        + f"project: {s.project_root or '?'}  (config: {s.config_file or 'none, defaults'})\n"
        f"data: {s.data_dir}  (store: {s.store})\n"
        f"workflows: {', '.join(s.workflow_dirs) or 'none'}\n"
        f"model: {s.model or 'none'}\n"
        f"runs: {json.dumps(s.runs)}\nclients: {s.clients}" + _peers(s.peers, s.daemon_id),
    )
    return OK


def ui(c: Any, args: argparse.Namespace) -> int:
    link = c.web_link()
    if args.json:
        _out(args, link, "")
        return OK
    print(f"{link.url}\n(this link signs one browser in, once, within {link.expires_in_s:.0f} s)")
    if not args.no_open:
        import webbrowser

        try:
            webbrowser.open(link.url)
        except webbrowser.Error:  # no browser here (a server): the printed link is the way
            pass
    return OK


def _peers(peers: list, me: Optional[str]) -> str:
    """The daemons sharing the database, one line each (a table when there are any)."""
    if not peers:
        return ""
    rows = [["DAEMON", "HOST", "PID", "HEARTBEAT", "ADDRESS", "WORKFLOWS"]]
    for p in peers:
        versions = ", ".join(f"{w}@{v}" for w, v in sorted(p.workflows.items())) or "-"
        mark = " (this one)" if p.this else ""
        rows.append(
            [p.daemon_id + mark, p.host, str(p.pid), f"{p.heartbeat_age_s:.1f}s ago", p.address or "-", versions]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    return f"\npeers ({len(peers)} daemons on this database):\n" + "\n".join("  " + x.rstrip() for x in lines)


def workflows(c: Any, args: argparse.Namespace) -> int:
    res = c.workflows_list()
    rows = [
        f"{w.workflow_id:<20} {w.version or '-':<12} {len(w.nodes)} nodes  {w.source or ''}"
        + (f"  ({w.stranded} stranded)" if w.stranded else "")
        for w in res.workflows
    ]
    rows += [f"load error: {_where(e)}: {e.message}" for e in res.load_errors]
    _out(args, res, "\n".join(rows) or "no workflows")
    return OK


def stop(c: Any, args: argparse.Namespace) -> int:
    pid = c.status().pid
    c.shutdown_daemon()
    _out(args, {"stopped": pid}, f"stopping the daemon (pid {pid})")
    return OK


def reload(c: Any, args: argparse.Namespace) -> int:
    r = c.reload_workflows()
    rows = [
        f"{x.workflow_id}: {x.old_version or 'new'} -> {x.new_version or 'removed'}  ({x.file})" for x in r.changed
    ] or ["no workflow changed"]
    rows += [f"load error: {_where(e)}: {e.message}" for e in r.load_errors]
    rows += [f"stranded: {x.run_id} ({x.workflow_id}) at {x.node_id}: {x.reason.replace('_', ' ')}" for x in r.stranded]
    _out(args, r, "\n".join(rows))
    return OK


def migrate(c: Any, args: argparse.Namespace) -> int:
    st = c.migrate(args.run_id, args.to_node)
    moved = next(
        (r.result["migrated"] for r in reversed(_all_ledger(c, st.run_id)) if "migrated" in (r.result or {})), None
    )
    text = describe_state(st, Style())
    if moved:
        text = (
            f"moved run {st.run_id} from node {moved.get('from_node')} (version {moved.get('from_version') or '-'}) "
            f"to node {moved.get('to_node')} (version {moved.get('to_version') or '-'})\n" + text
        )
    _out(args, st, text)
    return OK


def _where(e: Any) -> str:
    return f"{e.file}:{e.line}" if e.line else e.file


# -- answer -------------------------------------------------------------------------------------------


class _EndOfInput(Exception):
    pass


def _read(prompt: str) -> str:
    """One line from the terminal (with a prompt) or from stdin; _EndOfInput at its end."""
    if sys.stdin.isatty():
        try:
            return input(prompt).strip()
        except EOFError:
            raise _EndOfInput() from None
    line = sys.stdin.readline()
    if not line:
        raise _EndOfInput()
    return line.strip()


def _waiting_prompts(c: Any) -> List[Any]:
    out: List[Any] = []
    cursor = None
    while True:
        page = c.runs(status="waiting", limit=1000, cursor=cursor)
        out += [s for s in page.runs if s.prompt and not s.paused]
        cursor = page.next
        if not cursor:
            return out


def answer(c: Any, args: argparse.Namespace) -> int:
    try:
        return _answer(c, args)
    except _EndOfInput:
        return _fail("no answer given (end of input); nothing was sent", FAILED)


def _answer(c: Any, args: argparse.Namespace) -> int:
    if args.run_id:
        target = c.state(args.run_id)
    else:
        waiting = _waiting_prompts(c)
        if not waiting:
            print("no run is waiting for an answer")
            return OK
        for i, s in enumerate(waiting, 1):
            print(
                f"{i:>3}. {s.workflow_id:<16} {s.run_id}  ? {s.prompt}"
                + (f"  [{'/'.join(s.choices)}]" if s.choices else "")
            )
        pick = 1
        while len(waiting) > 1:
            raw = _read("which run? [1] ")
            if not raw:
                break
            if raw.isdigit() and 1 <= int(raw) <= len(waiting):
                pick = int(raw)
                break
            print(f"please enter a number from 1 to {len(waiting)}", file=sys.stderr)
        target = c.state(waiting[pick - 1].run_id)
    w = target.waiting
    if target.status != "waiting" or w is None:
        return _fail(f"run {target.run_id} is not waiting ({target.status})", FAILED)
    if (w.details or {}).get("paused"):
        return _fail(f"run {target.run_id} is paused: it takes no answer until it is resumed", FAILED)
    wf = _stranded(c).get(target.workflow_id)
    node = w.resume_to_node or target.current_node
    if wf is None or node not in wf.nodes:
        return _fail(
            f"run {target.run_id} is stranded: it would resume at node {node!r}, which the version serving lacks; "
            f"migrate it first: abstractruntime migrate {target.run_id}",
            FAILED,
        )
    print(f"{w.prompt or 'answer:'}" + (f"  [{'/'.join(w.choices)}]" if w.choices else ""))
    strict = bool(w.choices) and not w.allow_free_text
    text = args.text
    while True:
        if text is None:
            text = _read("> ")
        chosen = _choice(text, w.choices) if w.choices else None
        if chosen is not None:
            text = chosen
        if not strict or text in (w.choices or []):
            break
        print(f"please answer one of: {', '.join(w.choices)}", file=sys.stderr)
        if args.text is not None:
            return USAGE
        text = None
    try:
        st = c.resume(target.run_id, {"text": text}, wait_key=w.wait_key)
        if st.status == "running" or not _needs_someone(st):
            st = _follow(c, target.run_id, _needs_someone)
    except KeyboardInterrupt:
        return _interrupted(target.run_id)
    _out(args, st, describe_state(st, Style()))
    return _outcome(st, waiting=WAITING)


def _choice(text: str, choices: List[str]) -> Optional[str]:
    """A choice given by its number (1-based), else None."""
    if text.isdigit() and 1 <= int(text) <= len(choices) and text not in choices:
        return choices[int(text) - 1]
    return None


def config(args: argparse.Namespace) -> int:
    from ..project import ConfigError, load

    try:
        proj = load(config=args.config)
    except ConfigError as e:
        return _fail(str(e), USAGE)
    rows = proj.describe()
    if args.json:
        print(json.dumps({"project_root": proj.root, "config_file": proj.config_file, "settings": rows}, indent=2))
        return OK
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
    return OK


COMMANDS: Dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "start": start,
    "execute": start,
    "resume": resume,
    "state": state,
    "describe": describe,
    "cancel": cancel,
    "runs": runs,
    "ledger": ledger,
    "watch": watch,
    "answer": answer,
    "emit": emit,
    "retry": retry,
    "fork": fork,
    "status": status,
    "ui": ui,
    "workflows": workflows,
    "stop": stop,
    "reload": reload,
    "migrate": migrate,
}
