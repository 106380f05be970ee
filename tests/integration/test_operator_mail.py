"""The operator is reachable and hears what matters: operator@, postmaster@ and abuse@ are
accepted over SMTP from anyone and kept in the operator inbox (console and CLI), forwarded
DMARC-safely when operator_forward_to is set; mail to the operator has no unsubscribe link and
is never suppressed (its bounce raises an alarm); complaints, abuse@ reports, removal requests
without a token and new suppressions reach the operator in one digest per interval."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.integration.test_admin_console import Console, console, logged_in  # noqa: F401  (fixture)
from tests.integration.test_outbox import run_jobs
from tests.integration.test_pipeline import caught, drain
from tests.integration.test_smtp_ingress import listeners
from waypost.cli import cli
from waypost.config import check_operator_reachable, load_settings
from waypost.errors import ConfigError
from waypost.ingress.smtp import IngressHandler
from waypost.outbound import suppression
from waypost.outbound.compose import unlinked
from waypost.reputation.alarms import evaluate
from waypost.store.models import feedback_events, inbound_messages, outbound_messages, utcnow

STRANGER = "mallory@elsewhere.example"


@pytest.fixture
def operator_runtime(make_settings: Callable[..., Any], database_url: str,
                     allowing_runtime: Callable[..., Any]) -> Callable[..., Any]:
    def build(**settings: Any) -> Any:
        return allowing_runtime(make_settings(database={"url": database_url}, **settings))

    return build


def mail_to(rcpt: str, *, sender: str = STRANGER, subject: str = "Your server sends spam") -> bytes:
    message = EmailMessage()
    message["From"] = f"Mallory <{sender}>"
    message["To"] = rcpt
    message["Subject"] = subject
    message["Message-ID"] = f"<{rcpt.split('@')[0]}-{subject.replace(' ', '')}@elsewhere.example>"
    message.set_content("Please look at this: https://evil.example/x\nThanks.")
    return message.as_bytes()


def send(runtime: Any, rcpt: str, raw: bytes, mail_from: str = STRANGER) -> None:
    """Over real SMTP from a peer outside trusted_networks, then the worker."""
    with listeners(runtime) as start:
        handler = IngressHandler(runtime.inbox.accept, runtime.router.accepts, runtime.router.is_local_domain,
                                 mail_domain="waypost.test", authenticate=runtime.authenticate,
                                 authserv_id="mx.waypost.test")
        with start(handler=handler).client() as client:
            client.ehlo("mail.elsewhere.example")
            refused = client.sendmail(mail_from, [rcpt], raw)
            assert not refused
    drain(runtime)


def inbound_rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(inbound_messages).order_by(inbound_messages.c.received_at)))


def outbound_rows(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(outbound_messages).order_by(outbound_messages.c.id)))


@pytest.mark.parametrize(("rcpt", "mailbox"), [
    ("operator@waypost.test", "operator"), ("postmaster@waypost.test", "postmaster"),
    ("abuse@waypost.test", "abuse"), ("Abuse+urgent@WAYPOST.test", "abuse")])
def test_operator_mailboxes_take_a_strangers_mail_and_keep_it_unanswered(operator_runtime: Any, rcpt: str,
                                                                         mailbox: str) -> None:
    runtime = operator_runtime()
    assert runtime.router.accepts(rcpt) and not runtime.router.accepts("nobody@waypost.test")
    send(runtime, rcpt, mail_to(rcpt))

    (row,) = inbound_rows(runtime)
    assert row.status == "processed" and row.reason == f"kept for the operator ({mailbox}@waypost.test)"
    assert outbound_rows(runtime) == [] and caught(runtime) == []  # nobody is answered, nothing forwarded

    result = CliRunner().invoke(cli, ["inbox", "list", "--data-dir", str(runtime.settings.data_dir)],
                                env={"WAYPOST_DATABASE__URL": runtime.settings.database_url})
    assert result.exit_code == 0 and row.id in result.output and STRANGER in result.output
    shown = CliRunner().invoke(cli, ["inbox", "show", row.id, "--data-dir", str(runtime.settings.data_dir)],
                               env={"WAYPOST_DATABASE__URL": runtime.settings.database_url})
    assert shown.exit_code == 0 and "Please look at this" in shown.output


def test_kept_mail_is_forwarded_dmarc_safe_without_an_unsubscribe_link(operator_runtime: Any) -> None:
    runtime = operator_runtime(operator_forward_to="ops@harbour.example")
    raw = mail_to("abuse@waypost.test")
    send(runtime, "abuse@waypost.test", raw)
    run_jobs(runtime)

    (row,) = inbound_rows(runtime)
    assert row.reason == "kept for the operator (abuse@waypost.test); forwarded to ops@harbour.example"
    (forward,) = caught(runtime)
    assert forward["To"] == "ops@harbour.example"
    assert forward["From"].addresses[0].addr_spec == runtime.settings.reply_address  # our From: DMARC aligns
    assert forward["Reply-To"] == STRANGER
    assert forward["List-Unsubscribe"] is None and "nsubscribe" not in forward.get_body(("plain",)).get_content()
    assert "evil.example/x" not in forward.get_body(("plain",)).get_content()  # their links are not ours to send
    (original,) = list(forward.iter_attachments())
    assert original.get_filename() == "original.eml"
    assert b"Please look at this" in original.get_content()
    assert b"Subject: Your server sends spam" in original.get_content()
    (out,) = outbound_rows(runtime)
    assert out.stream == "operator" and out.idempotency_key == f"operator-forward-{row.id}"


def test_mail_to_the_operator_is_never_suppressed(operator_runtime: Any) -> None:
    runtime = operator_runtime(operator_forward_to="ops@harbour.example")
    with runtime.engine.begin() as conn:
        suppression.add(conn, "ops@harbour.example", suppression.Reason.BOUNCE, "test")
        suppression.add(conn, "ann@example.org", suppression.Reason.BOUNCE, "test")
    send(runtime, "postmaster@waypost.test", mail_to("postmaster@waypost.test"))
    run_jobs(runtime)
    (out,) = outbound_rows(runtime)
    assert out.stream == "operator" and out.state == "sent", out.last_error


def test_a_bounce_of_operator_mail_raises_an_alarm(operator_runtime: Any) -> None:
    runtime = operator_runtime()
    assert not _alarm(runtime, "operator_mail_bouncing").firing
    with runtime.engine.begin() as conn:
        conn.execute(feedback_events.insert().values(
            dedupe_key="op-bounce-1", kind="bounce", source="dsn", recipient="operator@waypost.test",
            stream="operator", bounce_type="Permanent", outcome="suppressed", received_at=utcnow(), raw="{}"))
    alarm = _alarm(runtime, "operator_mail_bouncing")
    assert alarm.firing and "bounced" in alarm.detail


def _alarm(runtime: Any, name: str) -> Any:
    return next(a for a in evaluate(runtime.snapshot(), runtime.settings.alarms) if a.name == name)


def test_the_digest_tells_the_operator_once_per_interval(operator_runtime: Any) -> None:
    runtime = operator_runtime(operator_email="ops@harbour.example", alarms={"digest_interval_minutes": 60})
    assert runtime.digest.run() == 0  # nothing happened: no mail
    send(runtime, "abuse@waypost.test", mail_to("abuse@waypost.test", subject="Phishing from your host"))
    send(runtime, "unsubscribe@waypost.test", mail_to("unsubscribe@waypost.test", subject="please remove me"))
    with runtime.engine.begin() as conn:
        conn.execute(feedback_events.insert().values(
            dedupe_key="complaint-1", kind="complaint", source="arf", recipient="ann@example.org",
            stream="journeys", feedback_type="abuse", outcome="suppressed", received_at=utcnow(), raw="{}"))
        suppression.add(conn, "bea@example.org", suppression.Reason.BOUNCE, "dsn", detail="5.1.1 no such user")
        suppression.add(conn, "cy@example.org", suppression.Reason.UNSUBSCRIBE, "one-click")  # their own stop

    assert runtime.digest.run() == 4
    run_jobs(runtime)
    (digest,) = [m for m in caught(runtime) if m["To"] == "ops@harbour.example"]
    text = " ".join(digest.get_body(("plain",)).get_content().split())  # unwrapped
    for expected in ("Complaints", "ann@example.org", "Reports to abuse@", "Phishing from your host",
                     "Removal requests", "please remove me", "New suppressions", "bea@example.org"):
        assert unlinked(expected) in text, expected  # addresses echoed so that no client links them
    assert unlinked("cy@example.org") not in text and digest["List-Unsubscribe"] is None

    with runtime.engine.begin() as conn:
        suppression.add(conn, "dee@example.org", suppression.Reason.MANUAL, "cli")
    assert runtime.digest.run() == 0  # within the interval: it waits
    assert runtime.digest.run(utcnow() + timedelta(minutes=59)) == 0
    assert runtime.digest.run(utcnow() + timedelta(minutes=61)) == 1  # an hour on: only what is new
    run_jobs(runtime)
    assert len([m for m in caught(runtime) if m["To"] == "ops@harbour.example"]) == 2


def test_the_console_inbox_lists_mail_and_notices(console: Callable[..., Console]) -> None:  # noqa: F811
    c = console()
    send(c.runtime, "abuse@waypost.test", mail_to("abuse@waypost.test", subject="Spam run"))
    logged_in(c)
    page = c.client.get("/admin/inbox")
    assert page.status_code == 200 and "Spam run" in page.text and STRANGER in page.text
    assert 'data-kind="abuse-report"' in page.text
    (row,) = inbound_rows(c.runtime)
    one = c.client.get(f"/admin/inbox/{row.id}")
    assert one.status_code == 200 and "Please look at this" in one.text
    assert c.client.get("/admin/inbox/nope").status_code == 404


@pytest.mark.parametrize("transport", ["smtp", "ses"])
def test_a_contact_that_leads_nowhere_stops_the_start_with_the_fix(tmp_path: Any, transport: str) -> None:
    public = {"outbound": {"transport": transport}, "base_url": "https://trips.example.org"}
    settings = load_settings(tmp_path, **public)
    with pytest.raises(ConfigError, match="operator_forward_to") as err:
        check_operator_reachable(settings)
    assert "operator@waypost.test" in str(err.value)
    check_operator_reachable(load_settings(tmp_path, operator_forward_to="me@harbour.example", **public))
    check_operator_reachable(load_settings(tmp_path, operator_email="me@harbour.example", **public))
    check_operator_reachable(load_settings(tmp_path))  # catcher mode: the console shows it all
    with pytest.raises(ConfigError, match="come straight back"):
        load_settings(tmp_path, operator_forward_to="ops@waypost.test")
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(tmp_path)],
                                env={"WAYPOST_OUTBOUND__TRANSPORT": transport,
                                     "WAYPOST_BASE_URL": "https://trips.example.org"})
    assert result.exit_code != 0 and "operator_forward_to" in result.output

