"""``export`` and ``delete my data`` by mail, and the jobs they leave behind.

``export`` records an export and queues a job that builds the zip, stores it in the blob store
and mails its link (key ``export-link-<export id>``: one mail, whatever the retries); another job
deletes the zip when the link expires. ``delete my data`` answers with a confirmation whose
Message-ID is kept with the request; a ``yes`` in its thread (a reply to it, within
``journeys.erasure_confirm_days``) erases the person in the transaction that handles the ``yes``
and queues one last mail saying so (key ``erasure-farewell-<mail id>``). The blobs go only once
that has committed, by a job that then forgets the last mail too, once it is sent (its row, its
send job and its own payload), and on SQLite compacts the database file.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost import failpoints
from waypost.apps import people_export
from waypost.apps.erasure import Erasure, ForgetSent, Person, compact
from waypost.apps.journeys.build import Locate, RouteRules
from waypost.outbound import suppression
from waypost.outbound.compose import Composer, Draft
from waypost.outbound.outbox import OutboundMessage, Outbox
from waypost.store.blobs import BlobStore
from waypost.store.models import (
    OutboundState,
    erasure_requests,
    inbound_dedupe,
    inbound_messages,
    jobs,
    outbound_messages,
    utcnow,
)
from waypost.store.queue import Job, JobKind, JobQueue, enqueue

log = logging.getLogger(__name__)
STREAM = "journeys"
EXPORT_JOB = "people-export"
EXPORT_EXPIRY_JOB = "people-export-expiry"
FAREWELL_JOB = "people-farewell"
EXPORT_LINK = "export-link-"
FAREWELL = "erasure-farewell-"
FINAL = (OutboundState.SENT, OutboundState.FAILED, OutboundState.SUPPRESSED)
FAREWELL_RECHECK = timedelta(minutes=1)
ATTEMPTS = 10


@dataclass(frozen=True)
class Confirmed:
    """A ``yes`` that erased its sender: what the farewell job still has to do."""

    inbound_id: str  # the "yes" itself
    blob_keys: list[str]
    sent_keys: list[str]


def ask_export(conn: Connection, address: str, source_message_id: str) -> None:
    """Record the export a mail asks for and queue the job that builds and mails it."""
    export_id, new = people_export.request(conn, address, source_message_id=source_message_id)
    if new:
        enqueue(conn, EXPORT_JOB, {"export_id": export_id}, max_attempts=ATTEMPTS)


def ask_erasure(conn: Connection, address: str, source_message_id: str, confirmation_message_id: str,
                wait: timedelta) -> None:
    """Keep a ``delete my data`` until its ``yes`` (a reply to ``confirmation_message_id``);
    requests whose time ran out go now (they name a person who did not confirm)."""
    now = utcnow()
    conn.execute(erasure_requests.delete().where(erasure_requests.c.expires_at <= now))
    conn.execute(erasure_requests.insert().values(
        id=secrets.token_hex(16), address=Person.of(address).key, source_message_id=source_message_id,
        confirmation_message_id=confirmation_message_id[:998], created_at=now, expires_at=now + wait))


def confirming(conn: Connection, address: str, thread: Sequence[str]) -> str | None:
    """The request a ``yes`` in ``thread`` (In-Reply-To and References) confirms: its id, or
    None (no such thread, another person's, or too late)."""
    if not thread:
        return None
    row = conn.execute(sa.select(erasure_requests.c.id).where(
        erasure_requests.c.confirmation_message_id.in_([m[:998] for m in thread]),
        erasure_requests.c.address == Person.of(address).key, erasure_requests.c.expires_at > utcnow())).first()
    return None if row is None else str(row.id)


def erase_confirmed(conn: Connection, blobs: BlobStore, address: str, inbound_id: str) -> Confirmed:
    """Erase the person in the caller's transaction. The blobs wait for the farewell job (the
    mail being handled must stay readable should this transaction roll back), and so does that
    mail's row: it shows the reputation guard that the person wrote to us, so the last mail to
    them is no compromise signal."""
    erased = Erasure(blobs, suppression.hash_keys(conn.engine)).erase(conn, address, delete_blobs=False,
                                                                     keep_inbound=inbound_id)
    return Confirmed(inbound_id, sorted(set(erased.blob_keys)), erased.sent_keys)


def queue_farewell_job(conn: Connection, confirmed: Confirmed, outbound_id: int) -> None:
    enqueue(conn, FAREWELL_JOB, {"outbound_id": outbound_id, "inbound_id": confirmed.inbound_id,
                                 "blob_keys": confirmed.blob_keys,
                                 "sent_keys": confirmed.sent_keys}, max_attempts=ATTEMPTS)


class PeopleJobs:
    """The jobs of exports and erasures: what the worker runs."""

    def __init__(self, engine: Engine, queue: JobQueue, blobs: BlobStore, outbox: Outbox, composer: Composer, *,
                 envelope_sender: str, journeys_address: str, base_url: str, link_days: float,
                 rules: RouteRules | None = None,
                 locate: Locate | None = None, forget_sent: ForgetSent | None = None) -> None:
        self.engine = engine
        self.queue = queue
        self.blobs = blobs
        self.outbox = outbox
        self.composer = composer
        self.envelope_sender = envelope_sender
        self.journeys_address = journeys_address
        self.base_url = base_url.rstrip("/")
        self.link_for = timedelta(days=link_days)
        self.rules = rules
        self.locate = locate
        self.forget_sent = forget_sent

    def job_kinds(self) -> list[JobKind]:
        return [JobKind(EXPORT_JOB, self.build_export, _gave_up),
                JobKind(EXPORT_EXPIRY_JOB, self.expire_export, _gave_up),
                JobKind(FAREWELL_JOB, self.forget_farewell, _gave_up)]

    def build_export(self, job: Job) -> None:
        """Build the zip, store it, and mail its link, once (a re-run rebuilds the same blob)."""
        export_id = job.payload["export_id"]
        with self.engine.connect() as conn:
            row = people_export.load(conn, export_id)
            data = None if row is None or row.token_hash else people_export.build_zip(
                conn, self.blobs, row.address, rules=self.rules, locate=self.locate)
        if row is None or data is None:  # erased meanwhile, or mailed already
            with self.engine.begin() as conn:
                self.queue.complete(conn, job)
            return
        self.blobs.put(people_export.blob_key(export_id), data)
        with self.engine.begin() as conn:
            expires_at = utcnow() + self.link_for
            token = people_export.mark_ready(conn, export_id, len(data), expires_at)
            self._mail_link(conn, row, token, expires_at, len(data))
            enqueue(conn, EXPORT_EXPIRY_JOB, {"export_id": export_id}, run_after=expires_at, max_attempts=ATTEMPTS)
            failpoints.hit("people.export_before_commit")
            self.queue.complete(conn, job)
        log.info("export %s built (%d bytes) and its link queued", export_id, len(data))

    def expire_export(self, job: Job) -> None:
        with self.engine.begin() as conn:
            people_export.expire(conn, self.blobs, job.payload["export_id"])
            self.queue.complete(conn, job)

    def forget_farewell(self, job: Job) -> None:
        """Once the last mail to an erased person is final: its row and send job go, then their
        blobs and the sender's copies of earlier mail; the job keeps no payload."""
        outbound_id = job.payload["outbound_id"]
        with self.engine.begin() as conn:
            state = conn.execute(sa.select(outbound_messages.c.state)
                                 .where(outbound_messages.c.id == outbound_id)).scalar()
            if state is not None and state not in FINAL:
                self.queue.defer(conn, job, utcnow() + FAREWELL_RECHECK, "the last mail is not sent yet")
                return
            conn.execute(outbound_messages.delete().where(outbound_messages.c.id == outbound_id))
            raw = self._forget_inbound(conn, job.payload.get("inbound_id"))
            for key in [*job.payload.get("blob_keys", []), *raw]:
                self.blobs.delete(key)
            if self.forget_sent is not None:
                self.forget_sent(list(job.payload.get("sent_keys", [])))
            conn.execute(jobs.update().where(jobs.c.id == job.id).values(payload={}))
            self.queue.complete(conn, job)
        compact(self.engine)

    @staticmethod
    def _forget_inbound(conn: Connection, inbound_id: str | None) -> list[str]:
        """The "yes" mail's row, its claim and its jobs (and the send job of the last mail);
        returns its raw blob's key."""
        row = conn.execute(sa.select(inbound_messages.c.blob_key).where(inbound_messages.c.id == inbound_id)).first()
        conn.execute(inbound_dedupe.delete().where(inbound_dedupe.c.inbound_id == inbound_id))
        conn.execute(inbound_messages.delete().where(inbound_messages.c.id == inbound_id))
        doomed = [r.id for r in conn.execute(sa.select(jobs.c.id, jobs.c.payload).where(jobs.c.kind != FAREWELL_JOB))
                  if isinstance(r.payload, dict) and r.payload.get("message_id") == inbound_id]
        if doomed:
            conn.execute(jobs.delete().where(jobs.c.id.in_(doomed)))
        return [row.blob_key] if row is not None and row.blob_key else []

    def _mail_link(self, conn: Connection, row: sa.Row, token: str, expires_at: datetime, size: int) -> None:
        source = None
        if row.source_message_id is not None:
            source = conn.execute(sa.select(inbound_messages.c.from_address, inbound_messages.c.message_id_header)
                                  .where(inbound_messages.c.id == row.source_message_id)).first()
        to = (source.from_address if source is not None and source.from_address else None) or row.address
        in_reply_to = source.message_id_header if source is not None else None
        composed = self.composer.compose(Draft(
            template="journeys/export_ready", to=to, subject="Your data: everything we hold about you",
            stream=STREAM, in_reply_to=in_reply_to, references=(in_reply_to,) if in_reply_to else (),
            context={"url": f"{self.base_url}/x/{token}", "expires_at": expires_at, "size_mb": size / 1_000_000,
                     "journeys_address": self.journeys_address}))
        self.outbox.queue_message(conn, OutboundMessage(
            idempotency_key=f"{EXPORT_LINK}{row.id}", stream=STREAM, recipient=to, envelope_sender=self.envelope_sender,
            subject=composed.subject, message_id=composed.message_id, raw=composed.raw))


def _gave_up(job: Job, why: str) -> None:
    log.error("%s job %s gave up: %s", job.kind, job.id, why)
