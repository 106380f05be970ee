"""`waypost serve`: SMTP ingress, web server and (by default) a worker in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

import uvicorn

from waypost import runtime as wiring
from waypost.config import Settings
from waypost.errors import WaypostError
from waypost.ingress.smtp import IngressHandler, start_smtp_server

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
        raise ListenError(f"cannot listen for HTTP on {host}:{port}: {err.strerror}; "
                          "choose another port with --http-port or http.port") from err
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(settings: Settings, *, after_start: Callable[[wiring.Runtime, str, str], None] | None = None,
                out: Callable[[str], None] = print) -> None:
    http_sock = bind_http(settings.http.host, settings.http.port)
    http_port = http_sock.getsockname()[1]
    http_url = f"http://{_format_host(settings.http.host)}:{http_port}"
    settings = settings.model_copy(update={"base_url": settings.base_url or http_url,
                                           "http": settings.http.model_copy(update={"port": http_port})})
    runtime = wiring.build(settings)

    from waypost.web.app import create_app  # the core never imports the web framework

    handler = IngressHandler(runtime.inbox.accept, runtime.router.accepts, runtime.router.is_local_domain)
    try:
        smtp = await start_smtp_server(handler, host=settings.smtp.host, port=settings.smtp.port,
                                       hostname=settings.smtp_hostname,
                                       max_message_size=settings.smtp.max_message_size)
    except OSError as err:
        http_sock.close()
        runtime.close()
        raise ListenError(f"cannot listen for SMTP on {settings.smtp.host}:{settings.smtp.port}: "
                          f"{err.strerror}; choose another port with --smtp-port or smtp.port") from err
    smtp_port = smtp.sockets[0].getsockname()[1]
    web = _EmbeddedUvicorn(uvicorn.Config(create_app(runtime), log_level="warning", lifespan="off",
                                          access_log=False))
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
    smtp.close()
    web.should_exit = True
    stop.set()
    await smtp.wait_closed()
    with contextlib.suppress(asyncio.CancelledError):
        await web_task
    for thread in threads:
        thread.join(timeout=30)
    runtime.close()


async def _first_of(*awaitables) -> None:  # type: ignore[no-untyped-def]
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        if task is not tasks[-1]:
            task.cancel()
