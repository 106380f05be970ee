"""Attachment links: one token per (relayed message, recipient, attachment).

A token holds 192 random bits (``secrets.token_urlsafe(24)``) and is kept only as its SHA-256;
the link's id (``relay_links.id``) names it in lists, the audit log and ``links revoke``. A link
answers until it expires (the device's link days), is revoked, or its file is purged (the
device's retention days); after that the web answers 410."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost import audit
from waypost.link_tokens import token_hash
from waypost.store.blobs import BlobStore
from waypost.store.models import relay_links, utcnow

log = logging.getLogger(__name__)

TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")
DOWNLOAD_ACTION = "relay.download"
REVOKE_ACTION = "relay.revoke"
# types a browser shows inline or runs are served as bytes to save (never previewed or executed)
SAFE_TYPES = frozenset({"application/pdf", "image/jpeg", "image/png", "image/gif", "image/tiff", "text/csv",
                        "text/plain", "application/json", "application/zip"})
_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,]")


@dataclass(frozen=True)
class Link:
    id: str
    device: str
    message_id: str
    recipient: str
    filename: str
    content_type: str
    size: int
    created_at: datetime
    expires_at: datetime
    purge_after: datetime
    revoked_at: datetime | None
    purged_at: datetime | None
    downloads: int
    blob_key: str

    def state(self, now: datetime) -> str:
        if self.purged_at is not None:
            return "purged"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


@dataclass(frozen=True)
class NewLink:
    """A link made while handling a message; the token goes into the forwarded mail only."""

    token: str
    id: str
    recipient: str
    blob_key: str
    filename: str
    content_type: str
    size: int



def safe_filename(name: str | None, fallback: str) -> str:
    """A name to save as: letters, digits and a few marks, no path, no leading dot, 100 characters."""
    name = unicodedata.normalize("NFC", name or "").replace("/", "_").replace("\\", "_")
    name = _UNSAFE_NAME.sub("_", name).strip(" .")[-100:]
    return name or fallback


def served_type(content_type: str) -> str:
    """What the download is served as: the sender's type when it cannot run in a browser, else bytes."""
    return content_type if content_type in SAFE_TYPES else "application/octet-stream"


def insert(conn: Connection, device: str, message_id: str, links: Sequence[NewLink], *, link_days: int,
           retention_days: int) -> None:
    now = utcnow()
    conn.execute(relay_links.insert(), [
        {"id": link.id, "token_hash": token_hash(link.token), "device": device, "message_id": message_id,
         "recipient": link.recipient, "blob_key": link.blob_key, "filename": link.filename,
         "content_type": link.content_type, "size": link.size, "created_at": now,
         "expires_at": now + timedelta(days=link_days), "purge_after": now + timedelta(days=retention_days)}
        for link in links])


class Links:
    """What the CLI, the console and ``/r/<token>`` ask of the links."""

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs

    def find(self, token: str) -> Link | None:
        if not TOKEN.match(token):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(relay_links).where(relay_links.c.token_hash == token_hash(token))).first()
        return _link(row) if row is not None else None

    def list(self, *, device: str | None = None, recipient: str | None = None, message_id: str | None = None,
             limit: int = 200) -> list[Link]:
        c = relay_links.c
        where = [column == value for column, value in ((c.device, device), (c.recipient, recipient),
                                                       (c.message_id, message_id)) if value]
        query = sa.select(relay_links).where(*where).order_by(c.created_at.desc(), c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_link(row) for row in conn.execute(query)]

    def record_download(self, link: Link, ip: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(relay_links.update().where(relay_links.c.id == link.id)
                         .values(downloads=relay_links.c.downloads + 1))
            audit.record(conn, DOWNLOAD_ACTION, actor=link.recipient, target=link.id,
                         detail=f"{link.device}: {link.filename}", ip=ip)

    def revoke(self, *, token: str | None = None, link_id: str | None = None, message_id: str | None = None,
               recipient: str | None = None, actor: str = "cli") -> int:
        """Revoke the links that match (exactly one criterion); returns how many were still live."""
        c = relay_links.c
        chosen = [(column, value) for column, value in ((c.token_hash, token_hash(token) if token else None),
                  (c.id, link_id), (c.message_id, message_id), (c.recipient, recipient)) if value]
        if len(chosen) != 1:
            raise ValueError("revoke takes exactly one of: a token, a link id, a message id, a recipient")
        column, value = chosen[0]
        with self.engine.begin() as conn:
            count = conn.execute(relay_links.update().where(column == value, c.revoked_at.is_(None))
                                 .values(revoked_at=utcnow())).rowcount
            audit.record(conn, REVOKE_ACTION, actor=actor, target=str(value)[:64] if column is not c.token_hash
                         else "(a token)", detail=f"{count} link(s)")
        return count

    def purge(self, now: datetime | None = None) -> int:
        """Delete the files past their device's retention; returns how many files went."""
        now = now or utcnow()
        c = relay_links.c
        with self.engine.connect() as conn:
            keys = sorted({row.blob_key for row in conn.execute(
                sa.select(c.blob_key).where(c.purge_after <= now, c.purged_at.is_(None)))})
        for key in keys:
            self.blobs.delete(key)  # before the mark: a crash leaves it to be deleted again, never kept
            with self.engine.begin() as conn:
                conn.execute(relay_links.update().where(c.blob_key == key).values(purged_at=now))
        if keys:
            log.info("relay: deleted %d stored attachment(s) past retention", len(keys))
        return len(keys)


def _link(row: sa.Row) -> Link:
    return Link(row.id, row.device, row.message_id, row.recipient, row.filename, row.content_type, row.size,
                row.created_at, row.expires_at, row.purge_after, row.revoked_at, row.purged_at, row.downloads,
                row.blob_key)
