"""Mail written by programs is never answered (RFC 3834): the signs mail/robots.py reads, over the
shared corpus's real out-of-office answers and bounces, our generated auto-replies, and a table of
single headers; and the gate refusing them whoever sent them, trusted networks included."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest

from tests.conftest import corpus_dir
from tests.support.report_samples import auto_reply_samples, bounce_samples, dsn_samples
from waypost.mail.parse import parse_message
from waypost.mail.robots import RobotInput, RobotKind, RobotSign, robot_sign
from waypost.pipeline.gate import Gate, GateInput, Refusal

# a person forwarding a bounce to a friend: a person wrote it, so it is answered like any mail
PERSON_FORWARDING_A_BOUNCE = {"sisimai_lhost-sendmail-14.eml"}
OUT_OF_OFFICE = ["dsn/sisimai_rfc3834-01.eml", "bounces/sisimai_rfc3834-03.eml", "bounces/sisimai_rfc3834-04.eml",
                 "bounces/sisimai_rfc3834-05.eml"]


def sign_of(raw: bytes, envelope_sender: str | None = None) -> RobotSign | None:
    message = parse_message(raw)
    return robot_sign(RobotInput(envelope_sender, message.from_address, dict(message.robot_headers)))


def _return_path(raw: bytes) -> str | None:
    """The envelope sender a stored message recorded (the only trace of it in a file), or None."""
    found = re.search(rb"^Return-Path:\s*<([^>]*)>", raw, re.IGNORECASE | re.MULTILINE)
    return found.group(1).decode("ascii", "replace") if found else None


@pytest.mark.corpus
@pytest.mark.parametrize("name", OUT_OF_OFFICE)
def test_real_out_of_office_answers_are_robots_by_their_headers_alone(name: str) -> None:
    # no envelope: the headers must be enough (an allowed person's vacation answer from a trusted relay)
    sign = sign_of((corpus_dir() / name).read_bytes())
    assert sign is not None and sign.kind in (RobotKind.AUTO_SUBMITTED, RobotKind.AUTO_REPLY), sign


@pytest.mark.corpus
def test_every_real_bounce_is_a_robot_even_without_its_envelope() -> None:
    """All 336 bounces and 57 DSNs of the corpus, read with no envelope sender at all (a relay
    that rewrote it): every one but a person's forward is recognised by its headers."""
    corpus = corpus_dir()
    files = [corpus / "bounces" / json.loads(line)["file"].split("/", 1)[1]
             for line in (corpus / "bounces" / "manifest.jsonl").read_text().splitlines() if line.strip()]
    files += sorted((corpus / "dsn").glob("*.*"))
    assert len(files) == 336 + 57
    missed = [path.name for path in files if sign_of(path.read_bytes()) is None]
    assert set(missed) == PERSON_FORWARDING_A_BOUNCE


@pytest.mark.corpus
def test_the_envelope_of_a_real_bounce_alone_is_enough() -> None:
    for path in sorted((corpus_dir() / "bounces").glob("*.eml")):
        raw = path.read_bytes()
        if _return_path(raw) == "":
            headerless = b"From: someone@example.org\r\nSubject: hello\r\n\r\nhi\r\n"
            assert sign_of(headerless, envelope_sender="") == RobotSign(
                RobotKind.NULL_SENDER, "the envelope sender is <> (a bounce or notification)")
            return
    raise AssertionError("no bounce in the corpus records a null Return-Path")


@pytest.mark.parametrize("sample", [*auto_reply_samples(), *dsn_samples(), *bounce_samples()], ids=lambda s: s.name)
def test_generated_auto_replies_and_bounces_are_robots(sample: object) -> None:
    assert sign_of(sample.raw) is not None  # type: ignore[attr-defined]


PERSON = "From: Ann <ann@example.org>\r\nTo: journeys@waypost.test\r\nSubject: Lisbon\r\n"


