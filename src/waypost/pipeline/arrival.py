"""Authentication at arrival: what an ingress asks before it stores a message."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from waypost.mail.authenticator import Authenticator
from waypost.mail.verdict import AuthVerdict
from waypost.pipeline.gate import Gate
from waypost.pipeline.router import Router


@dataclass(frozen=True)
class Arrival:
    """What authentication found as a message arrived. ``verdict`` is stored with the message;
    None when nothing was checked (trusted networks: the gate then decides on the peer alone).
    ``retry_later``: DNS failed temporarily while deciding whether the mail may be answered,
    so the ingress must not store it but have the sending server try again (RFC 7489 §7)."""

    verdict: AuthVerdict | None = None
    retry_later: bool = False


# (raw message, peer IP, HELO name, MAIL FROM, RCPT TOs) -> what to do with the message
Authenticate = Callable[[bytes, str | None, str | None, str | None, Sequence[str]], Arrival]


def arrival_authentication(gate: Gate, router: Router, authenticator: Authenticator) -> Authenticate:
    """SPF, DKIM and DMARC for a message arriving over SMTP; nothing for trusted networks, whose
    mail the gate accepts without (local submission)."""

    def authenticate(raw: bytes, peer_ip: str | None, helo: str | None, mail_from: str | None,
                     rcpt_tos: Sequence[str]) -> Arrival:
        if gate.is_trusted(peer_ip):
            return Arrival()
        verdict = authenticator.authenticate(raw, peer_ip, helo, mail_from)
        retry = gated(router, rcpt_tos) and verdict.awaits_dns(
            spf_counts_without_dmarc=not gate.require_dkim_without_dmarc)
        return Arrival(verdict, retry_later=retry)

    return authenticate


def gated(router: Router, rcpt_tos: Sequence[str]) -> bool:
    """Whether the gate's authentication decides this mail's fate: it goes to an app only members
    may use (journeys). Service mailboxes (postmaster, abuse, unsubscribe, bounces, complaints)
    take mail from anyone, so a DNS failure there changes nothing and the mail is kept."""
    routed = router.app_for(rcpt_tos)  # the app the processor will pick
    return routed is not None and not routed[0].open_to_all
