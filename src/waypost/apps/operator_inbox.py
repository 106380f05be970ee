"""The operator's mailboxes on mail_domain: ``postmaster@`` (RFC 5321 §4.5.1), ``abuse@`` (RFC 2142)
and the operator address shown in every mail when it is on mail_domain.

Anyone may write here and nobody is answered. Each message is kept, raw bytes included, in the
operator inbox (the console's inbox page, `waypost inbox list|show`) and, when
``operator_forward_to`` is set, forwarded there through the outbox on the operator stream:
DMARC-safe, so our From with the original sender in Reply-To, and the message as received
attached. Reports to ``abuse@`` also reach the operator's digest (reputation/digest.py).

The verification mailboxes (``verification_mailboxes``: hostmaster@, webmaster@, admin@…) are kept
here too. In every kept mail but abuse@'s (whose reports quote phishing that asks to "verify"), a
confirmation link (mail/confirmation.py) is written into the recorded note, so the inbox lists the
mail as a verification with its link; Waypost never follows it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.mail.confirmation import confirmation_links
from waypost.mail.parse import MalformedMessage, ParsedMessage, parse_message
from waypost.outbound.compose import Attachment, Composer, Draft
from waypost.outbound.control import OPERATOR_STREAM
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.pipeline.router import OPERATOR_MAILBOXES, BaseApp, Commit, InboundMail
from waypost.reputation.digest import OPERATOR_INBOX_NOTE
from waypost.store.blobs import BlobStore
from waypost.store.models import InboundStatus, inbound_messages

log = logging.getLogger(__name__)

ATTACH_LIMIT = 5 * 1024 * 1024  # a larger original stays in the inbox only
EXCERPT = 1500  # characters of the text shown in the forward
VERIFICATION_NOTE = "; verification link: "  # in the recorded note, before the link
# reports here quote the phishing they report, which asks its victims to "verify" their account
NO_LINK_CAPTURE = ("abuse",)


@dataclass(frozen=True)
class Forwarding:
    """Where and how kept mail is forwarded (``operator_forward_to``)."""

    to: str
    composer: Composer
    outbox: Outbox
    envelope_sender: str


class OperatorInboxApp(BaseApp):
    name = "operator-inbox"
    open_to_all = True  # strangers report abuse; the allowlist does not apply, nobody is answered
    reads_raw = True  # the forward attaches the message as received

    def __init__(self, mailbox: str, mail_domain: str, forwarding: Forwarding | None = None) -> None:
        self.mailbox = mailbox
        self.address = f"{mailbox}@{mail_domain}"
        self.forwarding = forwarding

    def handle(self, mail: InboundMail) -> Commit:
        note = f"{OPERATOR_INBOX_NOTE} ({self.address})"
        links = confirmation_links(mail.raw) if mail.raw and self.mailbox not in NO_LINK_CAPTURE else ()
        if links:
            note += f"{VERIFICATION_NOTE}{links[0]}"  # shown, never fetched
        forwarding = self.forwarding
        if forwarding is None:
            return lambda conn: note
        draft = self._forward(mail, forwarding)

        def commit(conn: Connection) -> str:
            composed = forwarding.composer.compose(draft)
            forwarding.outbox.queue_message(conn, OutboundMessage(
                idempotency_key=f"operator-forward-{mail.id}", stream=OPERATOR_STREAM, recipient=forwarding.to,
                envelope_sender=forwarding.envelope_sender, subject=composed.subject,
                message_id=composed.message_id, raw=composed.raw))
            return f"{note}; forwarded to {forwarding.to}"

        return commit

    def _forward(self, mail: InboundMail, forwarding: Forwarding) -> Draft:
        raw = mail.raw or b""
        attached = 0 < len(raw) <= ATTACH_LIMIT
        sender = mail.sender or "(no sender)"
        return Draft(
            template="operator/forward", to=forwarding.to, stream=OPERATOR_STREAM,
            subject=f"[{self.address}] {mail.message.subject or '(no subject)'}",
            reply_to=mail.sender or None,  # DMARC: never their From; answering reaches them still
            context={"mailbox": self.address, "sender": sender, "original_subject": mail.message.subject,
                     "received_at": mail.received_at, "excerpt": mail.message.text[:EXCERPT].strip(),
                     "attached": attached, "inbox_id": mail.id},
            attachments=(Attachment("original.eml", "application/octet-stream", raw),) if attached else ())


def operator_mailboxes(mail_domain: str, operator_addresses: Iterable[str]) -> list[str]:
    """postmaster, abuse, and the local part of each operator address that is on mail_domain."""
    found = list(OPERATOR_MAILBOXES)
    for address in operator_addresses:
        local, _, domain = address.rpartition("@")
        local = local.split("+", 1)[0].lower()
        if domain.lower() == mail_domain and local and local not in found:
            found.append(local)
    return found


@dataclass(frozen=True)
class InboxItem:
    id: str
    received_at: datetime
    mailbox: str
    sender: str
    subject: str
    outcome: str  # the recorded note: kept, and forwarded where
    verification_link: str | None = None  # a verification mail's confirmation link, never followed


@dataclass(frozen=True)
class InboxMessage:
    item: InboxItem
    message: ParsedMessage | None  # None: the raw bytes are gone (retention) or unreadable
    raw_size: int
    links: tuple[str, ...] = ()  # a verification mail's confirmation links, best first


class OperatorInbox:
    """The mail kept for the operator, newest first; read by the console and the CLI."""

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs

    def list(self, *, limit: int = 50, verification_only: bool = False) -> list[InboxItem]:
        m = inbound_messages.c
        only = (m.reason.contains(VERIFICATION_NOTE, autoescape=True),) if verification_only else ()
        query = sa.select(inbound_messages).where(*_kept(), *only).order_by(m.received_at.desc(), m.id).limit(limit)
        with self.engine.connect() as conn:
            return [_item(row) for row in conn.execute(query)]

    def show(self, message_id: str) -> InboxMessage | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(inbound_messages).where(
                inbound_messages.c.id == message_id, *_kept())).first()
        if row is None:
            return None
        if row.raw_deleted_at is not None or not self.blobs.exists(row.blob_key):
            return InboxMessage(_item(row), None, 0)
        raw = self.blobs.get(row.blob_key)
        links = confirmation_links(raw) if _item(row).verification_link else ()
        try:
            return InboxMessage(_item(row), parse_message(raw), len(raw), links)
        except MalformedMessage:
            return InboxMessage(_item(row), None, len(raw))


def _kept() -> tuple[sa.ColumnElement[bool], ...]:
    m = inbound_messages.c
    return (m.status == InboundStatus.PROCESSED, m.reason.startswith(OPERATOR_INBOX_NOTE, autoescape=True))


def _item(row: sa.Row) -> InboxItem:
    reason = row.reason or ""
    mailbox = reason[len(OPERATOR_INBOX_NOTE):].strip(" (").split(")", 1)[0] or ", ".join(row.rcpt_tos)
    _, marked, rest = reason.partition(VERIFICATION_NOTE)
    link = rest.split("; ", 1)[0] if marked else None  # a link holds no space; "; forwarded to" may follow
    return InboxItem(row.id, row.received_at, mailbox, row.from_address or row.mail_from or "(no sender)",
                     row.subject or "", reason, link)
