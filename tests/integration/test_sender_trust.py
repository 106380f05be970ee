"""Sender trust end to end: mail arrives over SMTP from a peer outside trusted_networks, is
checked against SPF, DKIM and DMARC records served by a real DNS server on loopback, and the
gate answers only an allowlisted sender whose mail authenticates for its From domain. Mail for
journeys that does not is refused during the session (550 5.7.1), and only its metadata kept."""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from tests.integration.test_pipeline import caught, drain, photo_mail
from tests.integration.test_smtp_ingress import listeners
from tests.support.dns_server import LoopbackDns
from waypost import runtime as wiring
from waypost.ingress.smtp import IngressHandler
from waypost.mail.auth import AuthVerdict
from waypost.mail.dkim_sign import DkimSigner, generate_key, to_crlf
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.models import inbound_messages, outbound_messages

SELECTOR = "s1"


@pytest.fixture
def signers(tmp_path: Path, dns: LoopbackDns) -> dict[str, DkimSigner]:
    """Keys for example.org (the sender) and attacker.test, published in the loopback DNS."""
    made = {}
    for domain in ("example.org", "attacker.test"):
        key = tmp_path / f"{domain}.pem"
        dns.add_txt(f"{SELECTOR}._domainkey.{domain}", generate_key(key, "rsa"))
        made[domain] = DkimSigner(domain, SELECTOR, key.read_bytes())
    dns.add_txt("example.org", "v=spf1 ip4:127.0.0.1 -all")
    dns.add_txt("attacker.test", "v=spf1 ip4:127.0.0.1 -all")
    return made


@pytest.fixture
def trust_runtime(make_settings: Callable[..., Any], dns: LoopbackDns,
                  allowing_runtime: Callable[..., Any]) -> Callable[..., Any]:
    def build(**gate: Any) -> Any:
        # no trusted_networks: the test client on 127.0.0.1 is an ordinary sending server
        return allowing_runtime(make_settings(dns_nameservers=[dns.nameserver], gate=gate))

    return build


def submitted(runtime: Any, raw: bytes, mail_from: str = "ann@example.org",
              to: str = "journeys@waypost.test") -> tuple[bytes, str]:
    """Send over real SMTP to a listener wired like `waypost serve`; the reply to DATA (code and
    enhanced status) and the id of the message's row (refused mail gets one too)."""
    with listeners(runtime) as start:
        handler = IngressHandler(runtime.inbox.accept, runtime.router.accepts, runtime.router.is_local_domain,
                                 mail_domain="waypost.test", authenticate=runtime.authenticate,
                                 authserv_id="mx.waypost.test", screen=runtime.screen,
                                 record_refusal=runtime.inbox.refuse)
        listener = start(handler=handler, max_message_size=20 * 1024 * 1024)
        with listener.client() as client:
            client.ehlo("mail.example.org")
            # smtplib sends bytes as they are: give it CRLF lines, as a mail server would
            try:
                client.sendmail(mail_from, [to], raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
                reply = b"250 2.0.0"
            except smtplib.SMTPDataError as refused:
                reply = b"%d %s" % (refused.smtp_code, refused.smtp_error.split(b" ", 1)[0])
    drain(runtime)
    with runtime.engine.connect() as conn:
        return reply, conn.execute(sa.select(inbound_messages.c.id).order_by(inbound_messages.c.received_at.desc())
                                   ).scalars().first()


def submit(runtime: Any, raw: bytes, mail_from: str = "ann@example.org") -> str:
    """``submitted`` for mail that must be accepted: the message id."""
    reply, message_id = submitted(runtime, raw, mail_from)
    assert reply == b"250 2.0.0", reply
    return message_id


def refused_at_smtp(runtime: Any, raw: bytes, mail_from: str = "ann@example.org") -> str:
    """``submitted`` for mail that must be refused while the sender waits: the id of the row
    that records it, which holds no raw bytes."""
    reply, message_id = submitted(runtime, raw, mail_from)
    assert reply == b"550 5.7.1", reply
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(inbound_messages).where(inbound_messages.c.id == message_id)).one()
    assert row.blob_key == "" and row.raw_deleted_at is not None and row.subject is None
    assert row.reason.endswith("(refused during the SMTP session)"), row.reason
    with runtime.engine.connect() as conn:
        kept = conn.execute(sa.select(inbound_messages.c.blob_key).where(
            inbound_messages.c.blob_key != "", inbound_messages.c.raw_deleted_at.is_(None))).scalars().all()
    assert sorted(key for key, _ in runtime.blobs.iter_keys("inbound")) == sorted(kept)  # no bytes of it
    return message_id


