"""Authentication at arrival: what an ingress asks before it stores a message."""

from __future__ import annotations

from collections.abc import Callable

from waypost.mail.authenticator import Authenticator
from waypost.mail.verdict import AuthVerdict
from waypost.pipeline.gate import Gate

# (raw message, peer IP, HELO name, MAIL FROM) -> the verdict stored with the message, or None
# when nothing was checked (the gate then decides on the peer alone)
Authenticate = Callable[[bytes, str | None, str | None, str | None], AuthVerdict | None]


def arrival_authentication(gate: Gate, authenticator: Authenticator) -> Authenticate:
    """SPF, DKIM and DMARC for a message arriving over SMTP; None for trusted networks, whose
    mail the gate accepts without (local submission)."""

    def authenticate(raw: bytes, peer_ip: str | None, helo: str | None, mail_from: str | None) -> AuthVerdict | None:
        if gate.is_trusted(peer_ip):
            return None
        return authenticator.authenticate(raw, peer_ip, helo, mail_from)

    return authenticate
