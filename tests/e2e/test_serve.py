"""`waypost serve` as a user runs it: a real process, SMTP over loopback, HTTP, the catcher."""

from __future__ import annotations

import email
import email.policy
import io
import re
import signal
import smtplib
import subprocess
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.conftest import (
    LiveServer,
    drain_output,
    read_addresses,
    server_env,
    start_process,
    stop_process,
    wait_until,
    waypost_command,
)
from tests.integration.test_pipeline import SHOTS, photo_mail
from waypost.apps.journeys.exif import read_metadata_bytes
from waypost.store import migrate
from waypost.store.db import create_engine
from waypost.store.models import inbound_messages, journeys, outbound_messages

LINK = re.compile(r"(https?://\S+/j/[A-Za-z0-9_-]+)")


def cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(waypost_command(*args), env=server_env(data_dir, **env), capture_output=True,
                          text=True, timeout=120)


def send(server: LiveServer, message: email.message.EmailMessage) -> None:
    with smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=30) as client:
        client.send_message(message)


def caught(data_dir: Path) -> list[email.message.EmailMessage]:
    outbox = data_dir / "outbox"
    files = sorted(outbox.glob("*.eml")) if outbox.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]


def rows(url: str, table: sa.Table) -> list[sa.Row]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(table)).all()
    finally:
        engine.dispose()


@pytest.fixture
def db_env(database_url: str) -> dict[str, str]:
    return {"WAYPOST_DATABASE__URL": database_url}


