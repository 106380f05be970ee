"""moto in server mode on loopback: boto3 talks real HTTP to it, exactly as in production,
with only ``endpoint_url`` different.

``running_moto_server()`` binds 127.0.0.1 port 0 in the caller's thread, so a bind failure
raises at once (moto's ``ThreadedMotoServer.start()`` would wait for its thread without a
deadline), serves from a thread, and yields the endpoint URL once moto answers.
``use_fake_aws(monkeypatch, endpoint)`` points every boto3 client at it with dummy
credentials, so no request can reach real AWS.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

REGION = "eu-west-1"
_HTTP_TIMEOUT = 10.0
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


@contextmanager
def running_moto_server(*, ready_timeout: float = 15.0) -> Iterator[str]:
    """Start moto on a free loopback port; yield ``http://127.0.0.1:<port>``; stop it."""
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="moto-server", daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _wait_until_answering(endpoint, ready_timeout)
        yield endpoint
    finally:
        server.shutdown()  # returns once serve_forever has left its loop
        thread.join(timeout=_HTTP_TIMEOUT)
        server.server_close()
        if thread.is_alive():
            raise RuntimeError("moto server thread did not stop")


def use_fake_aws(monkeypatch: pytest.MonkeyPatch, endpoint: str, region: str = REGION) -> None:
    """Dummy credentials, no profiles, no instance metadata, every endpoint on loopback."""
    assert endpoint.startswith(("http://127.0.0.1:", "http://localhost:")), endpoint
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # a client built without endpoint_url lands here too
    for name in ("NO_PROXY", "no_proxy"):  # botocore honours proxy variables; loopback goes direct
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def reset(endpoint: str) -> None:
    """Forget every resource and sent message (moto accepts only POST here)."""
    with _LOOPBACK.open(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"),
                        timeout=_HTTP_TIMEOUT) as response:
        response.read()


def sent_raw_messages(endpoint: str) -> list[dict[str, Any]]:
    """Raw sends as moto stored them: dicts with id, source, destinations, raw_data (str)."""
    with _LOOPBACK.open(f"{endpoint}/moto-api/data.json", timeout=_HTTP_TIMEOUT) as response:
        data = json.load(response)
    return list(data.get("ses", {}).get("RawMessage", []))


def _wait_until_answering(endpoint: str, timeout: float) -> None:
    """The socket listens from ``make_server`` on, so one request waits in the kernel's queue
    until the serving thread takes it: no polling, just a deadline."""
    try:
        with _LOOPBACK.open(f"{endpoint}/moto-api/data.json", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(f"moto at {endpoint} did not answer within {timeout}s") from err
