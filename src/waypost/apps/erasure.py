"""Erasure: every row and blob that names a person or came from them is removed, on SQLite and
PostgreSQL and in the blob store (``delete my data`` confirmed by mail, ``waypost person erase``).

A person is their address without its +tag, in any case, and every +tag form of it. What each
table keeps of them, and what erasure does:

- inbound_messages and their raw blobs: theirs (From or envelope sender) are deleted; raw mail
  of others that mentions them (a bounce of our mail to them) loses its raw bytes and subject;
- inbound_dedupe: the claims of their messages;
- journeys, photos, journey_messages and the images: theirs (``repository.delete_journey``);
- outbound_messages (the raw bytes are in the row): mail to them, and operator mail (digests,
  forwards) that mentions them; the catcher's copies with them (``forget_files``);
- feedback_events, bounce_scores: about them or our mail to them; feedback_unreadable that
  mentions them;
- suppressions: each entry stays under a keyed hash of its address only
  (``suppression.hashed_key``), without its detail, so a stop or a complaint still holds;
  suppression_log, the allowlist entry, audit entries naming them, views of their journeys and
  downloads of their exports: deleted;
- exports (and their zips), erasure_requests: theirs;
- jobs, dead letters included: those about their messages or exports, or naming them.

Tables that name no person (pauses, send minutes and locks, alarms, doctor and drill runs,
DMARC and TLS reports, which are about domains) are left as they are.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.apps.journeys import repository
from waypost.mail.addresses import address_key
from waypost.outbound import suppression
from waypost.outbound.senders.catcher import catcher_file_name
from waypost.store.blobs import BlobStore
from waypost.store.db import in_chunks
from waypost.store.models import (
    allowlist,
    audit_log,
    bounce_scores,
    erasure_requests,
    exports,
    feedback_events,
    feedback_unreadable,
    inbound_dedupe,
    inbound_messages,
    jobs,
    journey_messages,
    journeys,
    outbound_messages,
    suppression_log,
    suppressions,
    utcnow,
)

log = logging.getLogger(__name__)
OPERATOR_STREAM = "operator"
ForgetSent = Callable[[list[str]], None]  # the idempotency keys of erased mail, for a sender that kept copies


@dataclass(frozen=True)
class Person:
    """One person as erasure and export find them: ``key`` is their address without +tag."""

    key: str
    local: str
    domain: str

    @classmethod
    def of(cls, address: str) -> Person:
        """Raises ``AddressError`` for an address that is none."""
        key = address_key(address).lower()
        local, _, domain = key.rpartition("@")
        return cls(key, local, domain)

    def named_by(self, column: Any) -> sa.ColumnElement[bool]:
        """``column`` holds their address (any case, any +tag)."""
        value = sa.func.lower(column)
        return sa.or_(value == self.key, value.like(f"{_like(self.local)}+%@{_like(self.domain)}", escape="\\"))

    def maybe_in(self, column: Any) -> sa.ColumnElement[bool]:
        """``column`` may mention them somewhere in its text (``mentioned_in`` decides)."""
        value = sa.func.lower(column)
        return sa.or_(value.contains(self.key, autoescape=True),
                      value.like(f"%{_like(self.local)}+%@{_like(self.domain)}%", escape="\\"))

    @property
    def pattern(self) -> re.Pattern[bytes]:
        # not preceded by another character of an address: "joann@" is not "ann@"
        return re.compile(rb"(?<![\w.%+-])" + re.escape(self.local.encode()) + rb"(?:\+[^@\s<>\"]*)?@"
                          + re.escape(self.domain.encode()) + rb"(?![\w-])", re.IGNORECASE)

    def mentioned_in(self, data: bytes | str | None) -> bool:
        if data is None:
            return False
        return self.pattern.search(data.encode("utf-8", "replace") if isinstance(data, str) else data) is not None


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass
class Erased:
    """What an erasure removed: rows by table (suppressions: made anonymous), and blobs."""

    rows: dict[str, int] = field(default_factory=dict)
    blob_keys: list[str] = field(default_factory=list)
    sent_keys: list[str] = field(default_factory=list)  # idempotency keys of the mail to them

    def count(self, table: str, n: int) -> None:
        if n:
            self.rows[table] = self.rows.get(table, 0) + n


class Erasure:
    """Erases people. ``keys`` are the installation's secret keys, newest first (the first
    hashes the suppression entry that stays); ``forget_sent`` removes the copies a sender kept
    (the catcher's files)."""

    def __init__(self, blobs: BlobStore, keys: Sequence[bytes], *, forget_sent: ForgetSent | None = None) -> None:
        if not keys:
            raise ValueError("erasure needs the installation's secret key")
        self.blobs = blobs
        self.keys = tuple(keys)
        self.forget_sent = forget_sent

    def erase(self, conn: Connection, address: str, *, keep_job: int | None = None, delete_blobs: bool = True,
              keep_inbound: str | None = None) -> Erased:
        """Remove everything about ``address`` in the caller's transaction, then its blobs. A
        rollback after the blobs went leaves rows whose blobs are gone; the re-run removes the
        same rows and finds nothing to delete (deleting a missing blob is no error). Without
        ``delete_blobs`` the caller deletes ``blob_keys`` (and the sender's copies) once its
        transaction committed. The job ``keep_job`` and the message ``keep_inbound`` (the mail
        being handled, whose row and raw bytes its caller removes later) are left alone. Raises
        ``AddressError``."""
        person = Person.of(address)
        erased = Erased()
        inbound_ids = self._inbound(conn, person, erased, keep_inbound)
        self._journeys(conn, person, inbound_ids, erased)
        outbound_ids = self._outbound(conn, person, erased)
        export_ids = self._exports(conn, person, erased)
        self._feedback(conn, person, outbound_ids, erased)
        self._suppressions(conn, person, erased)
        self._jobs(conn, person, set(inbound_ids), outbound_ids, export_ids, keep_job, erased)
        self._delete_inbound(conn, list(inbound_ids), erased)
        if delete_blobs:
            for key in dict.fromkeys(erased.blob_keys):
                self.blobs.delete(key)
            if self.forget_sent is not None and erased.sent_keys:
                self.forget_sent(erased.sent_keys)
        log.info("erased a person: %s rows, %d blobs", sum(erased.rows.values()), len(erased.blob_keys))
        return erased

    def _inbound(self, conn: Connection, person: Person, erased: Erased, keep: str | None) -> dict[str, str]:
        """Their messages (id → raw blob key); the raw mail of others that mentions them loses its raw."""
        theirs = {r.id: r.blob_key for r in conn.execute(
            sa.select(inbound_messages.c.id, inbound_messages.c.blob_key).where(sa.or_(
                person.named_by(inbound_messages.c.from_address), person.named_by(inbound_messages.c.mail_from))))
            if r.id != keep}
        erased.blob_keys.extend(key for key in theirs.values() if key)
        others = conn.execute(sa.select(inbound_messages.c.id, inbound_messages.c.blob_key).where(
            inbound_messages.c.raw_deleted_at.is_(None), inbound_messages.c.blob_key != "")).all()
        for row in others:
            if row.id not in theirs and row.id != keep and self.blobs.exists(row.blob_key) and person.mentioned_in(
                    self.blobs.get(row.blob_key)):
                erased.blob_keys.append(row.blob_key)
                conn.execute(inbound_messages.update().where(inbound_messages.c.id == row.id)
                             .values(raw_deleted_at=utcnow(), subject=None))
                erased.count("inbound_messages", 1)
        return theirs

    @staticmethod
    def _delete_inbound(conn: Connection, ids: list[str], erased: Erased) -> None:
        """Their messages go, but for one that began another's journey (their envelope sender on
        a mail of another's From): that row stays, without anything that names them."""
        for chunk in in_chunks(ids):
            needed = set(conn.execute(sa.select(journeys.c.source_message_id)
                                      .where(journeys.c.source_message_id.in_(chunk))).scalars())
            if needed:
                conn.execute(inbound_messages.update().where(inbound_messages.c.id.in_(needed)).values(
                    mail_from=None, from_address=None, subject=None, reason=None, raw_deleted_at=utcnow()))
            gone = [i for i in chunk if i not in needed]
            erased.count("inbound_dedupe", conn.execute(
                inbound_dedupe.delete().where(inbound_dedupe.c.inbound_id.in_(chunk))).rowcount)
            erased.count("inbound_messages", len(needed) + conn.execute(
                inbound_messages.delete().where(inbound_messages.c.id.in_(gone))).rowcount)

    def _journeys(self, conn: Connection, person: Person, inbound_ids: dict[str, str], erased: Erased) -> None:
        owned = conn.execute(sa.select(journeys.c.id).where(person.named_by(journeys.c.owner_address))).scalars().all()
        views = [str(journey_id) for journey_id in owned]
        for chunk in in_chunks(views):
            erased.count("audit_log", conn.execute(audit_log.delete().where(
                audit_log.c.action == "journey.view", audit_log.c.target.in_(chunk))).rowcount)
        for journey_id in owned:
            deleted = repository.delete_journey(conn, journey_id)
            erased.count("photos", deleted.photos)
            erased.blob_keys.extend(deleted.blob_keys)
        erased.count("journeys", len(owned))
        for chunk in in_chunks(list(inbound_ids)):  # their mail in another's thread
            erased.count("journey_messages", conn.execute(
                journey_messages.delete().where(journey_messages.c.inbound_message_id.in_(chunk))).rowcount)
        erased.count("audit_log", self._delete_mentioning(conn, person, audit_log, audit_log.c.detail,
                                                          extra=person.named_by(audit_log.c.target)))
        erased.count("allowlist", conn.execute(allowlist.delete().where(
            allowlist.c.kind == "address", person.named_by(allowlist.c.value))).rowcount)

    def _outbound(self, conn: Connection, person: Person, erased: Erased) -> set[int]:
        """Mail to them, and operator mail (digests, forwards) that mentions them."""
        rows = conn.execute(sa.select(outbound_messages.c.id, outbound_messages.c.idempotency_key).where(
            person.named_by(outbound_messages.c.recipient))).all()
        found = {r.id: r.idempotency_key for r in rows}
        for row in conn.execute(sa.select(outbound_messages.c.id, outbound_messages.c.idempotency_key,
                                          outbound_messages.c.raw)
                                .where(outbound_messages.c.stream == OPERATOR_STREAM)):
            if person.mentioned_in(row.raw):
                found[row.id] = row.idempotency_key
        for chunk in in_chunks(list(found)):
            erased.count("outbound_messages", conn.execute(
                outbound_messages.delete().where(outbound_messages.c.id.in_(chunk))).rowcount)
        erased.sent_keys.extend(found.values())
        return set(found)

    def _exports(self, conn: Connection, person: Person, erased: Erased) -> set[str]:
        rows = conn.execute(sa.select(exports.c.id, exports.c.blob_key).where(person.named_by(exports.c.address))).all()
        erased.blob_keys.extend(r.blob_key for r in rows if r.blob_key)
        ids = {r.id for r in rows}
        for chunk in in_chunks(list(ids)):
            erased.count("audit_log", conn.execute(audit_log.delete().where(
                audit_log.c.action.startswith("export."), audit_log.c.target.in_(chunk))).rowcount)
        erased.count("exports", conn.execute(exports.delete().where(person.named_by(exports.c.address))).rowcount)
        requests = conn.execute(sa.select(erasure_requests.c.id).where(
            person.named_by(erasure_requests.c.address))).scalars().all()
        erased.count("erasure_requests", conn.execute(erasure_requests.delete().where(
            person.named_by(erasure_requests.c.address))).rowcount)
        return ids | set(requests)

    def _feedback(self, conn: Connection, person: Person, outbound_ids: set[int], erased: Erased) -> None:
        named = person.named_by(feedback_events.c.recipient)
        if outbound_ids:
            named = sa.or_(named, feedback_events.c.outbound_id.in_(list(outbound_ids)))
        erased.count("feedback_events", conn.execute(feedback_events.delete().where(named)).rowcount)
        erased.count("feedback_events", self._delete_mentioning(conn, person, feedback_events, feedback_events.c.raw))
        erased.count("feedback_unreadable", self._delete_mentioning(conn, person, feedback_unreadable,
                                                                    feedback_unreadable.c.body))
        erased.count("bounce_scores", conn.execute(bounce_scores.delete().where(
            person.named_by(bounce_scores.c.address))).rowcount)

    def _suppressions(self, conn: Connection, person: Person, erased: Erased) -> None:
        """Each entry stays, under a keyed hash of its address and without its detail."""
        for row in conn.execute(sa.select(suppressions.c.id, suppressions.c.address).where(
                person.named_by(suppressions.c.address))).all():
            hashed = suppression.hashed_key(row.address, self.keys[0])
            if conn.execute(sa.select(suppressions.c.id).where(suppressions.c.address == hashed)).first():
                conn.execute(suppressions.delete().where(suppressions.c.id == row.id))
            else:
                conn.execute(suppressions.update().where(suppressions.c.id == row.id)
                             .values(address=hashed, detail=None, source=suppression.ERASED_SOURCE))
            erased.count("suppressions", 1)
        erased.count("suppression_log", conn.execute(suppression_log.delete().where(
            person.named_by(suppression_log.c.address))).rowcount)
        erased.count("suppression_log", self._delete_mentioning(conn, person, suppression_log, suppression_log.c.note))

    def _jobs(self, conn: Connection, person: Person, inbound_ids: set[str], outbound_ids: set[int],
              export_ids: set[str], keep_job: int | None, erased: Erased) -> None:
        """Jobs (dead letters too) about their messages or exports, or naming them."""
        doomed = []
        for row in conn.execute(sa.select(jobs.c.id, jobs.c.payload, jobs.c.last_error)):
            payload = row.payload if isinstance(row.payload, dict) else {}
            if row.id != keep_job and (payload.get("message_id") in inbound_ids
                                       or payload.get("outbound_id") in outbound_ids
                                       or payload.get("export_id") in export_ids
                                       or payload.get("request_id") in export_ids
                                       or person.mentioned_in(str(row.payload)) or person.mentioned_in(row.last_error)):
                doomed.append(row.id)
        for chunk in in_chunks(doomed):
            erased.count("jobs", conn.execute(jobs.delete().where(jobs.c.id.in_(chunk))).rowcount)

    @staticmethod
    def _delete_mentioning(conn: Connection, person: Person, table: sa.Table, column: sa.Column[Any],
                           extra: sa.ColumnElement[bool] | None = None) -> int:
        found = sa.or_(person.maybe_in(column), extra) if extra is not None else person.maybe_in(column)
        rows = conn.execute(sa.select(table.c.id, column, *([] if extra is None else [extra.label("named")]))
                            .where(found)).all()
        ids = [r.id for r in rows if (extra is not None and r.named) or person.mentioned_in(r[1])]
        for chunk in in_chunks(ids):
            conn.execute(table.delete().where(table.c.id.in_(chunk)))
        return len(ids)


def compact(engine: Engine) -> None:
    """After an erasure on SQLite: rebuild the file and empty the write-ahead log, so deleted
    rows leave no bytes behind in free pages or old log frames. PostgreSQL's data files are not
    Waypost's to scrub (its own VACUUM reclaims dead rows)."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("VACUUM")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    except sqlite3.OperationalError as err:  # busy past the timeout: the rows are gone all the same
        log.warning("the database file was not compacted after an erasure (%s): deleted bytes may stay in "
                    "free pages until the next erasure or a VACUUM", err)
    finally:
        raw.close()


def erase_alone(engine: Engine, erasure: Erasure, address: str) -> Erased:
    """``erase`` in a transaction of its own, then ``compact`` (the operator's ``person erase``)."""
    with engine.begin() as conn:
        erased = erasure.erase(conn, address)
    compact(engine)
    return erased


def forget_files(directory: Path) -> ForgetSent:
    """A ``forget_sent`` for the catcher: its ``.eml`` copies, named by idempotency key."""

    def forget(keys: Iterable[str]) -> None:
        for key in keys:
            Path(directory, catcher_file_name(key)).unlink(missing_ok=True)

    return forget
