"""Recipient address → the app that handles it.

Apps receive only mail that passed the gate. ``handle`` does the slow work (decoding
images, say) outside any transaction and returns a ``Commit``: a function the worker runs
inside the one transaction that also records the message as processed and completes its
job. Effects must be idempotent under a re-run (invariant 2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.engine import Connection

from waypost.mail.addresses import AddressError, normalise_address
from waypost.mail.parse import ParsedMessage

# runs in the processing transaction; may return a note that becomes the recorded outcome
Commit = Callable[[Connection], str | None]

# RFC 5321 §4.5.1: a domain that accepts mail must accept it for postmaster.
OPERATOR_MAILBOXES = ("postmaster", "abuse")


@dataclass(frozen=True)
class InboundMail:
    id: str
    message: ParsedMessage
    sender: str  # the From address ("" when an open app's mail has none, as bounces may)
    recipient: str
    received_at: datetime
    raw: bytes | None = None  # the message as received, for apps that set ``reads_raw``


class App(Protocol):
    """The port every app fills (``BaseApp`` gives the defaults)."""

    name: str
    mailbox: str
    # the domain the mailbox is on; None: mail_domain (the bounce app may sit on bounce_domain)
    domain: str | None
    # how long the raw message is kept once processed; None keeps it (until retention rules)
    raw_retention: timedelta | None
    # True: anyone may write (unsubscribe, bounces); the allowlist does not apply
    open_to_all: bool
    # True: ``InboundMail.raw`` carries the message as received (reports quote it whole)
    reads_raw: bool

    def handle(self, mail: InboundMail) -> Commit:
        """The slow work, outside any transaction; the returned ``Commit`` runs in the one that
        records the message as processed. Raises ``PermanentError`` for mail it can never handle."""
        ...

    def rate_notice(self, conn: Connection, sender: str, message: ParsedMessage) -> None:
        """Tell an allowed, authenticated sender over the gate's rate limit that their mail
        waits, once per window (runs in the refusal's transaction); or nothing."""
        ...


class BaseApp:
    """Defaults for the optional parts of the App port: a mailbox on mail_domain, for allowed
    senders only, raw message kept, no notice when a sender is over the rate."""

    name: str
    mailbox: str
    domain: str | None = None
    raw_retention: timedelta | None = None
    open_to_all = False
    reads_raw = False

    def handle(self, mail: InboundMail) -> Commit:
        raise NotImplementedError

    def rate_notice(self, conn: Connection, sender: str, message: ParsedMessage) -> None:
        return None


class Router:
    def __init__(self, mail_domain: str, apps: Iterable[App]) -> None:
        self.mail_domain = mail_domain
        self.apps = {(app.mailbox, app.domain or mail_domain): app for app in apps}
        self.domains = {mail_domain} | {domain for _, domain in self.apps}

    def mailbox_of(self, address: str) -> tuple[str, str] | None:
        """(local part without +tag, domain) when the address is on one of our domains, else None."""
        try:
            local, domain = normalise_address(address).rsplit("@", 1)
        except AddressError:
            return None
        return (local.split("+", 1)[0].lower(), domain) if domain in self.domains else None

    def is_local_domain(self, address: str) -> bool:
        try:
            return normalise_address(address).rsplit("@", 1)[1] in self.domains
        except AddressError:
            return False

    def accepts(self, address: str) -> bool:
        key = self.mailbox_of(address)
        if key is None:
            return False
        return key in self.apps or (key[1] == self.mail_domain and key[0] in OPERATOR_MAILBOXES)

    def app_for(self, recipients: Iterable[str]) -> tuple[App, str] | None:
        for recipient in recipients:
            key = self.mailbox_of(recipient)
            if key in self.apps:
                return self.apps[key], recipient
        return None