def outcome(runtime: Any, message_id: str) -> tuple[str, str, AuthVerdict | None, bytes]:
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(inbound_messages).where(inbound_messages.c.id == message_id)).one()
    stored = runtime.blobs.get(row.blob_key) if row.raw_deleted_at is None else b""
    return row.status, row.reason or "", AuthVerdict.from_json(row.auth) if row.auth else None, stored


def signed(signer: DkimSigner, message: EmailMessage | None = None) -> bytes:
    return signer.sign((message or photo_mail()).as_bytes())


def replies(runtime: Any) -> int:
    with runtime.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(outbound_messages)).scalar_one()


def test_an_aligned_pass_is_answered_and_our_verdict_is_stamped(trust_runtime: Any, dns: LoopbackDns,
                                                                signers: dict[str, DkimSigner]) -> None:
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    runtime = trust_runtime()

    message_id = submit(runtime, signed(signers["example.org"]))

    status, reason, verdict, _ = outcome(runtime, message_id)
    assert status == "processed", reason
    assert verdict is not None and verdict.dmarc == "pass" and verdict.dkim_aligned_pass and verdict.spf == "pass"
    assert len(caught(runtime)) == 1


def test_the_stored_message_carries_our_authentication_results_on_top(
        make_settings: Callable[..., Any], dns: LoopbackDns, signers: dict[str, DkimSigner]) -> None:
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    runtime = wiring.build(make_settings(dns_nameservers=[dns.nameserver], journeys={"keep_originals_days": 1}))
    try:
        forged = b"Authentication-Results: mx.waypost.test; dmarc=pass header.from=example.org\r\n"
        # unsigned, and the envelope is another domain's: nothing aligns with example.org
        # to a service mailbox, which keeps mail from anyone: journeys would refuse it at once
        reply, message_id = submitted(runtime, forged + photo_mail().as_bytes(), mail_from="bounce@attacker.test",
                                      to="postmaster@waypost.test")
        assert reply == b"250 2.0.0"
        _, _, verdict, stored = outcome(runtime, message_id)
        first = stored.split(b"\r\n", 1)[0]
        assert first.startswith(b"Authentication-Results: mx.waypost.test; spf=pass smtp.mailfrom=attacker.test")
        assert b"dkim=none" in first and b"dmarc=fail" in first
        assert verdict is not None and verdict.dmarc == "fail"
    finally:
        runtime.close()


@pytest.mark.parametrize("case", ["body altered after signing", "spoofed From signed by another domain",
                                  "forged Authentication-Results on unsigned mail", "SPF fail from a foreign IP"])
def test_mail_that_does_not_authenticate_is_refused_without_a_reply(trust_runtime: Any, dns: LoopbackDns,
                                                                    signers: dict[str, DkimSigner],
                                                                    case: str) -> None:
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    runtime = trust_runtime()
    if case == "body altered after signing":
        raw = signed(signers["example.org"]).replace(b"photos attached", b"photos attacked")
    elif case == "spoofed From signed by another domain":
        raw = signed(signers["attacker.test"])  # From: ann@example.org, d=attacker.test
    elif case == "forged Authentication-Results on unsigned mail":
        raw = (b"Authentication-Results: mx.waypost.test; dkim=pass header.d=example.org; dmarc=pass\r\n"
               + photo_mail().as_bytes())
    else:
        dns.remove("example.org")
        dns.add_txt("example.org", "v=spf1 ip4:192.0.2.1 -all")  # 127.0.0.1 is a foreign IP now
        raw = photo_mail().as_bytes()
    # the envelope of the first three is another domain's, so SPF cannot align for example.org
    mail_from = "ann@example.org" if case.startswith("SPF") else "bounce@attacker.test"

    message_id = refused_at_smtp(runtime, raw, mail_from=mail_from)

    status, reason, verdict, _ = outcome(runtime, message_id)
    assert status == "refused" and reason.startswith("not-authenticated: DMARC did not pass"), reason
    assert verdict is not None and verdict.dmarc == "fail"
    assert replies(runtime) == 0


