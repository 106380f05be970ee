"""`waypost serve`: SMTP ingress, web server and (by default) a worker in one process."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from waypost import runtime as wiring
from waypost.config import Settings
from waypost.errors import WaypostError
from waypost.ingress.limits import ConnectionCeiling, SessionLimits
from waypost.ingress.smtp import IngressHandler, Spooling, server_tls_context, start_smtp_server
from waypost.ingress.spool import InflightBudget, spool_directory
from waypost.ingress.submission import SubmissionHandler, SubmissionUsers, start_submission_server, users_path
from waypost.ingress.throttle import LogThrottle

log = logging.getLogger(__name__)

# Descriptors kept out of the SMTP sessions' reach: connections accepted past the ceiling
# before they are refused and closed (a few batches of ingress.smtp.ACCEPT_BACKLOG per
# listener), the database (SQLite's file, WAL and shm per connection; PostgreSQL's pool of up
# to 15), blob files being written and read, HTTP connections, the image workers' pipes, the
# listening sockets, logs and stdio. Under a limit too small for that, sessions get a quarter.
RESERVED_FILES = 256
# sessions at once when smtp.max_connections is not set: 50 full per-client quotas
DEFAULT_MAX_CONNECTIONS = 1000
# the errors asyncio reports for an accept() it will retry a second later
# (selector_events._accept_connection): a process or system out of descriptors or memory
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ListenError(WaypostError):
    """A listener could not bind its address (in use, or not ours)."""


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: this process stops everything together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_http(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ListenError(f"cannot listen for HTTP on {host}:{port}: {_why_not(err)}; "
                          "choose another port with --http-port or http.port") from err
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def say(line: str) -> None:
    """One line to standard output in one write: `print` writes the text and the newline
    separately, and on a shared pipe a log line from another thread can land between them,
    which breaks anything reading the `smtp:` and `http:` lines."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class FileLimit:
    """RLIMIT_NOFILE after ``raise_file_limit``: ``soft`` in effect, ``was`` before."""

    soft: int
    was: int
    hard: int
    error: str | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"{_count(self.soft)} open files (could not raise to {_count(self.hard)}: {self.error})"
        if self.soft != self.was:
            return f"{_count(self.soft)} open files (raised from {_count(self.was)})"
        return f"{_count(self.soft)} open files"


