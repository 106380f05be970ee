"""A loopback HTTP server answering REST-JSON requests, for stubs of AWS APIs that moto lacks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (method, path, request body) -> (HTTP status, x-amzn-ErrorType or None, JSON body)
Answer = Callable[[str, str, bytes], tuple[int, str | None, Any]]


@contextmanager
def serving_json(answer: Answer) -> Iterator[str]:
    """Serve ``answer`` on 127.0.0.1 at a free port until the block ends; yields the base URL.
    Errors carry ``x-amzn-ErrorType``, as the REST-JSON protocol has them."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, error, body = answer(self.command, self.path, self.rfile.read(length))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if error:
                self.send_header("x-amzn-ErrorType", error)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _answer  # noqa: N815 (http.server's names)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