def signed_with_body_length(key_file: Path, message: EmailMessage) -> bytes:
    """Signed by example.org with l= over the whole body, as some signers still do."""
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    raw = to_crlf(message.as_bytes())
    return dkim.sign(raw, SELECTOR.encode(), b"example.org", pkcs1, canonicalize=(b"relaxed", b"relaxed"),
                     length=True) + raw


def test_content_appended_after_a_body_length_limit_is_refused(trust_runtime: Any, dns: LoopbackDns, tmp_path: Path,
                                                               signers: dict[str, DkimSigner]) -> None:
    """A replay of ann's l= signed mail from another envelope: untouched it still authenticates,
    with content appended after l= it does not (RFC 6376 §8.2)."""
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    runtime = trust_runtime()
    intact = signed_with_body_length(tmp_path / "example.org.pem", photo_mail(subject="Intact"))
    status, reason, _, _ = outcome(runtime, submit(runtime, intact, mail_from="bounce@attacker.test"))
    assert status == "processed", reason

    appended = signed_with_body_length(tmp_path / "example.org.pem", photo_mail(subject="Appended"))
    message_id = refused_at_smtp(runtime, appended + b"Pay at https://attacker.test/invoice\r\n",
                                 mail_from="bounce@attacker.test")
    status, reason, verdict, _ = outcome(runtime, message_id)
    assert status == "refused" and reason.startswith("not-authenticated: DMARC did not pass"), reason
    assert verdict is not None and [s.result for s in verdict.dkim] == ["policy"]
    assert replies(runtime) == 1


@pytest.mark.parametrize(("policy", "expected"), [("p=none", "refused"), ("p=reject", "refused"),
                                                   ("p=quarantine", "refused")])
def test_dmarc_fail_is_refused_whatever_the_published_policy(trust_runtime: Any, dns: LoopbackDns,
                                                             signers: dict[str, DkimSigner], policy: str,
                                                             expected: str) -> None:
    """p=none asks receivers not to act on failures; Waypost acts anyway: a failure means the
    mail may not come from the person on the allowlist."""
    dns.add_txt("_dmarc.example.org", f"v=DMARC1; {policy}")
    runtime = trust_runtime()
    status, _, verdict, _ = outcome(runtime, refused_at_smtp(runtime, signed(signers["attacker.test"]),
                                                             mail_from="bounce@attacker.test"))
    assert status == expected and verdict is not None and verdict.dmarc_policy == policy.split("=")[1]


def test_relaxed_and_strict_subdomain_alignment(trust_runtime: Any, dns: LoopbackDns, tmp_path: Path,
                                                signers: dict[str, DkimSigner]) -> None:
    key = tmp_path / "mail.pem"
    dns.add_txt(f"{SELECTOR}._domainkey.mail.example.org", generate_key(key, "rsa"))
    subdomain = DkimSigner("mail.example.org", SELECTOR, key.read_bytes())
    dns.remove("example.org")
    dns.add_txt("example.org", "v=spf1 -all")  # SPF cannot help: only DKIM can align

    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")  # adkim=r by default
    runtime = trust_runtime()
    assert outcome(runtime, submit(runtime, signed(subdomain)))[0] == "processed"

    dns.remove("_dmarc.example.org")
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; adkim=s")
    status, reason, _, _ = outcome(runtime, refused_at_smtp(runtime, signed(subdomain, photo_mail(subject="Strict"))))
    assert status == "refused" and "DMARC did not pass" in reason


