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
    name: str
    mailbox: str
    # the domain the mailbox is on; None: mail_domain (the bounce app may sit on bounce_domain)
    domain: str | None
    # how long the raw message is kept once processed; None keeps it (until retention rules)
    raw_retention: timedelta | None
    # True: anyone may write (unsubscribe, bounces); the allowlist does not apply
    open_to_all: bool

    def handle(self, mail: InboundMail) -> Commit: ...


class Router:
    def __init__(self, mail_domain: str, apps: Iterable[App]) -> None:
        self.mail_domain = mail_domain
        self.apps = {(app.mailbox, getattr(app, "domain", None) or mail_domain): app for app in apps}
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
