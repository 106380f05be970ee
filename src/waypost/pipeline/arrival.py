"""What an ingress asks about a message while its sending server waits for the answer.

Mail that will never be answered is refused during the session, after DATA, rather than stored
and dropped later: the sending server, not Waypost, then tells its user (no backscatter; RFC
5321 §6.2 prefers refusing to accepting and discarding). This applies only to mail whose every
recipient is an app only members may use (journeys): there the gate's first three steps decide
it for good (``Gate.screen``). Service mailboxes (postmaster, abuse, unsubscribe, bounces,
complaints) take mail from anyone; trusted networks and authenticated submission are not
screened; whether a sender has left or is over their rate stays with the worker's gate, whose
answer can change and which sends a notice. Two questions, so the body is read only when needed:

1. ``Screen``, on the header section alone: one From address, on the allowlist (or left by their
   own ``stop`` by mail: the body may ask to ``start``, which the worker's gate decides);
2. ``Authenticate``, on the whole message: SPF, DKIM and DMARC, then step 3 on the verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from waypost.mail.authenticator import Authenticator
from waypost.mail.parse import parse_message
from waypost.mail.spooled import SpooledMessage
from waypost.mail.verdict import AuthVerdict
from waypost.pipeline.gate import Gate, GateInput, Verdict
from waypost.pipeline.router import Router


@dataclass(frozen=True)
class Arrival:
    """What authentication found as a message arrived. ``verdict`` is stored with the message;
    None when nothing was checked (trusted networks: the gate then decides on the peer alone).
    ``retry_later``: DNS failed temporarily while deciding whether the mail may be answered,
    so the ingress must not store it but have the sending server try again (RFC 7489 §7).
    ``refusal``: the mail will never be answered; the ingress refuses it and records only its
    metadata."""

    verdict: AuthVerdict | None = None
    retry_later: bool = False
    refusal: Verdict | None = None


@dataclass(frozen=True)
class Sender:
    """Who a message says it is from, read from its header section as the worker reads it."""

    from_address: str | None
    message_id: str | None


@dataclass(frozen=True)
class Screening:
    sender: Sender  # read only when the mail was screened
    refusal: Verdict | None = None  # None: read the whole message and authenticate it


# (raw message, peer IP, HELO name, MAIL FROM, RCPT TOs) -> what to do with the message
Authenticate = Callable[[bytes | SpooledMessage, str | None, str | None, str | None, Sequence[str]], Arrival]
# (header section, peer IP, RCPT TOs) -> whether to refuse the mail before reading its body
Screen = Callable[[bytes, str | None, Sequence[str]], Screening]


def arrival_authentication(gate: Gate, router: Router, authenticator: Authenticator) -> Authenticate:
    """SPF, DKIM and DMARC for a message arriving over SMTP, and step 3 of the gate for mail only
    members may receive; nothing for trusted networks, whose mail the gate accepts without
    (local submission)."""

    def authenticate(raw: bytes | SpooledMessage, peer_ip: str | None, helo: str | None, mail_from: str | None,
                     rcpt_tos: Sequence[str]) -> Arrival:
        if gate.is_trusted(peer_ip):
            return Arrival()
        verdict = authenticator.authenticate(raw, peer_ip, helo, mail_from)
        retry = gated(router, rcpt_tos) and verdict.awaits_dns(
            spf_counts_without_dmarc=not gate.require_dkim_without_dmarc)
        if retry or not members_only(router, rcpt_tos):
            return Arrival(verdict, retry_later=retry)
        from_address = _sender(_header_of(raw)).from_address
        refusal = gate.screen(GateInput(from_address, peer_ip, "smtp", verdict), authenticated=True)
        return Arrival(verdict, refusal=refusal)

    return authenticate


def arrival_screen(gate: Gate, router: Router) -> Screen:
    """Steps 1 and 2 of the gate on the header section, for mail only members may receive."""

    def screen(header: bytes, peer_ip: str | None, rcpt_tos: Sequence[str]) -> Screening:
        if gate.is_trusted(peer_ip) or not members_only(router, rcpt_tos):
            return Screening(Sender(None, None))  # not screened: nobody needs to read the header now
        sender = _sender(header)
        return Screening(sender, gate.screen(GateInput(sender.from_address, peer_ip, "smtp"), authenticated=False))

    return screen


def gated(router: Router, rcpt_tos: Sequence[str]) -> bool:
    """Whether the gate's authentication decides this mail's fate: it goes to an app only members
    may use (journeys). Service mailboxes (postmaster, abuse, unsubscribe, bounces, complaints)
    take mail from anyone, so a DNS failure there changes nothing and the mail is kept."""
    routed = router.app_for(rcpt_tos)  # the app the processor will pick
    return routed is not None and not routed[0].open_to_all


def members_only(router: Router, rcpt_tos: Sequence[str]) -> bool:
    """Whether every recipient is a mailbox of an app only members may use: a mail that also
    goes to a service mailbox is kept, whoever sent it."""
    if not rcpt_tos:
        return False
    for recipient in rcpt_tos:
        routed = router.app_for((recipient,))
        if routed is None or routed[0].open_to_all:
            return False
    return True


def _sender(header: bytes) -> Sender:
    message = parse_message(header + b"\r\n")  # the worker's reading of From, on the header alone
    return Sender(message.from_address, message.message_id)


def _header_of(raw: bytes | SpooledMessage) -> bytes:
    if isinstance(raw, SpooledMessage):
        return raw.header
    end = raw.find(b"\r\n\r\n")
    return raw if end == -1 else raw[:end + 2]
