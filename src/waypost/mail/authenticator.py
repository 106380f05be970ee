"""SPF, DKIM and DMARC for a message as it arrives over SMTP, through one resolver per service.

Who is trusted without checks (local submission from ``trusted_networks``) is the caller's
decision: an ``Authenticator`` checks every message it is given.
"""

from __future__ import annotations

import email.policy
import threading
from email.parser import BytesHeaderParser

import dns.resolver

from waypost.mail.addresses import first_mailbox
from waypost.mail.auth import make_resolver, verify
from waypost.mail.spooled import SpooledMessage
from waypost.mail.verdict import AuthVerdict

MAX_HEADER_SCAN = 256 * 1024  # the From header is looked for in the header section only


class Authenticator:
    """Checks inbound mail against DNS at ``nameservers`` (empty: the system's resolver), each
    lookup bounded by ``timeout`` seconds.

    The resolver is made on first use, once, even when several threads ask at the same time;
    a bad nameserver or a system without a resolver is reported then (``ValueError``,
    ``ConfigError``), as ``make_resolver`` documents. Safe to share between threads.
    """

    def __init__(self, nameservers: tuple[str, ...], timeout: float) -> None:
        self._nameservers = tuple(nameservers)
        self._timeout = timeout
        self._resolver: dns.resolver.Resolver | None = None
        self._lock = threading.Lock()

    def resolver(self) -> dns.resolver.Resolver:
        """The resolver every authentication lookup goes through, made once."""
        with self._lock:
            if self._resolver is None:
                self._resolver = make_resolver(self._nameservers, self._timeout)
            return self._resolver

    def authenticate(self, raw: bytes | SpooledMessage, peer_ip: str | None, helo: str | None,
                     mail_from: str | None) -> AuthVerdict:
        """The verdict for ``raw`` received from ``peer_ip`` after HELO ``helo`` and MAIL FROM
        ``mail_from``; DMARC is judged for the domain of the message's single From address. A
        ``SpooledMessage`` is read from its file, never whole. Never raises once the resolver
        exists (``verify`` fails closed)."""
        return verify(raw, peer_ip=peer_ip, helo=helo, mail_from=mail_from,
                      from_domain=from_domain(raw), resolver=self.resolver())


def from_domain(raw: bytes | SpooledMessage) -> str | None:
    """The Author Domain (RFC 7489 §6.6.1): the domain of the single address in the From
    header; None when there is none, or several, or the header cannot be read, which
    ``verify`` reports as dmarc=none (§11.2: no aligned identifier could be extracted)."""
    head = (raw.header if isinstance(raw, SpooledMessage) else raw)[:MAX_HEADER_SCAN]  # the spool kept it
    try:
        header = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        address = first_mailbox(str(header.get("From", "")) or None)
    except (RecursionError, ValueError, TypeError, LookupError):  # hostile From: no domain, DMARC fails
        address = None
    return address.rsplit("@", 1)[1] if address else None