def _count(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


def raise_file_limit() -> FileLimit:
    """Raise the soft limit on open files to the hard one. The usual soft default (1,024) is a
    leftover of select(), which asyncio's epoll does not need; every SMTP session holds a
    descriptor, and a process out of them stops answering on every port."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return FileLimit(soft, soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as err:  # e.g. macOS refuses an unlimited soft limit
        return FileLimit(soft, soft, hard, str(err))
    return FileLimit(hard, soft, hard)


def connection_ceiling(configured: int | None, open_files: int) -> int:
    """Sessions at once over all SMTP listeners: ``configured`` (default
    DEFAULT_MAX_CONNECTIONS), capped so that RESERVED_FILES descriptors stay free for the
    rest of the process (a quarter of the limit for sessions when it is small), which keeps
    HTTP answering."""
    if open_files == resource.RLIM_INFINITY:
        open_files = sys.maxsize
    room = max(1, open_files // 4, open_files - RESERVED_FILES)
    if configured is None:
        return min(DEFAULT_MAX_CONNECTIONS, room)
    if configured > room:
        log.warning("smtp.max_connections %d is capped at %d: the process may open %d files, and "
                    "%d of them are kept for the database, blobs, HTTP and workers",
                    configured, room, open_files, open_files - room)
    return min(configured, room)


class AcceptErrorLog:
    """An event loop's exception handler that logs accept() failures (out of descriptors or
    memory) once per interval with their count, and hands every other report on unchanged.
    asyncio reports each failure with a full traceback, once a second per listener and again
    per retry, which under a descriptor flood grew the log by megabytes a minute."""

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None,
                 *, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.previous = previous
        self.throttle = LogThrottle(interval, clock)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if not (isinstance(error, OSError) and error.errno in ACCEPT_ERRNOS
                and str(context.get("message", "")).startswith("socket.accept()")):
            self._pass_on(loop, context)
            return
        if (count := self.throttle.note()) is not None:
            log.error("cannot accept connections: %s (%d time(s) since the last report, at most one report "
                      "per %.0f s); something other than SMTP sessions holds the descriptors",
                      error.strerror or error, count, self.throttle.interval)

    def _pass_on(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


async def serve(settings: Settings, *, after_start: Callable[[wiring.Runtime, str, str], None] | None = None,
                out: Callable[[str], None] = say) -> None:
    files = raise_file_limit()  # first: everything after opens descriptors
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorLog(loop.get_exception_handler()))
    ceiling = ConnectionCeiling(connection_ceiling(settings.smtp.max_connections, files.soft))
    http_sock = bind_http(settings.http.host, settings.http.port)
    http_port = http_sock.getsockname()[1]
    http_url = f"http://{_format_host(settings.http.host)}:{http_port}"
    settings = settings.model_copy(update={"base_url": settings.base_url or http_url,
                                           "http": settings.http.model_copy(update={"port": http_port})})
    runtime = wiring.build(settings)

    from waypost.web.app import create_app  # the core never imports the web framework

    try:
        smtp, submission = await _start_smtp_listeners(settings, runtime, ceiling)
    except WaypostError:
        http_sock.close()
        runtime.close()
        raise
    smtp_port = smtp.sockets[0].getsockname()[1]
    # proxy_headers off: uvicorn would believe X-Forwarded-For from any loopback process;
    # web/proxies.py believes only web.trusted_proxies
    web = _EmbeddedUvicorn(uvicorn.Config(create_app(runtime), log_level="warning", lifespan="off",
                                          access_log=False, proxy_headers=False))
    web_task = asyncio.create_task(web.serve(sockets=[http_sock]))
    while not web.started and not web_task.done():
        await asyncio.sleep(0.01)

    stop = threading.Event()
    threads = [threading.Thread(target=runtime.worker().run, args=(stop,), name="worker", daemon=True)] \
        if settings.worker.embedded else []
    for thread in threads:
        thread.start()

    smtp_address = f"{_format_host(settings.smtp.host)}:{smtp_port}"
    out(f"limits: {files.describe()}, {ceiling.limit} SMTP sessions at once")
    out(f"smtp: {smtp_address}")
    if submission is not None:
        out(f"submission: {_format_host(settings.smtp.host)}:{submission.sockets[0].getsockname()[1]}")
    out(f"http: {http_url}")
    sys.stdout.flush()

    finished = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, finished.set)
    if after_start is not None:
        loop.run_in_executor(None, after_start, runtime, smtp_address, http_url)
    await _first_of(finished.wait(), web_task)

    log.info("stopping")
    listeners = [smtp] if submission is None else [smtp, submission]
    for listener in listeners:
        listener.close()
    web.should_exit = True
    stop.set()
    for listener in listeners:
        await listener.wait_closed()
    with contextlib.suppress(asyncio.CancelledError):
        await web_task
    for thread in threads:
        thread.join(timeout=30)
    runtime.close()


async def _start_smtp_listeners(settings: Settings, runtime: wiring.Runtime, ceiling: ConnectionCeiling
                                ) -> tuple[asyncio.Server, asyncio.Server | None]:
    """The public listener and, when smtp.submission_port is set, the submission one, sharing
    ``ceiling``."""
    limits = SessionLimits.from_settings(settings)
    tls = _tls_context(settings)
    if settings.smtp.submission_port is not None and tls is None:
        raise ListenError("smtp.submission_port needs smtp.tls_cert_path and smtp.tls_key_path: "
                          "logins are accepted only over TLS")
    router, host = runtime.router, settings.smtp.host
    common: dict[str, Any] = {"host": host, "hostname": settings.smtp_hostname,
                              "max_message_size": settings.smtp.max_message_size, "tls_context": tls,
                              "ceiling": ceiling}
    # one budget for both listeners: it bounds the message data in memory in the whole process
    spooling = Spooling(InflightBudget(settings.smtp.inflight_bytes), spool_directory(settings.data_dir))
    handler = IngressHandler(runtime.inbox.accept, router.accepts, router.is_local_domain, limits=limits,
                             mail_domain=settings.mail_domain, authenticate=runtime.authenticate,
                             authserv_id=settings.smtp_hostname, screen=runtime.screen,
                             record_refusal=runtime.inbox.refuse, spooling=spooling, trusted=runtime.trusted)
    smtp = await _bind("SMTP", host, settings.smtp.port, "--smtp-port or smtp.port",
                       start_smtp_server(handler, port=settings.smtp.port, **common))
    if settings.smtp.submission_port is None:
        return smtp, None
    try:
        users = SubmissionUsers(users_path(settings))
        if not users.read():
            log.warning("no submission users in %s; add one with `waypost submission passwd USER`", users.path)
        submitting = SubmissionHandler(runtime.inbox.accept, router.accepts, router.is_local_domain, users=users,
                                       limits=limits, mail_domain=settings.mail_domain, spooling=spooling,
                                       login_allowed=runtime.submission_login_allowed)
        submission = await _bind("submission", host, settings.smtp.submission_port, "smtp.submission_port",
                                 start_submission_server(submitting, port=settings.smtp.submission_port, **common))
    except WaypostError:
        smtp.close()
        raise
    return smtp, submission


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    cert, key = settings.smtp.tls_cert_path, settings.smtp.tls_key_path
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ListenError("set both smtp.tls_cert_path and smtp.tls_key_path to offer STARTTLS, or neither")
    try:
        return server_tls_context(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise ListenError(f"cannot load the SMTP TLS certificate {cert} with key {key}: {err}") from err


async def _bind(what: str, host: str, port: int, option: str,
                starting: Coroutine[Any, Any, asyncio.Server]) -> asyncio.Server:
    try:
        return await starting
    except OSError as err:
        raise ListenError(f"cannot listen for {what} on {host}:{port}: {_why_not(err)}; "
                          f"choose another port with {option}") from err


def _why_not(err: OSError) -> str:
    reasons = {errno.EADDRINUSE: "another program is using that port",
               errno.EADDRNOTAVAIL: "that address is not one of this machine's",
               errno.EACCES: "ports below 1024 need privileges"}
    return f"{reasons[err.errno]} ({err.strerror})" if err.errno in reasons else str(err.strerror or err)


async def _first_of(*awaitables: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        if task is not tasks[-1]:
            task.cancel()
