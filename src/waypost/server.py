"""`waypost serve`: SMTP ingress, web server and (by default) a worker in one process."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import uvicorn

from waypost import runtime as wiring
from waypost.config import Settings
from waypost.errors import WaypostError
from waypost.ingress.smtp import IngressHandler, SessionLimits, server_tls_context, start_smtp_server
from waypost.ingress.submission import SubmissionHandler, SubmissionUsers, start_submission_server, users_path

log = logging.getLogger(__name__)


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


async def serve(settings: Settings, *, after_start: Callable[[wiring.Runtime, str, str], None] | None = None,
                out: Callable[[str], None] = say) -> None:
    http_sock = bind_http(settings.http.host, settings.http.port)
    http_port = http_sock.getsockname()[1]
    http_url = f"http://{_format_host(settings.http.host)}:{http_port}"
    settings = settings.model_copy(update={"base_url": settings.base_url or http_url,
                                           "http": settings.http.model_copy(update={"port": http_port})})
    runtime = wiring.build(settings)

    from waypost.web.app import create_app  # the core never imports the web framework

    try:
        smtp, submission = await _start_smtp_listeners(settings, runtime)
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
    out(f"smtp: {smtp_address}")
    if submission is not None:
        out(f"submission: {_format_host(settings.smtp.host)}:{submission.sockets[0].getsockname()[1]}")
    out(f"http: {http_url}")
    sys.stdout.flush()

    finished = asyncio.Event()
    loop = asyncio.get_running_loop()
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


async def _start_smtp_listeners(settings: Settings, runtime: wiring.Runtime
                                ) -> tuple[asyncio.Server, asyncio.Server | None]:
    """The public listener and, when smtp.submission_port is set, the submission one."""
    limits = SessionLimits.from_settings(settings)
    tls = _tls_context(settings)
    if settings.smtp.submission_port is not None and tls is None:
        raise ListenError("smtp.submission_port needs smtp.tls_cert_path and smtp.tls_key_path: "
                          "logins are accepted only over TLS")
    router, host = runtime.router, settings.smtp.host
    common: dict[str, Any] = {"host": host, "hostname": settings.smtp_hostname,
                              "max_message_size": settings.smtp.max_message_size, "tls_context": tls}
    handler = IngressHandler(runtime.inbox.accept, router.accepts, router.is_local_domain, limits=limits,
                             mail_domain=settings.mail_domain, authenticate=runtime.authenticate,
                             authserv_id=settings.smtp_hostname)
    smtp = await _bind("SMTP", host, settings.smtp.port, "--smtp-port or smtp.port",
                       start_smtp_server(handler, port=settings.smtp.port, **common))
    if settings.smtp.submission_port is None:
        return smtp, None
    try:
        users = SubmissionUsers(users_path(settings))
        if not users.read():
            log.warning("no submission users in %s; add one with `waypost submission passwd USER`", users.path)
        submitting = SubmissionHandler(runtime.inbox.accept, router.accepts, router.is_local_domain, users=users,
                                       limits=limits, mail_domain=settings.mail_domain)
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
