"""The relay app: a device's mail forwarded to the recipients its body names, attachments
replaced by links (links.py).

Which mail is a device's: mail sent over the submission port by a device's login
(``inbound_messages.auth_user``), or mail to a device's mailbox ``<mailbox>+<name>@<mail_domain>``
that came from ``trusted_networks`` (a relay in front that the operator vouches for) or, from
anywhere else (the SES ingress, port 25), whose From is the device's registered ``sender`` and
which the gate's authentication step passes for that domain (DMARC pass, or the aligned DKIM
pass it asks for without a DMARC record; SES spam or virus FAIL refuses). Anything
else is dropped with a recorded note and answered by nobody (invariant 3); the relay is
``open_to_all`` because it authorises by the login, not by the From address, which a device
may not even set sensibly.

Effects are idempotent under a re-run (invariant 2): the stored files have keys fixed by the
message and the attachment's position, and the links and the mail are written in the one
processing transaction, each mail with the key ``relay-<message>-<recipient>``."""

from __future__ import annotations

import email.parser
import email.policy
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost import failpoints
from waypost.apps.relay import devices, links
from waypost.apps.relay.devices import Device
from waypost.apps.relay.mailparts import Request, read_request
from waypost.apps.relay.spike import SpikeRule
from waypost.config import RelaySettings
from waypost.link_tokens import new_token
from waypost.mail.addresses import format_mailbox
from waypost.mail.limits import describe_bytes
from waypost.mail.parse import Attachment
from waypost.mail.verdict import AuthVerdict
from waypost.outbound.compose import Composer, Draft
from waypost.outbound.control import OPERATOR_STREAM
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.pipeline.gate import Gate, GateInput
from waypost.pipeline.router import BaseApp, Commit, InboundMail
from waypost.store.blobs import BlobStore
from waypost.store.models import inbound_messages, utcnow

log = logging.getLogger(__name__)

RELAY_STREAM = "relay"
RAW_KEEP = timedelta(days=1)
TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class RelayContext:
    """What the relay needs from the rest of Waypost (runtime.py builds it)."""

    settings: RelaySettings
    engine: Engine
    blobs: BlobStore
    outbox: Outbox
    composer: Composer
    base_url: str
    mail_domain: str
    envelope_sender: str
    operator_address: str
    gate: Gate  # trusted networks, and the authentication step for mail to a device's mailbox
    spike: SpikeRule | None = field(default=None)


