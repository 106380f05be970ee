"""The device relay end to end (issue 22): a device logs in to the submission port over
STARTTLS with AUTH (its certificate trusted as a test CA), its mail is forwarded to the allowed
recipients its body names with each attachment replaced by a link per recipient, the links
download the exact bytes until revoked or expired, and the owner hears about what was left out.
On SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import email.message
import email.policy
import re
import smtplib
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from tests.integration.test_outbox import run_jobs
from tests.integration.test_pipeline import caught
from tests.integration.test_smtp_ingress import SmtpListener, listeners
from tests.support.smtp_capture import self_signed_cert
from waypost import audit, failpoints
from waypost.apps.relay.devices import Devices, NewDevice
from waypost.apps.relay.links import DOWNLOAD_ACTION, Links
from waypost.apps.relay.spike import SpikeRule
from waypost.cli import cli
from waypost.ingress.smtp import IngressHandler, server_tls_context
from waypost.ingress.submission import SubmissionHandler, SubmissionUsers, start_submission_server, users_path
from waypost.outbound.compose import unlinked
from waypost.store.models import inbound_messages, relay_links, utcnow
from waypost.web.app import create_app

OWNER = "olga@owner.example"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x01\x02pixels" * 500
LINK = re.compile(r"https?://[^\s/]+/r/([A-Za-z0-9_-]{32})")


@dataclass
class Relay:
    runtime: Any
    listener: SmtpListener
    tls: ssl.SSLContext
    password: str
    links: Links

    def send(self, raw: bytes, *, user: str = "scanner", password: str | None = None) -> None:
        with self.listener.client() as client:
            client.ehlo("scanner.owner.example")
            client.starttls(context=self.tls)
            client.ehlo("scanner.owner.example")
            client.login(user, password or self.password)
            client.sendmail("scanner@owner.example", ["relay@waypost.test"], raw)

    def web(self) -> TestClient:
        return TestClient(create_app(self.runtime), client=("198.51.100.77", 50000))


@pytest.fixture
def relay(runtime: Any, tmp_path: Path) -> Iterator[Relay]:
    users = SubmissionUsers(users_path(runtime.settings))
    _, password = Devices(runtime.engine, users).add(NewDevice(
        "scanner", OWNER, allow=("bea@example.org", "example.net"), default_to=("bea@example.org",)))
    (tmp_path / "tls").mkdir()
    certificate = self_signed_cert(tmp_path / "tls")
    handler = SubmissionHandler(runtime.inbox.accept, runtime.router.accepts, runtime.router.is_local_domain,
                                users=users, failure_delay=0.0, login_allowed=runtime.submission_login_allowed)
    with listeners(runtime) as start:
        listener = start(handler=handler, start=start_submission_server,
                         tls_context=server_tls_context(*certificate))
        yield Relay(runtime, listener, ssl.create_default_context(cafile=str(certificate[0])), password,
                    Links(runtime.engine, runtime.blobs))


def scan(body: str, *, attachments: tuple[tuple[str, str, bytes], ...] = (
        ("scan 1.pdf", "application/pdf", PDF), ("photo.png", "image/png", PNG)), subject: str = "Scan") -> bytes:
    message = EmailMessage()
    message["From"] = "Scanner <scanner@owner.example>"
    message["To"] = "relay@waypost.test"
    message["Subject"] = subject
    message.set_content(body)
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=email.policy.SMTP)


def to(mails: list[email.message.EmailMessage], address: str) -> list[email.message.EmailMessage]:
    return [mail for mail in mails if mail["To"] == address]


def tokens_in(mail: email.message.EmailMessage) -> list[str]:
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return list(dict.fromkeys(LINK.findall(text)))


def test_a_scan_reaches_each_allowed_recipient_with_its_own_links(relay: Relay) -> None:
    relay.send(scan("To: bea@example.org, carl@example.net, eve@evil.example\nThe contract, signed."))
    run_jobs(relay.runtime)
    mails = caught(relay.runtime)
    bea, carl = to(mails, "bea@example.org"), to(mails, "carl@example.net")
    assert len(bea) == 1 and len(carl) == 1 and not to(mails, "eve@evil.example")
    for mail in (*bea, *carl):
        assert mail["From"].addresses[0].addr_spec == "relay@waypost.test"
        assert mail["From"].addresses[0].display_name == "scanner"
        assert mail["Reply-To"] == OWNER and mail["Subject"] == "Scan"
        assert not list(mail.iter_attachments()), "attachments become links"
        assert PDF[:64] not in mail.as_bytes() and b"pixels" not in mail.as_bytes()
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "The contract, signed." in text and unlinked("eve@evil.example") not in text and "scanner" in text
    bea_tokens, carl_tokens = tokens_in(bea[0]), tokens_in(carl[0])
    assert len(bea_tokens) == 2 and len(carl_tokens) == 2 and not set(bea_tokens) & set(carl_tokens)
    web = relay.web()
    for token, data in zip(bea_tokens, (PDF, PNG), strict=True):
        answer = web.get(f"/r/{token}")
        assert answer.status_code == 200 and answer.content == data
        assert answer.headers["content-disposition"].startswith("attachment;")
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert "filename*=UTF-8''scan%201.pdf" in web.get(f"/r/{bea_tokens[0]}").headers["content-disposition"]
    head = web.head(f"/r/{bea_tokens[1]}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(PNG)), "a HEAD is not a download"
    notice = to(mails, OWNER)
    assert len(notice) == 1 and unlinked("eve@evil.example") in notice[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    with relay.runtime.engine.connect() as conn:
        downloads = audit.entries(conn, action=DOWNLOAD_ACTION)
        stored = conn.execute(sa.select(relay_links.c.token_hash)).scalars().all()
    assert {entry.actor for entry in downloads} == {"bea@example.org"} and len(downloads) == 3
    assert all(entry.ip == "198.51.100.0/24" for entry in downloads)
    assert not set(bea_tokens) & set(stored), "tokens are kept hashed only"


def test_revoked_and_expired_links_answer_410_and_the_others_still_work(relay: Relay) -> None:
    relay.send(scan("To: bea@example.org, carl@example.net"))
    run_jobs(relay.runtime)
    mails = caught(relay.runtime)
    bea, carl = tokens_in(to(mails, "bea@example.org")[0]), tokens_in(to(mails, "carl@example.net")[0])
    assert relay.links.revoke(token=bea[0]) == 1
    web = relay.web()
    gone = web.get(f"/r/{bea[0]}")
    assert gone.status_code == 410 and relay.runtime.settings.operator_address in gone.text
    assert web.get(f"/r/{bea[1]}").content == PNG
    with relay.runtime.engine.begin() as conn:
        conn.execute(relay_links.update().where(relay_links.c.recipient == "carl@example.net")
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert web.get(f"/r/{carl[0]}").status_code == 410
    assert web.get(f"/r/{'A' * 32}").status_code == 404


def test_files_past_retention_are_purged_and_their_links_answer_410(relay: Relay) -> None:
    relay.send(scan("To: bea@example.org"))
    run_jobs(relay.runtime)
    token = tokens_in(to(caught(relay.runtime), "bea@example.org")[0])[0]
    assert relay.links.purge(utcnow() + timedelta(days=29)) == 0
    assert relay.links.purge(utcnow() + timedelta(days=31)) == 2
    assert relay.web().get(f"/r/{token}").status_code == 410
    assert not list(relay.runtime.blobs.iter_keys("relay/"))


@pytest.mark.parametrize(("body", "attachments", "why"), [
    ("To: eve@evil.example", (("a.pdf", "application/pdf", PDF),), "allowlist"),
    ("no recipients line", (("a.exe", "application/x-msdownload", b"MZ" * 100),), "application/x-msdownload"),
])
def test_malformed_mail_gets_one_notice_and_is_forwarded_to_nobody(relay: Relay, body: str,
                                                                   attachments: Any, why: str) -> None:
    relay.send(scan(body, attachments=attachments))
    run_jobs(relay.runtime)
    mails = caught(relay.runtime)
    notices = to(mails, OWNER)
    assert len(notices) == 1 and why in notices[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert to(mails, relay.runtime.settings.operator_delivery_address), "the operator hears too"
    assert not [m for m in mails if m["To"] not in (OWNER, relay.runtime.settings.operator_delivery_address)]
    with relay.runtime.engine.connect() as conn:
        assert not conn.execute(sa.select(relay_links)).first()


def test_a_crash_between_storing_and_sending_forwards_exactly_once(relay: Relay,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    crashes = []
    real = failpoints.hit

    def hit(name: str) -> None:
        if name == "relay.after_store" and not crashes:
            crashes.append(name)
            raise RuntimeError("crash after storing the attachments")
        real(name)

    monkeypatch.setattr(failpoints, "hit", hit)
    relay.send(scan("To: bea@example.org, carl@example.net"))
    run_jobs(relay.runtime, include_deferred=True)
    mails = caught(relay.runtime)
    assert crashes and len(to(mails, "bea@example.org")) == 1 and len(to(mails, "carl@example.net")) == 1
    with relay.runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(relay_links)).scalar() == 4


def test_mail_from_a_login_that_is_not_a_device_is_dropped_unanswered(relay: Relay) -> None:
    SubmissionUsers(users_path(relay.runtime.settings)).set_password("printer-admin", "a long password here")
    relay.send(scan("To: bea@example.org"), user="printer-admin", password="a long password here")
    run_jobs(relay.runtime)
    assert caught(relay.runtime) == []
    with relay.runtime.engine.connect() as conn:
        reason = conn.execute(sa.select(inbound_messages.c.reason)).scalar_one()
    assert "not a relay device" in reason


def test_a_device_is_managed_from_the_cli(runtime: Any, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYPOST_DATABASE__URL", database_url)
    data_dir = ["--data-dir", str(runtime.settings.data_dir)]
    run: Callable[..., Any] = lambda *args: CliRunner().invoke(cli, [*args, *data_dir])  # noqa: E731
    added = run("relay", "device", "add", "cam-1", "--owner", OWNER, "--allow", "example.org", "--link-days", "3")
    assert added.exit_code == 0, added.output
    password = re.search(r"password \(shown once\): (\S+)", added.output).group(1)  # type: ignore[union-attr]
    users = SubmissionUsers(users_path(runtime.settings))
    assert users.verify("cam-1", password)
    assert "relay+cam-1@waypost.test" in added.output
    assert run("relay", "device", "add", "cam-1", "--owner", OWNER).exit_code != 0
    assert "links:         3 days" in run("relay", "device", "show", "cam-1").output
    assert run("relay", "device", "add", "Bad Name", "--owner", OWNER).exit_code != 0
    outside = run("relay", "device", "add", "cam-2", "--owner", OWNER, "--default-to", "eve@evil.example")
    assert outside.exit_code != 0 and "eve@evil.example" in outside.output
    # past relay.max_retention_days the bucket's lifecycle rule (AWS) would delete files first
    too_long = run("relay", "device", "add", "cam-4", "--owner", OWNER, "--retention-days", "366")
    assert too_long.exit_code != 0 and "relay.max_retention_days" in too_long.output
    rotated = run("relay", "device", "rotate-password", "cam-1")
    assert rotated.exit_code == 0 and not users.verify("cam-1", password)
    assert run("relay", "device", "disable", "cam-1").exit_code == 0
    assert "disabled" in run("relay", "device", "list").output and "cam-1" in users.read()
    assert run("relay", "device", "enable", "cam-1").exit_code == 0
    assert "enabled" in run("relay", "device", "list").output
    assert run("relay", "device", "enable", "nosuch").exit_code != 0
    assert "trusted networks only" in run("relay", "device", "show", "cam-1").output
    assert "Cam@example.org" in run("relay", "device", "set-from", "cam-1", "Cam@Example.org").output
    assert "mailbox from:  Cam@example.org" in run("relay", "device", "show", "cam-1").output
    assert run("relay", "device", "set-from", "cam-1", "not an address").exit_code != 0
    with_from = run("relay", "device", "add", "cam-3", "--owner", OWNER, "--from", "cam3@example.org")
    assert with_from.exit_code == 0 and "cam3@example.org" in run("relay", "device", "show", "cam-3").output
    edited = run("relay", "device", "edit", "cam-3", "--add-allow", "@Example.net", "--default-to", "ann@example.net",
                 "--link-days", "5", "--owner", "olga@example.org")
    assert edited.exit_code == 0, edited.output
    assert "example.net" in edited.output and "links:         5 days" in edited.output
    assert users.verify("cam-3", re.search(r"password \(shown once\): (\S+)", with_from.output).group(1)), \
        "editing keeps the login"  # type: ignore[union-attr]
    refused = [run("relay", "device", "edit", "cam-3", "--remove-allow", "example.net"),  # a default needs it
               run("relay", "device", "edit", "cam-3", "--link-days", "90"),  # past its retention
               run("relay", "device", "edit", "cam-3", "--retention-days", "366"),
               run("relay", "device", "edit", "cam-3", "--remove-allow", "nope.example"),
               run("relay", "device", "edit", "cam-3"),
               run("relay", "device", "edit", "nosuch", "--max-mb", "5")]
    assert all(result.exit_code != 0 for result in refused), [result.output for result in refused]
    assert "nope.example" in refused[3].output and "nothing to change" in refused[4].output
    shown = run("relay", "device", "show", "cam-3").output
    assert "links:         5 days" in shown and "olga@example.org" in shown, "a refused edit changes nothing"
    cleared = run("relay", "device", "edit", "cam-3", "--no-default-to", "--remove-allow", "example.net")
    assert cleared.exit_code == 0 and "example.net" not in cleared.output, cleared.output
    assert run("relay", "links", "revoke").exit_code != 0, "revoke needs something to revoke"
    assert "revoked 0 link(s)" in run("relay", "links", "revoke", "--recipient", "x@example.org").output
    assert run("relay", "device", "remove", "cam-1").exit_code == 0
    assert run("relay", "device", "remove", "cam-3").exit_code == 0
    assert "no devices" in run("relay", "device", "list").output


def test_a_device_sending_far_more_than_usual_is_paused_and_its_owner_told(relay: Relay) -> None:
    app = relay.runtime.router.apps[("relay", "waypost.test")]
    app.context = dataclasses.replace(app.context, spike=SpikeRule(factor=1.5, min_per_hour=2))
    for number in range(2):
        relay.send(scan("To: bea@example.org", subject=f"Scan {number}"))
        run_jobs(relay.runtime)
    assert refused_login(relay) == 535  # paused: its login is refused from now on
    mails = caught(relay.runtime)
    assert sorted(m["Subject"] for m in to(mails, "bea@example.org")) == ["Scan 0", "Scan 1"]
    paused = [m for m in to(mails, OWNER) if m["Subject"] == "Relay scanner: paused"]
    assert len(paused) == 1 and "rotate-password" in paused[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert Devices(relay.runtime.engine, SubmissionUsers(users_path(relay.runtime.settings))).get(
        "scanner").disabled_at is not None


def refused_login(relay: Relay) -> int:
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        relay.send(scan("To: bea@example.org"))
    return refused.value.smtp_code


def test_a_disabled_device_cannot_log_in_until_enabled_with_the_same_password(relay: Relay) -> None:
    devices = Devices(relay.runtime.engine, SubmissionUsers(users_path(relay.runtime.settings)))
    devices.disable("scanner")
    assert refused_login(relay) == 535
    devices.enable("scanner")
    relay.send(scan("To: bea@example.org"))  # the password it had still works
    run_jobs(relay.runtime)
    assert len(to(caught(relay.runtime), "bea@example.org")) == 1
    with relay.runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(inbound_messages)).scalar() == 1


def test_the_swaks_example_from_the_docs_is_relayed(relay: Relay, tmp_path: Path) -> None:
    """docs/relay.md's command, with this test's host, port and password."""
    (tmp_path / "scan.pdf").write_bytes(PDF)
    done = subprocess.run([
        "swaks", "--server", "127.0.0.1", "--port", str(relay.listener.port), "--tls",
        "--auth", "LOGIN", "--auth-user", "scanner", "--auth-password", relay.password,
        "--from", "scanner@owner.example", "--to", "relay@waypost.test", "--header", "Subject: Contract scan",
        "--body", "To: bea@example.org\nThe signed contract.",
        "--attach-type", "application/pdf", "--attach", f"@{tmp_path / 'scan.pdf'}"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    run_jobs(relay.runtime)
    forwarded = to(caught(relay.runtime), "bea@example.org")
    assert len(forwarded) == 1 and forwarded[0]["Subject"] == "Contract scan"
    (token,) = tokens_in(forwarded[0])
    assert relay.web().get(f"/r/{token}").content == PDF


def test_a_device_mailbox_takes_mail_from_trusted_networks(relay: Relay) -> None:
    """The runtime trusts 127.0.0.0/8 (conftest), as an office relay in front would be."""
    public = IngressHandler(relay.runtime.inbox.accept, relay.runtime.router.accepts,
                            relay.runtime.router.is_local_domain, mail_domain="waypost.test")
    with listeners(relay.runtime) as start, start(handler=public).client() as client:
        client.sendmail("scanner@owner.example", ["relay+scanner@waypost.test"], scan("To: bea@example.org"))
        client.sendmail("scanner@owner.example", ["relay+nosuch@waypost.test"], scan("To: bea@example.org"))
    run_jobs(relay.runtime)
    assert len(to(caught(relay.runtime), "bea@example.org")) == 1
    with relay.runtime.engine.connect() as conn:
        reasons = sorted(conn.execute(sa.select(inbound_messages.c.reason)).scalars())
    assert len(reasons) == 2 and any("no device 'nosuch'" in reason for reason in reasons)
    assert any("device scanner forwarded" in reason for reason in reasons)


def test_waypost_serve_refuses_a_disabled_device_login_until_it_is_enabled(live_server: Any, tmp_path: Path) -> None:
    """The real wiring (server.py): `device disable` and `enable` take effect without a restart."""
    data_dir = tmp_path / "serve-data"
    run: Callable[..., Any] = lambda *args: CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)])  # noqa: E731
    added = run("relay", "device", "add", "cam-9", "--owner", OWNER, "--allow", "example.org")
    assert added.exit_code == 0, added.output
    password = re.search(r"password \(shown once\): (\S+)", added.output).group(1)  # type: ignore[union-attr]
    (tmp_path / "tls").mkdir()
    cert, key = self_signed_cert(tmp_path / "tls")
    server = live_server(data_dir=data_dir, WAYPOST_SMTP__SUBMISSION_PORT="0", WAYPOST_SMTP__TLS_CERT_PATH=str(cert),
                         WAYPOST_SMTP__TLS_KEY_PATH=str(key))
    [port] = [int(line.rsplit(":", 1)[1]) for line in server.lines if line.startswith("submission: ")]

    def login() -> int:
        with smtplib.SMTP(server.smtp_host, port, timeout=10) as client:
            client.starttls(context=ssl.create_default_context(cafile=str(cert)))
            client.ehlo("cam-9.example.org")
            try:
                return client.login("cam-9", password)[0]
            except smtplib.SMTPAuthenticationError as refused:
                return refused.smtp_code

    assert login() == 235
    assert run("relay", "device", "disable", "cam-9").exit_code == 0
    assert login() == 535
    assert run("relay", "device", "enable", "cam-9").exit_code == 0
    assert login() == 235
