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
    sender: str
    recipient: str
    received_at: datetime


class App(Protocol):
    name: str
    mailbox: str
    # how long the raw message is kept once processed; None keeps it (until retention rules)
    raw_retention: timedelta | None
    # True: anyone may write (unsubscribe, bounces); the allowlist does not apply
    open_to_all: bool

    def handle(self, mail: InboundMail) -> Commit: ...


class Router:
    def __init__(self, mail_domain: str, apps: Iterable[App]) -> None:
        self.mail_domain = mail_domain
        self.apps = {app.mailbox: app for app in apps}

    def mailbox_of(self, address: str) -> str | None:
        """The local part (without +tag) when the address is on our domain, else None."""
        try:
            local, domain = normalise_address(address).rsplit("@", 1)
        except AddressError:
            return None
        return local.split("+", 1)[0].lower() if domain == self.mail_domain else None

    def is_local_domain(self, address: str) -> bool:
        try:
            return normalise_address(address).rsplit("@", 1)[1] == self.mail_domain
        except AddressError:
            return False

    def accepts(self, address: str) -> bool:
        mailbox = self.mailbox_of(address)
        return mailbox is not None and (mailbox in self.apps or mailbox in OPERATOR_MAILBOXES)

    def app_for(self, recipients: Iterable[str]) -> tuple[App, str] | None:
        for recipient in recipients:
            mailbox = self.mailbox_of(recipient)
            if mailbox in self.apps:
                return self.apps[mailbox], recipient
        return None
