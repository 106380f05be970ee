"""`waypost suppression sync-ses` against a small SES v2 stub on loopback (moto lacks
ListSuppressedDestinations): botocore talks real HTTP to it through ``ses.endpoint_url``,
follows NextToken across pages, and waits out a throttling answer."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import waypost_command
from tests.support.moto_server import use_fake_aws
from waypost.config import load_settings
from waypost.feedback.ses_sync import SesSyncError, sync_from_ses
from waypost.outbound import suppression
from waypost.store import migrate
from waypost.store.db import create_engine

LISTED = [(f"user{n:04d}@example.org", "COMPLAINT" if n % 10 == 0 else "BOUNCE") for n in range(2345)]


class SesStub(ThreadingHTTPServer):
    def __init__(self, throttle_first: int = 0, fail_with: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, list[str]]] = []
        self.throttle_left = throttle_first
        self.fail_with = fail_with

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: SesStub

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.requests.append(query)
        if url.path != "/v2/email/suppression/addresses":
            return self._answer(404, {"message": "not here"}, "NotFoundException")
        if self.server.fail_with:
            return self._answer(self.server.fail_with, {"message": "denied"}, "AccessDeniedException")
        if self.server.throttle_left:
            self.server.throttle_left -= 1
            return self._answer(429, {"message": "Too many requests"}, "TooManyRequestsException")
        start = int(query.get("NextToken", ["0"])[0])
        size = int(query.get("PageSize", ["1000"])[0])
        page = LISTED[start:start + size]
        body: dict[str, Any] = {"SuppressedDestinationSummaries": [
            {"EmailAddress": address, "Reason": reason, "LastUpdateTime": 1767225600.0} for address, reason in page]}
        if start + size < len(LISTED):
            body["NextToken"] = str(start + size)
        self._answer(200, body)

    def _answer(self, status: int, body: dict[str, Any], error: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- http.server's signature
        pass


@pytest.fixture
def stub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[SesStub]:
    server = SesStub(**getattr(request, "param", {}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    use_fake_aws(monkeypatch, server.url)
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def test_the_cli_copies_every_page_and_a_rerun_adds_nothing(stub: SesStub, tmp_path: Path) -> None:
    env = {**os.environ, "WAYPOST_DATA_DIR": str(tmp_path / "data"), "WAYPOST_SES__ENDPOINT_URL": stub.url,
           "WAYPOST_FEEDBACK__SES_SYNC_PAUSE_SECONDS": "0"}

    def sync(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(waypost_command("suppression", "sync-ses", *extra), env=env, capture_output=True,
                              text=True, timeout=120)

    dry = sync("--dry-run")
    first = sync()
    again = sync()

    assert dry.returncode == 0 and "SES lists 2345 addresses: 2345 would be added" in dry.stdout
    assert first.returncode == 0 and "SES lists 2345 addresses: 2345 added" in first.stdout, first.stderr
    assert "2345 addresses: 0 added, 2345 already suppressed here" in again.stdout
    assert [q.get("NextToken") for q in stub.requests[:3]] == [None, ["1000"], ["2000"]]
    assert all(q["PageSize"] == ["1000"] for q in stub.requests)
    engine = create_engine(load_settings(tmp_path / "data").database_url)
    with engine.connect() as conn:
        complaint = suppression.lookup(conn, "user0010@example.org")
        bounce = suppression.lookup(conn, "user2344@example.org")
        assert len(suppression.entries(conn, limit=5000)) == 2345
    engine.dispose()
    assert complaint is not None and complaint.reason == suppression.Reason.COMPLAINT
    assert bounce is not None and bounce.source == "ses-sync" and "since 2026-01-01" in (bounce.detail or "")


@pytest.mark.parametrize("stub", [{"throttle_first": 2}], indirect=True)
def test_throttling_is_waited_out(stub: SesStub, tmp_path: Path) -> None:
    waits: list[float] = []
    settings = load_settings(tmp_path / "data", ses={"endpoint_url": stub.url})
    settings.data_dir.mkdir(parents=True)
    engine = create_engine(settings.database_url)
    migrate.upgrade(engine)

    result = sync_from_ses(engine, settings, wait=waits.append)
    engine.dispose()

    assert (result.pages, result.seen, result.added) == (3, 2345, 2345)
    assert waits[:2] == [1.0, 2.0]  # backing off, then one pause between each page
    assert len(stub.requests) == 5


@pytest.mark.parametrize("stub", [{"fail_with": 403}], indirect=True)
def test_a_refusal_is_a_clear_error(stub: SesStub, tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "data", ses={"endpoint_url": stub.url})
    settings.data_dir.mkdir(parents=True)
    engine = create_engine(settings.database_url)
    migrate.upgrade(engine)

    with pytest.raises(SesSyncError, match="AccessDeniedException"):
        sync_from_ses(engine, settings)
    engine.dispose()
