"""`abstractruntime serve`: the accept loops for stdio, a unix socket and TCP.

Each connection gets its own `Session`; one client leaving, misbehaving or sending `exit`
ends that connection only. stdio serves the one client that spawned the daemon (an editor),
so there `exit` or end of input stops the daemon. SIGTERM and `daemon/shutdown` stop it
gracefully: in-flight steps finish and commit, then the stores are flushed and closed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import stat
import sys
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .. import __version__, project
from ..core.errors import StorageUnavailableError
from ..protocol import discovery as paths
from ..storage._durable import atomic_write
from . import _malloc, logs
from .framing import Connection, ConnWriter
from .hub import DataFolderInUse, Hub
from .session import MAX_UNREAD, Session
from .watch import Watcher

log = logging.getLogger("abstractruntime.daemon")

# Pending connections the kernel queues before accept: a burst of clients (an editor and its
# plugins, a script's pool) must not meet refusals. (asyncio's default is 100.)
BACKLOG = 1024


class CannotListen(Exception):
    """A listener could not be opened (its port is taken): the daemon stops, saying which."""


class Daemon:
    def __init__(
        self,
        hub: Hub,
        *,
        token: Optional[str] = None,
        max_frame: int = 16 * 1024 * 1024,
        watch: bool = True,
        reload_grace_s: float = 1.0,
    ) -> None:
        self.hub = hub
        self.reload_grace_s = reload_grace_s
        self.token = token
        self.max_frame = max_frame
        self.watch = watch
        self.sessions: set = set()
        # `serve --tcp` and `--http` (the web page and its WebSocket, see web.py): where they
        # listen, and the token their clients carry (see _listeners).
        self.tcp: Optional[Tuple[str, int]] = None
        self.http: Optional[Tuple[str, int]] = None
        self.remote_token: Optional[str] = None
        self.allow_remote = False
        self.web: Any = None
        self._stopped: Optional[asyncio.Event] = None
        self._watcher: Optional[Watcher] = None

    def workflows_changed(self, report: Dict[str, Any]) -> None:
        """Tell every initialized client about a reload (call on the event loop)."""
        for s in list(self.sessions):
            if s.initialized and not s.closed:
                s.workflows_changed(report)

    def _closed(self, session: Session) -> None:
        self.sessions.discard(session)
        self.hub.clients = len(self.sessions)

    def add_session(self, token: Optional[str], on_close: Optional[Callable[[Session], None]] = None) -> Session:
        """A new client's session, counted among the daemon's clients until it closes (every
        transport: a socket, stdin and stdout, the web page's WebSocket)."""
        session = Session(self.hub, token=token, on_close=on_close or self._closed)
        self.sessions.add(session)
        self.hub.clients = len(self.sessions)
        return session

    def _connection(self) -> Connection:
        """A new client on a socket: its session, the writer its replies go through (from any
        thread), and the protocol that reads its frames."""
        session = self.add_session(self.token)
        session.writer = ConnWriter(session.loop, max_unread=MAX_UNREAD, on_overflow=session.overflowed)
        return Connection(session, max_frame=self.max_frame)

    async def _wait_stop(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def _install_stop(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_throttled_exception_handler(lambda: self.hub.stopping))
        stopped = self._stopped = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(stopped.set)

        self.hub.on_stop(wake)
        self.hub.on_reload(lambda report: loop.call_soon_threadsafe(self.workflows_changed, report))
        if self.watch:
            self._watcher = Watcher(self.hub, self.reload_grace_s)
            self._watcher.start()

        def on_signal() -> None:
            if not self.hub.stopping:
                self.hub.request_stop()
                return
            # A second signal: stop now. Every acknowledged step is already synced to the
            # stores (their journals replay at the next start), so nothing committed is lost;
            # a step still running is replayed from its last checkpoint then.
            log.warning("stopping at once; %d step(s) in flight are replayed at the next start", self.hub.pool.busy)
            logging.shutdown()
            os._exit(1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError):
                pass

    async def _start_web(self) -> Dict[str, str]:
        """Start the web listener, if asked for; its address for the discovery file."""
        if self.http is None:
            return {}
        from .web import WebServer  # only a daemon that serves the page imports websockets

        assert self.remote_token is not None
        host, port = self.http
        web = WebServer(self, host, port, token=self.remote_token, allow_remote=self.allow_remote)
        try:
            address = await web.start()
        except OSError as e:  # the port is taken, or the address is not this machine's
            raise CannotListen(f"cannot serve the web page on {host}:{port}: {e.strerror or e}") from None
        self.web = self.hub.web = web
        log.info("serving the web page on http://%s (open it with `abstractruntime ui`)", address)
        print(
            f"abstractruntime: web page on http://{address} (`abstractruntime ui` opens it)",
            file=sys.stderr,
            flush=True,
        )
        return {"http": address}

    async def _finish(self) -> None:
        loop = asyncio.get_running_loop()
        if self.web is not None:
            await self.web.close()  # no new page connections; open ones close with the sessions
        if self._watcher is not None:
            await self._watcher.stop()
        # In-flight steps finish and commit first, and their clients get their answers (the
        # loop keeps running while the hub drains); only then do connections close.
        await loop.run_in_executor(None, self.hub.drain)
        await asyncio.sleep(0.05)
        for s in list(self.sessions):
            s.close()
        await loop.run_in_executor(None, self.hub.close)
        if self.web is not None:
            await self.web.wait_closed()

    async def serve_unix(self, path: str, *, default_folder: bool = True) -> None:
        self._install_stop()
        loop = asyncio.get_running_loop()
        if default_folder:
            paths.ensure_private_dir(os.path.dirname(path))
        # A socket path the user named lives in a folder of theirs: its mode is left alone
        # (the socket itself is created 0600).
        _remove_stale_socket(path)
        old = os.umask(0o177)  # the socket is created 0600: no window where others can connect
        try:
            server = await loop.create_unix_server(self._connection, path=path, backlog=BACKLOG)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        try:
            web = await self._start_web()
        except CannotListen:
            server.close()
            try:
                os.unlink(path)
            except FileNotFoundError:  # Python 3.13's close() removes a unix server's socket itself
                pass
            raise
        self._announce({"socket": path, **web})
        log.info("serving on unix socket %s", path)
        try:
            await self._wait_stop()
        finally:
            server.close()  # no new connections
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            await self._finish()
            # Only now: from Python 3.12.1 on, wait_closed() waits for every connection, and
            # connected editors leave only when _finish closes their sessions.
            await server.wait_closed()

    async def serve_tcp(self, host: str, port: int) -> None:
        self._install_stop()
        server = await asyncio.get_running_loop().create_server(self._connection, host, port, backlog=BACKLOG)
        bound = server.sockets[0].getsockname()
        try:
            web = await self._start_web()
        except CannotListen:
            server.close()
            raise
        self._announce({"tcp": f"{bound[0]}:{bound[1]}", **web})
        log.info("serving on tcp %s:%s", bound[0], bound[1])
        print(f"abstractruntime: listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
        try:
            await self._wait_stop()
        finally:
            server.close()
            await self._finish()
            await server.wait_closed()  # after the sessions closed (see serve_unix)

    async def serve_stdio(self) -> None:
        self._install_stop()
        loop = asyncio.get_running_loop()

        def gone(session: Session) -> None:
            self._closed(session)
            self.hub.request_stop()  # stdio serves exactly the client that spawned us

        session = self.add_session(None, on_close=gone)
        writer = session.writer = ConnWriter(loop, max_unread=MAX_UNREAD, on_overflow=session.overflowed)
        await loop.connect_write_pipe(lambda: writer, sys.stdout.buffer)
        await loop.connect_read_pipe(lambda: Connection(session, max_frame=self.max_frame), sys.stdin.buffer)
        await self._wait_stop()
        await self._finish()

    def _announce(self, where: dict) -> None:
        self.hub.address = dict(where)
        info = {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": time.time(),
            "store": self.hub.store_kind,
            **where,
        }
        try:
            atomic_write(paths.discovery_file(self.hub.data_dir), json.dumps(info).encode(), durable=False)
        except OSError as e:  # clients fall back to the default socket path of the data folder
            log.warning("could not write the discovery file in %s (%s)", self.hub.data_dir, e)


def _throttled_exception_handler(stopping: Any) -> Any:
    """The loop's exception handler, logging a repeated message once a minute: out of file
    descriptors, asyncio's accept loop fails (and logs) again every second per listener."""
    last: Dict[str, float] = {}
    skipped: Dict[str, int] = {}

    def handler(loop: asyncio.AbstractEventLoop, context: Dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if stopping() and "_start_serving" in message:
            # asyncio retries an accept that ran out of descriptors a second later, even when
            # the server has closed meanwhile; that retry fails on the closed socket. Harmless.
            log.debug("%s", message)
            return
        key = message[:120]
        now = time.monotonic()
        if now - last.get(key, -1e9) < 60.0:
            skipped[key] = skipped.get(key, 0) + 1
            return
        last[key] = now
        n = skipped.pop(key, 0)
        if n:
            context = dict(context, message=f"{message} ({n} more like it in the last minute, not logged)")
        loop.default_exception_handler(context)

    return handler


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"abstractruntime: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: a crashed daemon's leftover
        return
    finally:
        probe.close()
    raise RuntimeError(f"a daemon already listens on {path}")


TOKEN_ENV = "ABSTRACTRUNTIME_TOKEN"


def make_token(data_dir: str) -> str:
    """A new token for each start, or the one in $ABSTRACTRUNTIME_TOKEN: several daemons
    behind one address (sharing a database) take the same token, so a client needs one."""
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
    if len(token) < 16:
        raise ValueError(f"${TOKEN_ENV} is too short to be a secret: use 16 characters or more")
    path = paths.token_file(data_dir)
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)  # a leftover; never written through (it could be a planted link)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


def listen_address(text: str, flag: str, allow_remote: bool) -> Tuple[str, int]:
    """`--tcp` or `--http`: `[HOST:]PORT` (IPv6 in brackets) -> (host, port), loopback by
    default. A ValueError names what is wrong: the address, or a host that is not loopback
    without --allow-remote."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        n = int(port)
    except ValueError:
        raise ValueError(f"{flag} wants [HOST:]PORT, e.g. 127.0.0.1:8765 or 8765, not {text!r}") from None
    if not 0 <= n <= 65535:
        raise ValueError(f"{flag}: port {n} is out of range (0-65535)")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        raise ValueError(f"refusing to listen on {host}: not a loopback address (pass --allow-remote to allow it)")
    return host, n


def _listeners(daemon: Daemon, http: Optional[str], args: Any) -> Optional[str]:
    """Where `--tcp` and `--http` (or config `http`) listen, and the token both carry (TCP
    clients send it, the page's cookie holds it: one secret per daemon). A problem, or None."""
    try:
        tcp = listen_address(args.tcp, "--tcp", args.allow_remote) if args.tcp else None
        web = listen_address(http, "--http", args.allow_remote) if http else None
        if web and args.stdio:
            return "--http needs a daemon others can reach: drop --stdio (`abstractruntime lsp` starts a shared one)"
        if tcp or web:
            daemon.remote_token = make_token(daemon.hub.data_dir)
    except ValueError as e:
        return str(e)
    daemon.tcp, daemon.http, daemon.allow_remote = tcp, web, bool(args.allow_remote)
    return None


def run(args: Any) -> int:
    try:
        proj = project.load(config=getattr(args, "config", None), flags=project.flags_from_args(args))
        llm = proj.model()
    except project.ConfigError as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 2
    # Every configured secret is masked in every log record, whoever writes it.
    logs.configure(proj.log_level, [str(v) for k, v in (llm or {}).get("options", {}).items() if k == "api_key"])
    try:
        if not (args.stdio or args.tcp or args.socket):
            # Checked before anything starts: a socket folder another user made is refused.
            paths.ensure_private_dir(os.path.dirname(paths.default_socket(proj.data_dir)))
        hub = Hub(
            data_dir=proj.data_dir,
            workflow_dirs=proj.workflow_dirs,
            store=proj.store,
            dsn=proj.get("dsn"),
            lease_s=proj.get("lease_s"),
            event_retention_s=proj.get("event_retention_days") * 86400,
            durable=not args.relaxed,
            workers=args.workers,
            llm=llm,
            external=proj.external,
            project=proj,
            event_log_bytes=int(proj.get("event_log_mb") * (1 << 20)),
            cache_bytes=int(proj.get("cache_mb") * (1 << 20)),
            max_subscriptions=proj.get("max_subscriptions"),
        )
    except DataFolderInUse as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a store that can't be opened as configured (a postgres store without a DSN)
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 2
    except paths.UnsafePathError as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 2
    except StorageUnavailableError as e:  # a database that cannot be reached (a wrong DSN, a server down)
        print(f"abstractruntime: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a data folder that is a file, or one we may not create
        print(f"abstractruntime: cannot use {proj.data_dir} as the data folder: {e.strerror or e}", file=sys.stderr)
        return 2
    if proj.config_file:
        log.info("project %s (config %s)", proj.root, proj.config_file)
    if llm:  # never the options: they may hold the API key
        where = llm["options"].get("base_url")
        log.info("LLM_CALL: %s model %s%s", llm["provider"], llm["model"], f" at {where}" if where else "")
        if importlib.util.find_spec("abstractcore") is None:
            log.warning(
                "a model is configured but AbstractCore is not installed: pip install 'abstractruntime[abstractcore]'"
            )
    daemon = Daemon(hub, max_frame=args.max_frame, watch=not args.no_watch, reload_grace_s=proj.get("reload_grace"))
    problem = _listeners(daemon, proj.get("http"), args)
    if problem:
        print(f"abstractruntime: {problem}", file=sys.stderr)
        hub.close()
        return 2
    _malloc.tune()
    hub.start()
    try:
        if args.stdio:
            asyncio.run(daemon.serve_stdio())
        elif daemon.tcp is not None:
            daemon.token = daemon.remote_token
            asyncio.run(daemon.serve_tcp(*daemon.tcp))
        elif args.socket:
            asyncio.run(daemon.serve_unix(os.path.abspath(args.socket), default_folder=False))
        else:
            asyncio.run(daemon.serve_unix(paths.default_socket(proj.data_dir)))
    except KeyboardInterrupt:
        hub.close()
    except CannotListen as e:
        print(f"abstractruntime: {e}", file=sys.stderr)
        hub.close()
        return 2
    return 0