@pytest.mark.parametrize(("extra", "envelope", "kind"), [
    ("", "", RobotKind.NULL_SENDER),
    ("", "<>", RobotKind.NULL_SENDER),
    ("Auto-Submitted: auto-replied\r\n", None, RobotKind.AUTO_SUBMITTED),
    ("Auto-Submitted: auto-generated (vacation)\r\n", None, RobotKind.AUTO_SUBMITTED),
    ("Auto-Submitted: Auto-Notified\r\n", None, RobotKind.AUTO_SUBMITTED),
    ("Precedence: bulk\r\n", None, RobotKind.BULK),
    ("Precedence: JUNK\r\n", None, RobotKind.BULK),
    ("Precedence: list\r\n", None, RobotKind.BULK),
    ("List-Id: Walkers <walkers.lists.example.org>\r\n", None, RobotKind.LIST),
    ("List-Unsubscribe: <mailto:leave@lists.example.org>\r\n", None, RobotKind.LIST),
    ("X-Autoreply: yes\r\n", None, RobotKind.AUTO_REPLY),
    ("X-Autorespond: Away\r\n", None, RobotKind.AUTO_REPLY),
    ("X-Auto-Response-Suppress: All\r\n", None, RobotKind.AUTO_REPLY),
    ("Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n", None, RobotKind.REPORT),
    ("", "MAILER-DAEMON@mx.example.org", RobotKind.SYSTEM_SENDER),
    ("", "owner-walkers@lists.example.org", RobotKind.SYSTEM_SENDER),
    ("", "walkers-request@lists.example.org", RobotKind.SYSTEM_SENDER),
], ids=lambda value: str(value)[:40])
def test_each_sign_alone_makes_a_robot(extra: str, envelope: str | None, kind: RobotKind) -> None:
    sign = sign_of(f"{PERSON}{extra}\r\nphotos\r\n".encode(), envelope)
    assert sign is not None and sign.kind == kind


@pytest.mark.parametrize("from_header", ["Mail Delivery System <MAILER-DAEMON@mx.example.org>",
                                         "postmaster@example.org", "MAILER-DAEMON <>",
                                         "Mail Delivery Subsystem <MAILER-DAEMON>", "noreply@shop.example"])
def test_program_senders_in_the_from_header(from_header: str) -> None:
    raw = f"From: {from_header}\r\nTo: journeys@waypost.test\r\nSubject: x\r\n\r\nx\r\n".encode()
    assert sign_of(raw, "ann@example.org") is not None


@pytest.mark.parametrize("extra", ["", "Auto-Submitted: no\r\n", "Auto-Submitted: No (a person)\r\n",
                                   "Precedence: first-class\r\n", "Content-Type: text/plain\r\n"])
def test_a_persons_mail_is_no_robot(extra: str) -> None:
    assert sign_of(f"{PERSON}{extra}\r\nphotos\r\n".encode(), "ann@example.org") is None


def test_mail_from_our_own_addresses_is_a_loop() -> None:
    raw = b"From: Waypost journeys <journeys@waypost.test>\r\nTo: journeys@waypost.test\r\nSubject: x\r\n\r\nx\r\n"
    message = parse_message(raw)
    sign = robot_sign(RobotInput("bounces+1-abc@waypost.test", message.from_address, dict(message.robot_headers)),
                      lambda address: address.endswith("@waypost.test"))
    assert sign is not None and sign.kind == RobotKind.OWN_ADDRESS


class _Everyone:
    def allows(self, address: str) -> bool:
        return True


@pytest.mark.parametrize("peer", ["127.0.0.1", "203.0.113.9"])
def test_the_gate_refuses_robots_from_trusted_networks_too(peer: str) -> None:
    gate = Gate(_Everyone(), [ipaddress.ip_network("127.0.0.0/8")])  # type: ignore[arg-type]
    raw = f"{PERSON}Auto-Submitted: auto-replied\r\n\r\nAway\r\n".encode()
    message = parse_message(raw)
    verdict = gate.decide(GateInput(message.from_address, peer, "smtp", None, envelope_sender="ann@example.org",
                                    robot_headers=message.robot_headers))
    assert not verdict.allowed and verdict.reason == Refusal.AUTOMATIC
    assert "Auto-Submitted: auto-replied" in verdict.detail
    person = parse_message(f"{PERSON}\r\nphotos\r\n".encode())
    trusted = gate.decide(GateInput(person.from_address, "127.0.0.1", "smtp", None, envelope_sender="ann@example.org",
                                    robot_headers=person.robot_headers))
    assert trusted.allowed  # the same person's own mail from the trusted network still passes