def test_a_domain_without_dmarc_needs_an_aligned_dkim_pass(trust_runtime: Any, dns: LoopbackDns,
                                                          signers: dict[str, DkimSigner]) -> None:
    runtime = trust_runtime()
    # SPF passes and aligns, but without a DMARC record only a DKIM signature is enough (setting)
    status, reason, verdict, _ = outcome(runtime, refused_at_smtp(runtime, photo_mail().as_bytes()))
    assert status == "refused" and "publishes no DMARC record" in reason
    assert verdict is not None and verdict.dmarc == "none" and verdict.spf == "pass"

    assert outcome(runtime, submit(runtime, signed(signers["example.org"], photo_mail(subject="Signed"))))[0] \
        == "processed"

    lenient = trust_runtime(require_dkim_without_dmarc=False)
    assert outcome(lenient, submit(lenient, photo_mail(subject="SPF only").as_bytes()))[0] == "processed"


def test_mail_never_checked_is_refused_unless_from_a_trusted_network(trust_runtime: Any) -> None:
    runtime = trust_runtime()
    message_id = runtime.inbox.accept(ReceivedMail(photo_mail().as_bytes(), "ann@example.org",
                                                   ("journeys@waypost.test",), "192.0.2.7"))
    drain(runtime)
    status, reason, _, _ = outcome(runtime, message_id)
    assert status == "refused" and reason.startswith("not-authenticated: the mail's authentication was never")


def test_a_sender_over_the_limit_gets_one_notice_per_window(trust_runtime: Any, dns: LoopbackDns,
                                                           signers: dict[str, DkimSigner]) -> None:
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    runtime = trust_runtime(sender_max_messages=2, sender_window_minutes=60)
    ids = [submit(runtime, signed(signers["example.org"], photo_mail(subject=f"Trip {n}"))) for n in range(5)]

    statuses = [outcome(runtime, message_id)[0] for message_id in ids]
    assert statuses == ["processed", "processed", "refused", "refused", "refused"]
    assert outcome(runtime, ids[2])[1].startswith("sender-rate-limited")
    subjects = [str(m["Subject"]) for m in caught(runtime)]
    assert sum(subject.startswith("Not processed") for subject in subjects) == 1  # one notice, not three
    assert len(subjects) == 3


def test_verdicts_from_ses_feed_the_same_gate(trust_runtime: Any) -> None:
    runtime = trust_runtime()
    receipt = {key: {"status": "PASS"} for key in ("spfVerdict", "dkimVerdict", "dmarcVerdict", "spamVerdict",
                                                   "virusVerdict")}
    from waypost.mail.auth import from_ses_receipt

    good = runtime.inbox.accept(ReceivedMail(photo_mail().as_bytes(), "ann@example.org", ("journeys@waypost.test",),
                                             None, ingress="ses", auth=from_ses_receipt(receipt, "example.org")))
    virus = runtime.inbox.accept(ReceivedMail(
        photo_mail(subject="Other").as_bytes(), "ann@example.org", ("journeys@waypost.test",), None, ingress="ses",
        auth=from_ses_receipt({**receipt, "virusVerdict": {"status": "FAIL"}}, "example.org")))
    drain(runtime)

    assert outcome(runtime, good)[0] == "processed"
    assert outcome(runtime, virus)[:2] == ("refused", "spam-or-virus: SES verdicts: spam pass, virus fail")


def test_stamped_header_parses(trust_runtime: Any) -> None:
    verdict = AuthVerdict.from_json({
        "version": 1, "spf": "pass", "spf_domain": "example.org", "spf_scope": "mailfrom", "spf_aligned": True,
        "dkim": [], "dmarc": "none", "dmarc_policy": None, "dmarc_record_found": False,
        "from_domain": "example.org", "source": "smtp", "detail": "", "spam": None, "virus": None})
    header = email.message_from_bytes(f"Authentication-Results: {verdict.to_header('mx')}\r\n\r\n".encode(),
                                      policy=email.policy.default)["Authentication-Results"]
    assert str(header).startswith("mx; spf=pass")
