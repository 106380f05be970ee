"""A temporary DNS failure while authenticating mail for the journeys app is answered
``451 4.7.0`` after DATA (RFC 7489 §7), nothing is stored, and the sending server's retry is
accepted once DNS answers. Mail over a real SMTP listener, records from a real DNS server on
loopback that answers SERVFAIL for the names a test makes fail."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_pipeline import drain, photo_mail
from tests.integration.test_smtp_ingress import listeners, stored
from tests.support.dns_server import LoopbackDns
from waypost.ingress.smtp import IngressHandler
from waypost.mail.dkim_sign import DkimSigner, generate_key
from waypost.store.models import inbound_messages

SELECTOR = "s1"
KEY = f"{SELECTOR}._domainkey.example.org"
POLICY = "_dmarc.example.org"
JOURNEYS = "journeys@waypost.test"


@pytest.fixture
def signer(tmp_path: Path, dns: LoopbackDns) -> DkimSigner:
    """example.org's key in the loopback DNS; SPF for example.org authorises 127.0.0.1."""
    key = tmp_path / "example.org.pem"
    dns.add_txt(KEY, generate_key(key, "rsa"))
    dns.add_txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    return DkimSigner("example.org", SELECTOR, key.read_bytes())


@pytest.fixture
def make_runtime(make_settings: Callable[..., Any], database_url: str, dns: LoopbackDns,
                 allowing_runtime: Callable[..., Any]) -> Callable[..., Any]:
    def build(**overrides: Any) -> Any:
        # no trusted_networks unless asked: the test client on 127.0.0.1 is an ordinary sending server
        return allowing_runtime(make_settings(database={"url": database_url}, dns_nameservers=[dns.nameserver],
                                              dns_timeout=2.0, **overrides))

    return build


def send(runtime: Any, raw: bytes, to: str = JOURNEYS, mail_from: str = "bounce@attacker.test") -> tuple[int, bytes]:
    """Send over real SMTP to a listener wired like `waypost serve`: (code, text) of the reply
    to DATA. The envelope is another domain's by default, so SPF cannot align for example.org."""
    with listeners(runtime) as start:
        handler = IngressHandler(runtime.inbox.accept, runtime.router.accepts, runtime.router.is_local_domain,
                                 mail_domain="waypost.test", authenticate=runtime.authenticate,
                                 authserv_id="mx.waypost.test", screen=runtime.screen,
                                 record_refusal=runtime.inbox.refuse)
        listener = start(handler=handler, max_message_size=20 * 1024 * 1024)
        with listener.client() as client:
            client.ehlo("mail.example.org")
            try:
                client.sendmail(mail_from, [to], raw)
            except smtplib.SMTPDataError as refused:
                return refused.smtp_code, refused.smtp_error
    return 250, b""


def outcome(runtime: Any) -> tuple[str, str]:
    drain(runtime)
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(inbound_messages.c.status, inbound_messages.c.reason)).one()
    return row.status, row.reason or ""


def nothing_stored(runtime: Any) -> bool:
    return stored(runtime) == (0, 0, [])


@pytest.mark.parametrize(("failing", "policy"), [
    pytest.param(KEY, None, id="DKIM key, no DMARC record"),
    pytest.param(KEY, "v=DMARC1; p=reject", id="DKIM key under a published policy"),
    pytest.param(POLICY, None, id="DMARC record"),
])
def test_a_temporary_dns_failure_gets_451_and_the_retry_is_accepted(
        make_runtime: Callable[..., Any], dns: LoopbackDns, signer: DkimSigner, failing: str,
        policy: str | None) -> None:
    if policy is not None:
        dns.add_txt(POLICY, policy)
    runtime = make_runtime()
    raw = signer.sign(photo_mail().as_bytes())
    dns.fail(failing)

    code, text = send(runtime, raw)
    assert (code, text.split(b" ", 1)[0]) == (451, b"4.7.0")
    assert nothing_stored(runtime)

    dns.recover(failing)  # the sending server retries the same message once DNS answers
    assert send(runtime, raw)[0] == 250
    assert outcome(runtime)[0] == "processed"


@pytest.mark.parametrize("mailbox", ["postmaster", "abuse", "unsubscribe", "fbl", "bounces+x-y"])
def test_service_mailboxes_take_mail_while_dns_fails(make_runtime: Callable[..., Any], dns: LoopbackDns,
                                                     signer: DkimSigner, mailbox: str) -> None:
    runtime = make_runtime()
    dns.fail(KEY)
    dns.fail(POLICY)
    assert send(runtime, signer.sign(photo_mail().as_bytes()), to=f"{mailbox}@waypost.test")[0] == 250
    assert stored(runtime)[0] == 1


def test_trusted_networks_are_not_checked_so_never_deferred(make_runtime: Callable[..., Any], dns: LoopbackDns,
                                                           signer: DkimSigner) -> None:
    runtime = make_runtime(trusted_networks=["127.0.0.0/8"])
    dns.fail(KEY)
    dns.fail(POLICY)
    assert send(runtime, signer.sign(photo_mail().as_bytes()), mail_from="ann@example.org")[0] == 250
    assert outcome(runtime)[0] == "processed"


@pytest.mark.parametrize("case", ["no key", "signed by another domain whose key fails", "DNS answers"])
def test_what_dns_decided_is_accepted_and_judged_as_before(make_runtime: Callable[..., Any], dns: LoopbackDns,
                                                          signer: DkimSigner, tmp_path: Path, case: str) -> None:
    """Only an undecided verdict is deferred: a missing key (permerror) and a failing lookup for a
    signature that could never align are decided (refused during the session, 550 5.7.1, as the
    gate would); mail whose DNS answers gets 250 and is answered."""
    dns.add_txt(POLICY, "v=DMARC1; p=reject")
    runtime = make_runtime()
    raw = signer.sign(photo_mail().as_bytes())
    if case == "no key":
        dns.remove(KEY)
    elif case == "signed by another domain whose key fails":
        other_key = tmp_path / "attacker.pem"
        generate_key(other_key, "rsa")
        raw = DkimSigner("attacker.test", SELECTOR, other_key.read_bytes()).sign(photo_mail().as_bytes())
        dns.fail(f"{SELECTOR}._domainkey.attacker.test")

    code, text = send(runtime, raw)
    status, reason = outcome(runtime)
    if case == "DNS answers":
        assert code == 250 and status == "processed", reason
    else:
        assert (code, text.split(b" ", 1)[0]) == (550, b"5.7.1")
        assert status == "refused" and reason.startswith("not-authenticated: DMARC did not pass"), reason