def test_photos_in_journey_link_back(live_server: Any, tmp_path: Path, database_url: str,
                                     db_env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    added = cli(data_dir, "allowlist", "add", "ann@example.org", **db_env)
    assert added.returncode == 0, added.stderr
    server = live_server(data_dir=data_dir, **db_env)
    message = photo_mail()
    send(server, message)

    reply = wait_until(lambda: caught(data_dir), timeout=30, message="the reply in the catcher")[0]
    assert reply["In-Reply-To"] == message["Message-ID"]
    url = LINK.search(reply.get_body(("plain",)).get_content()).group(1)
    assert url.startswith(server.http_url + "/j/")

    page = httpx.get(url)
    assert page.status_code == 200 and "noindex" in page.text
    assert "/static/leaflet/leaflet.js" in page.text and 'id="route-sketch"' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(server.http_url + "/static/leaflet/leaflet.js").status_code == 200

    shared = httpx.get(url + ".json")
    journey = shared.json()
    sent = [part.get_content() for part in message.iter_attachments()]
    expected = sorted((read_metadata_bytes(data) for data in sent), key=lambda m: m.taken_local)
    # in time order, named neutrally: the names they were sent with stay out of the public JSON
    assert [p["filename"] for p in journey["photos"]] == [f"Photo {n}" for n in range(1, len(SHOTS) + 1)]
    assert not any(f"{s.label}.jpg" in shared.text for s in SHOTS)
    for point, meta in zip(journey["photos"], expected, strict=True):
        assert point["latitude"] == pytest.approx(meta.latitude, abs=1e-6)
        assert point["longitude"] == pytest.approx(meta.longitude, abs=1e-6)
        assert point["local_time"] == meta.taken_local.isoformat() + "+01:00"  # Lisbon in summer
    assert [p["taken_at"] for p in journey["photos"]] == \
        [s.taken_at.astimezone(UTC).isoformat().replace("+00:00", "Z") for s in SHOTS]

    image = httpx.get(server.http_url + journey["photos"][0]["display_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert not Image.open(io.BytesIO(image.content)).getexif(), "served images carry no EXIF"
    assert httpx.get(server.http_url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.http_url + "/j/" + "A" * 32).status_code == 404


def test_refused_sender_gets_no_reply_and_the_refusal_is_recorded(live_server: Any, tmp_path: Path,
                                                                  database_url: str,
                                                                  db_env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    server = live_server(data_dir=data_dir, **db_env)
    send(server, photo_mail(sender="stranger@example.net"))  # accepted at SMTP: no 5xx to probe with
    refused = wait_until(lambda: [r for r in rows(database_url, inbound_messages) if r.status == "refused"],
                         message="the refusal to be recorded")
    assert "sender-not-allowlisted" in refused[0].reason
    assert caught(data_dir) == [] and rows(database_url, outbound_messages) == []


@pytest.mark.parametrize("failpoint", ["processor.before_commit", "outbox.after_send"])
def test_worker_killed_mid_job_replies_exactly_once(tmp_path: Path, live_server: Any, failpoint: str,
                                                    database_url: str, db_env: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    assert cli(data_dir, "allowlist", "add", "ann@example.org", **db_env).returncode == 0
    server = live_server(data_dir=data_dir, WAYPOST_WORKER__EMBEDDED="false", **db_env)
    lease = {"WAYPOST_WORKER__VISIBILITY_TIMEOUT": "1", **db_env}
    doomed = start_process(waypost_command("worker"), server_env(
        data_dir, WAYPOST_FAILPOINTS=f"{failpoint}=pause", WAYPOST_FAILPOINT_DIR=str(tmp_path), **lease))
    output: list[str] = []
    drain_output(doomed, output)
    try:
        send(server, photo_mail())
        wait_until(lambda: (tmp_path / f"{failpoint}.hit").exists(), timeout=30,
                   message=f"the worker to reach {failpoint}:\n" + "\n".join(output))
    finally:
        assert stop_process(doomed, signal.SIGKILL) == -signal.SIGKILL
    replies_before = len(caught(data_dir))
    successor = start_process(waypost_command("worker"), server_env(data_dir, **lease))
    drain_output(successor, output)
    try:
        wait_until(lambda: [r for r in rows(database_url, outbound_messages) if r.state == "sent"], timeout=30,
                   message="the restarted worker to finish the job")
    finally:
        stopped = stop_process(successor)
        assert stopped == 0, "the worker did not stop on SIGTERM:\n" + "\n".join(output[-120:])
    assert replies_before == (1 if failpoint == "outbox.after_send" else 0)
    assert len(caught(data_dir)) == 1, "exactly one reply"
    assert len(rows(database_url, journeys)) == 1
    assert [r.status for r in rows(database_url, inbound_messages)] == ["processed"]


def test_demo_prints_journey_and_catcher_urls(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    env = server_env(data_dir)
    env.pop("WAYPOST_TRUSTED_NETWORKS")  # the demo sets it itself
    process = start_process(waypost_command("serve", "--demo", "--smtp-port", "0", "--http-port", "0"), env)
    try:
        _, _, http_url, lines = read_addresses(process)  # the pump goes on filling `lines`
        wait_until(lambda: any(line.startswith("catcher: ") for line in lines) or process.poll() is not None,
                   timeout=120, message="the demo's catcher line")
        assert any(line.startswith("catcher: ") for line in lines), "server exited early:\n" + "\n".join(lines)
        lines = [line.strip() for line in lines]
        journey_url = next(line.split(" ", 1)[1] for line in lines if line.startswith("journey: "))
        catcher_url = next(line.split(" ", 1)[1] for line in lines if line.startswith("catcher: "))
        assert journey_url.startswith(http_url + "/j/") and catcher_url == http_url + "/outbox"
        journey = httpx.get(journey_url + ".json").json()
        assert journey["totals"]["on_map"] == journey["totals"]["photos"] >= 6
        assert journey["stops"] and journey["stops"][0]["place"]["country"] == "Portugal"
        times = [p["taken_at"] for p in journey["photos"]]
        assert times == sorted(times)
        assert "A day around Lisbon" in httpx.get(catcher_url).text
    finally:
        code = stop_process(process)
    assert code == 0, "a clean stop on SIGTERM"

    # a restart on the same data directory shows the journey it has instead of mailing another
    again = start_process(waypost_command("serve", "--demo", "--smtp-port", "0", "--http-port", "0"), env)
    try:
        _, _, http_url, lines = read_addresses(again)
        wait_until(lambda: any(line.startswith("catcher: ") for line in lines) or again.poll() is not None,
                   timeout=60, message="the restarted demo's catcher line")
        notice = [line for line in lines if line.startswith("demo: ")]
        assert notice and "already holds journeys" in notice[0] and "not mailed again" in notice[0], lines
        token = journey_url.rsplit("/j/", 1)[1]
        assert f"journey: {http_url}/j/{token}" in lines
        assert len(list((data_dir / "outbox").glob("*.eml"))) == 1, "one demo reply, not one per start"
    finally:
        assert stop_process(again) == 0


def test_cli_allowlist_and_help(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert "already allowed" not in cli(data_dir, "allowlist", "add", "Ann@Example.org").stdout
    assert "already allowed" in cli(data_dir, "allowlist", "add", "ann@example.org").stdout
    assert cli(data_dir, "allowlist", "add", "example.net").returncode == 0
    listed = cli(data_dir, "allowlist", "list").stdout
    assert "address  ann@example.org" in listed and "domain   example.net" in listed
    assert cli(data_dir, "allowlist", "remove", "example.net").returncode == 0
    gone = cli(data_dir, "allowlist", "remove", "example.net")
    assert gone.returncode == 1 and "not on the allowlist" in gone.stderr
    bad = cli(data_dir, "allowlist", "add", "not an address@")
    assert bad.returncode == 1 and "Error" in bad.stderr
    for command in ([], ["serve"], ["worker"], ["demo"], ["allowlist"], ["allowlist", "add"], ["db", "upgrade"],
                    ["dead-letters"], ["dead-letters", "retry"]):
        shown = cli(data_dir, *command, "--help")
        assert shown.returncode == 0 and "Usage:" in shown.stdout, command
    upgraded = cli(data_dir, "db", "upgrade")
    assert upgraded.returncode == 0 and f"at revision {migrate.head_revision()}" in upgraded.stdout


def test_cli_commands_are_quiet_on_success(tmp_path: Path) -> None:
    """A command says what it was asked for and nothing else: the first one on a new data
    directory reports the schema it created in one line, later ones print no log at all."""
    data_dir = tmp_path / "data"
    first = cli(data_dir, "allowlist", "add", "ann@example.org")
    assert first.returncode == 0 and first.stdout == "added: ann@example.org\n"
    assert first.stderr.count("\n") == 1 and "database schema upgraded from empty to" in first.stderr
    assert "alembic" not in first.stderr.lower()
    for args in (("allowlist", "list"), ("db", "upgrade"), ("outbox", "status"), ("status",)):
        again = cli(data_dir, *args)
        assert again.returncode == 0 and again.stdout, args
        assert again.stderr == "", (args, again.stderr)


def test_bad_configuration_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "waypost.toml").write_text('[smtp]\nport = "twenty-five"\n')
    result = cli(data_dir, "serve")
    assert result.returncode == 1
    assert "smtp.port" in result.stderr and "WAYPOST_SMTP__PORT" in result.stderr
    (data_dir / "waypost.toml").write_text('reply_from = "noreply@example.org"\n')
    result = cli(data_dir, "serve")
    assert result.returncode == 1 and "noreply" in result.stderr


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        for flag, other in (("--smtp-port", "--http-port"), ("--http-port", "--smtp-port")):
            result = cli(tmp_path / "data", "serve", flag, port, other, "0")
            assert result.returncode == 1, result.stderr
            assert f"127.0.0.1:{port}" in result.stderr and "another program is using that port" in result.stderr
            assert "Traceback" not in result.stderr