class RelayApp(BaseApp):
    name = "relay"
    open_to_all = True  # authorised by the device's login or trusted network, see the module docstring

    def __init__(self, context: RelayContext) -> None:
        self.context = context
        self.mailbox = context.settings.mailbox
        self.address = f"{context.settings.mailbox}@{context.mail_domain}"
        # the attachments live on under relay/ with the device's retention; the mail as received
        # (attachments and all) only for a day, for the operator to look into a notice
        self.raw_retention = RAW_KEEP

    def handle(self, mail: InboundMail) -> Commit:
        device, why = self._device(mail)
        if device is None:
            log.info("relay: %s dropped: %s", mail.id, why)
            return lambda conn: f"relay: dropped, {why}; nobody answered"
        settings = self.context.settings
        request = read_request(device, mail.message, attachment_types=settings.attachment_types,
                               max_attachments=settings.max_attachments)
        if request.problems:
            return self._refusal(mail, device, request)
        stored = [self._store(mail, attachment) for attachment in mail.message.attachments]
        failpoints.hit("relay.after_store")
        made = [[self._link(recipient, key, attachment) for key, attachment in stored]
                for recipient in request.allowed]
        expires_at = utcnow() + timedelta(days=device.link_days)
        drafts = [(recipient, self._forward(mail, device, request, recipient, new, expires_at))
                  for recipient, new in zip(request.allowed, made, strict=True)]
        notices = self._notices(mail, device, list(request.allowed), self._unknown_problems(request),
                                to_operator=False) if request.unknown else []

        def commit(conn: Connection) -> str:
            links.insert(conn, device.name, mail.id, [link for group in made for link in group],
                         link_days=device.link_days, retention_days=device.retention_days)
            for recipient, raw in drafts:
                self._queue(conn, f"relay-{mail.id}-{recipient}", recipient, RELAY_STREAM, raw)
            self._queue_all(conn, notices)
            spiked = self.context.spike.check(conn, device) if self.context.spike else None
            if spiked:  # the owner (and the operator) hear that the device is paused
                self._queue_all(conn, self._notices(mail, device, list(request.allowed), [
                    f"The device sent far more than usual ({spiked}). Its login is refused until the "
                    f"operator runs: waypost relay device rotate-password {device.name} (a new password), or "
                    f"waypost relay device enable {device.name} if the password is safe"], kind="paused"))
            note = (f"relay: device {device.name} forwarded to {len(drafts)} recipient(s) with "
                    f"{len(stored)} file(s); {len(request.unknown)} left out")
            return note + (f"; {spiked}" if spiked else "")

        return commit

    def _device(self, mail: InboundMail) -> tuple[Device | None, str]:
        c = inbound_messages.c
        with self.context.engine.connect() as conn:
            row = conn.execute(sa.select(c.auth_user, c.peer_ip, c.ingress, c.auth).where(c.id == mail.id)).first()
            if row is None:
                return None, "the message's row is gone"
            if row.auth_user:
                found = devices.find_by_user(conn, row.auth_user)
                why = f"login {row.auth_user!r} is not a relay device"
            else:
                tag = mail.recipient.rpartition("@")[0].partition("+")[2].lower()
                found = devices.find(conn, tag) if tag else None
                why = f"no device {tag!r} for {mail.recipient}"
                if found is not None and not self.context.gate.is_trusted(row.peer_ip):
                    refused = self._unproven(mail, found, row)
                    found, why = (None, refused) if refused else (found, why)
        if found is not None and found.disabled_at is not None:
            return None, f"device {found.name} is disabled ({found.disabled_reason})"
        return found, why

    def _unproven(self, mail: InboundMail, device: Device, row: sa.Row) -> str | None:
        """Why mail to the device's mailbox from outside trusted networks is not the device's;
        None: its From is the device's registered sender and authenticated for that domain."""
        if device.sender is None:
            return f"device {device.name} takes mailbox mail only from trusted networks (it has no --from)"
        if mail.sender.casefold() != device.sender.casefold():
            return f"{mail.sender or 'no From'} is not device {device.name}'s sender {device.sender}"
        try:
            auth = AuthVerdict.from_json(row.auth) if row.auth else None
        except (ValueError, TypeError, KeyError):
            auth = None  # unreadable: the gate refuses it as never checked
        refused = self.context.gate.screen(GateInput(mail.sender, row.peer_ip, row.ingress, auth), authenticated=True)
        return f"device {device.name}: {refused.detail}" if refused else None

    def _store(self, mail: InboundMail, attachment: Attachment) -> tuple[str, Attachment]:
        key = f"relay/{mail.id}/{attachment.position}"  # the same key on a re-run: stored once
        self.context.blobs.put(key, attachment.data)
        return key, attachment

    @staticmethod
    def _link(recipient: str, key: str, attachment: Attachment) -> links.NewLink:
        name = links.safe_filename(attachment.filename, f"attachment-{attachment.position}")
        return links.NewLink(new_token(), secrets.token_hex(8), recipient, key, name,
                             attachment.content_type, len(attachment.data))

    def _forward(self, mail: InboundMail, device: Device, request: Request, recipient: str,
                 made: Sequence[links.NewLink], expires_at: datetime) -> bytes:
        files = [{"url": f"{self.context.base_url}/r/{link.token}", "filename": link.filename,
                  "size": describe_bytes(link.size)} for link in made]
        draft = Draft(template="relay/forward", to=recipient, stream=RELAY_STREAM, reply_to=device.owner,
                      subject=mail.message.subject or f"From {device.name}",
                      context={**self._about(device), "text": request.text, "links": files,
                               "expires_at": expires_at})
        return self._as_device(self.context.composer.compose(draft).raw, device)

    def _as_device(self, raw: bytes, device: Device) -> bytes:
        """Our relay address with the device's name shown (DMARC-safe: never the device's From)."""
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
        message.replace_header("From", format_mailbox(device.name, self.address))
        return message.as_bytes(policy=message.policy.clone(max_line_length=998))

    def _about(self, device: Device) -> dict[str, object]:
        return {"device": device.name, "owner": device.owner}

    @staticmethod
    def _unknown_problems(request: Request) -> list[str]:
        return [f"{address} is not on the device's allowlist; it was not sent anything." for address in request.unknown]

    def _refusal(self, mail: InboundMail, device: Device, request: Request) -> Commit:
        notices = self._notices(mail, device, [], [*request.problems, *self._unknown_problems(request)])

        def commit(conn: Connection) -> str:
            self._queue_all(conn, notices)
            return f"relay: device {device.name}: not forwarded: {' '.join(request.problems)}"[:2000]

        return commit

    def _notices(self, mail: InboundMail, device: Device, forwarded: list[str], problems: list[str], *,
                 kind: str = "notice", to_operator: bool = True) -> list[tuple[str, str, str, bytes]]:
        """One notice to the owner and, when ``to_operator`` and it is someone else, one to the operator."""
        context = {**self._about(device), "original_subject": mail.message.subject or "(no subject)",
                   "received_at": mail.received_at, "problems": problems, "forwarded": forwarded,
                   "message_id": mail.id, "paused": kind == "paused"}
        found = []
        for who, to, stream in (("owner", device.owner, RELAY_STREAM),
                                ("operator", self.context.operator_address, OPERATOR_STREAM)):
            if who == "operator" and (to == device.owner or not to_operator):
                continue
            what = "paused" if kind == "paused" else "recipients left out" if forwarded else "not forwarded"
            draft = Draft(template="relay/notice", to=to, stream=stream, context=context,
                          subject=f"Relay {device.name}: {what}")
            found.append((f"relay-{kind}-{mail.id}-{who}", to, stream, self.context.composer.compose(draft).raw))
        return found

    def _queue_all(self, conn: Connection, notices: list[tuple[str, str, str, bytes]]) -> None:
        for key, to, stream, raw in notices:
            self._queue(conn, key, to, stream, raw)

    def _queue(self, conn: Connection, key: str, to: str, stream: str, raw: bytes) -> None:
        message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
        self.context.outbox.queue_message(conn, OutboundMessage(
            idempotency_key=key, stream=stream, recipient=to, envelope_sender=self.context.envelope_sender,
            subject=str(message["Subject"]), message_id=str(message["Message-ID"]), raw=raw))
