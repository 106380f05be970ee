"""Bounded retention of raw mail, orphaned blobs and old duplicate claims (invariant 7).

Three kinds of data would otherwise stay forever:

- the raw message of mail that was refused (nobody will answer it) or is dead (kept so the
  operator can look and retry): deleted once ``refused_after`` / ``dead_after`` have passed
  since its outcome. The row and its reason stay; ``raw_deleted_at`` says the bytes are gone.
- blobs no row needs: a crash between writing a message (or a photo's JPEGs) and committing its
  row leaves them behind. Once older than ``orphan_grace`` (so nothing being stored right now is
  taken for one) they are deleted.
- the claims of ``inbound_dedupe`` (pipeline/duplicates.py), one per handled mail. A claim
  decides for a copy only while ``claim.received_at > copy.received_at - window``: it compares
  the two arrival times, not the time now. So claims are pruned by their ``received_at``
  against the arrival of the oldest copy that may still be decided: a queued message, a dead
  one that still has its raw bytes (an operator may retry it), or one being stored right now
  (its ``received_at`` is taken before its row commits: ``orphan_grace`` covers it). A claim
  older than that arrival minus the window can never decide again, so pruning it changes no
  decision. With the window 0 (``gate.duplicate_window_days = 0``, the check off) nothing reads
  claims and every one is deleted; turning the check on again starts from an empty table.

The other stores of personal data each have a period (``Periods``, from ``retention.*``; None
keeps them): the raw mail of the service mailboxes (unsubscribe@, postmaster@, abuse@, the
operator's), which no purge job will delete; the bytes of our own messages once final; message
rows, inbound and outbound, once their bytes are gone and nothing refers to them; the payload of
each feedback event; audit entries, journey views apart; and, when asked for, journeys nobody has
touched. In catcher mode the catcher's ``.eml`` copies of sent mail go with the bytes of the
same messages (``sent_raw``). :func:`holdings` says what each store holds now and when its oldest item goes
(`waypost retention`).

A sweep works in batches of ``batch_size`` keys or rows, so its memory does not grow with the
store. Several workers may sweep at once: every step is idempotent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.clock import utcnow
from waypost.pipeline.processor import PURGE_RAW_JOB
from waypost.store.blobs import BlobStore
from waypost.store.models import (
    InboundStatus,
    JobState,
    OutboundState,
    audit_log,
    dmarc_records,
    dmarc_reports,
    erasure_requests,
    exports,
    feedback_events,
    inbound_dedupe,
    inbound_messages,
    jobs,
    journey_messages,
    journeys,
    outbound_messages,
    photos,
    tls_report_policies,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 500

# Which keys of a batch a row still needs (the rest are orphans), per blob folder whose owner
# table is known. Folders not named here are never swept.
Owned = Callable[[Connection, list[str]], set[str]]


# Forgets one journey in the caller's transaction: the blob keys to delete once it committed
# (apps/journeys/repository.py delete_journey, handed in by the wiring)
ForgetJourney = Callable[[Connection, int], list[str]]
VIEW_ACTION = "journey.view"  # web/app.py: one entry per page view, with a truncated IP
FINAL_STATES = (OutboundState.SENT, OutboundState.FAILED, OutboundState.SUPPRESSED)


@dataclass(frozen=True)
class Periods:
    """How long each of the other stores keeps an item (``retention.*``); None: kept."""

    service_mail: timedelta | None = None
    sent_raw: timedelta | None = None
    message_rows: timedelta | None = None
    feedback_raw: timedelta | None = None
    audit: timedelta | None = None
    audit_views: timedelta | None = None
    idle_journeys: timedelta | None = None


@dataclass(frozen=True)
class SweepCounts:
    refused_raw: int = 0  # raw messages of refused mail deleted
    dead_raw: int = 0  # raw messages of dead mail deleted
    orphans: int = 0  # blobs no row needed, deleted
    claims: int = 0  # duplicate claims (inbound_dedupe) that can no longer decide, deleted
    reports: int = 0  # DMARC and TLS reports past dmarc.keep_reports_days / keep_failure_reports_days
    service_raw: int = 0  # raw messages of mail to the service mailboxes deleted
    sent_raw: int = 0  # our own messages whose bytes were emptied
    inbound_rows: int = 0  # inbound message rows deleted
    outbound_rows: int = 0  # outbound message rows deleted
    feedback_raw: int = 0  # feedback payloads emptied
    audit: int = 0  # audit entries deleted (journey views included)
    journeys: int = 0  # journeys deleted after retention.idle_journeys_days
    erasure_requests: int = 0  # "delete my data" requests whose wait for a yes ran out
    catcher_files: int = 0  # the catcher's copies of sent mail (.eml files) deleted after sent_raw

    @property
    def total(self) -> int:
        return self.refused_raw + self.dead_raw + self.orphans + self.claims + self.reports + self.personal

    @property
    def personal(self) -> int:
        """What the sweep of the other stores (``Periods``) removed."""
        return (self.service_raw + self.sent_raw + self.inbound_rows + self.outbound_rows + self.feedback_raw
                + self.audit + self.journeys + self.erasure_requests + self.catcher_files)


class RetentionSweeper:
    def __init__(self, engine: Engine, blobs: BlobStore, *, refused_after: timedelta, dead_after: timedelta,
                 orphan_grace: timedelta, duplicate_window: timedelta, batch_size: int = BATCH_SIZE,
                 clock: Callable[[], datetime] = utcnow, reports_after: timedelta | None = None,
                 failure_reports_after: timedelta | None = None, periods: Periods = Periods(),
                 forget_journey: ForgetJourney | None = None, catcher_dir: Path | None = None) -> None:
        self.periods = periods
        self.catcher_dir = catcher_dir  # the catcher's outbox folder, in catcher mode
        self.forget_journey = forget_journey
        # DMARC/TLS reports by age (None: kept); failure reports carry mail headers, so have their own
        self.reports_after = reports_after
        self.failure_reports_after = failure_reports_after or reports_after
        self.engine = engine
        self.blobs = blobs
        self.raw_after = {InboundStatus.REFUSED: refused_after, InboundStatus.DEAD: dead_after}
        self.orphan_grace = orphan_grace
        self.duplicate_window = duplicate_window
        self.batch_size = batch_size
        self.clock = clock

    def sweep(self) -> SweepCounts:
        """One pass over everything due; logs one line when it deleted anything."""
        journeys_gone = self.expire_journeys()  # first: their raw mail and rows follow in this sweep
        counts = SweepCounts(self.expire_raw(InboundStatus.REFUSED), self.expire_raw(InboundStatus.DEAD),
                             self.remove_orphans(), self.prune_claims(), self.expire_reports(),
                             service_raw=self.expire_service_mail(), sent_raw=self.empty_sent_raw(),
                             feedback_raw=self.empty_feedback_raw(), audit=self.expire_audit(),
                             inbound_rows=self.expire_inbound_rows(), outbound_rows=self.expire_outbound_rows(),
                             journeys=journeys_gone, erasure_requests=self.expire_erasure_requests(),
                             catcher_files=self.expire_catcher_files())
        if counts.personal:
            log.info("retention: deleted %d journeys, the raw bytes of %d mails to the service mailboxes, "
                     "the bytes of %d sent messages, %d inbound and %d outbound message rows, %d feedback "
                     "payloads, %d audit entries, %d unconfirmed erasure requests and %d files of the catcher's "
                     "outbox", counts.journeys, counts.service_raw, counts.sent_raw, counts.inbound_rows,
                     counts.outbound_rows, counts.feedback_raw, counts.audit, counts.erasure_requests,
                     counts.catcher_files)
        if counts.total - counts.reports - counts.personal:
            log.info("retention: deleted the raw bytes of %d refused and %d dead messages, %d orphaned blobs "
                     "and %d expired duplicate claims", counts.refused_raw, counts.dead_raw, counts.orphans,
                     counts.claims)
        if counts.reports:
            log.info("retention: deleted %d DMARC and TLS reports past their retention", counts.reports)
        return counts

    def expire_raw(self, status: InboundStatus) -> int:
        """Delete the raw bytes of messages in ``status`` whose outcome is older than its period."""
        cutoff = self.clock() - self.raw_after[status]
        deleted = 0
        while keys := self._mark_raw_deleted(status, cutoff):
            # marked first, deleted after the commit: a crash in between leaves a blob no row
            # needs, which the orphan sweep removes; never a row whose bytes vanished unmarked
            for key in filter(None, keys):  # a row that never had bytes has nothing to delete
                self.blobs.delete(key)
            deleted += len(keys)
        return deleted

    def expire_service_mail(self) -> int:
        """Delete the raw bytes of processed mail that no purge job will delete: mail kept for the
        operator (postmaster@, abuse@, the operator's and verification mailboxes), mail to
        unsubscribe@, and copies of those, once ``service_mail`` has passed since processing."""
        if self.periods.service_mail is None:
            return 0
        cutoff = self.clock() - self.periods.service_mail
        deleted = 0
        while keys := self._mark_raw_deleted(InboundStatus.PROCESSED, cutoff, ~_purge_pending()):
            for key in filter(None, keys):
                self.blobs.delete(key)
            deleted += len(keys)
        return deleted

    def empty_sent_raw(self) -> int:
        """Empty the stored bytes of our own messages in a final state, ``sent_raw`` after they were
        sent (or given up). The row (recipient, subject, state, times) stays for message_rows."""
        if self.periods.sent_raw is None:
            return 0
        table = outbound_messages
        due = (table.c.state.in_(FINAL_STATES), sa.func.length(table.c.raw) > 0,
               sa.func.coalesce(table.c.sent_at, table.c.created_at) < self.clock() - self.periods.sent_raw)
        return self._in_batches(table, due, lambda conn, ids: conn.execute(
            table.update().where(table.c.id.in_(ids), *due).values(raw=b"")).rowcount)

    def empty_feedback_raw(self) -> int:
        """Empty the payload (the provider's notification, the DSN or ARF text) of feedback events
        received longer ago than ``feedback_raw``; what the policy made of it stays."""
        if self.periods.feedback_raw is None:
            return 0
        table = feedback_events
        due = (table.c.raw != "", table.c.received_at < self.clock() - self.periods.feedback_raw)
        return self._in_batches(table, due, lambda conn, ids: conn.execute(
            table.update().where(table.c.id.in_(ids), *due).values(raw="")).rowcount)

    def catcher_files(self) -> list[tuple[Path, os.stat_result]]:
        """The catcher's ``.eml`` copies of sent mail, with their stat; none outside catcher mode."""
        if self.catcher_dir is None or not self.catcher_dir.is_dir():
            return []
        found = []
        for path in self.catcher_dir.glob("*.eml"):
            try:
                found.append((path, path.stat()))
            except FileNotFoundError:  # deleted meanwhile (an erasure)
                continue
        return found

    def expire_catcher_files(self) -> int:
        """Delete the catcher's copies of sent mail ``sent_raw`` after they were written, as the
        stored bytes of the same messages go (catcher mode delivers nothing: the file is the mail)."""
        if self.periods.sent_raw is None:
            return 0
        cutoff = (self.clock() - self.periods.sent_raw).timestamp()
        deleted = 0
        for path, stat in self.catcher_files():
            if stat.st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += 1
        return deleted

    def expire_audit(self) -> int:
        """Delete audit entries older than ``audit``, and journey views older than ``audit_views``."""
        now, table = self.clock(), audit_log
        deleted = 0
        for period, kind in ((self.periods.audit, table.c.action != VIEW_ACTION),
                             (self.periods.audit_views, table.c.action == VIEW_ACTION)):
            if period is not None:
                deleted += self._delete_due(table, (kind, table.c.at < now - period))
        return deleted

    def expire_erasure_requests(self) -> int:
        """Delete "delete my data" requests whose time to be confirmed (journeys.erasure_confirm_days,
        set on the row) is over: each names the person who asked."""
        return self._delete_due(erasure_requests, (erasure_requests.c.expires_at <= self.clock(),))

    def _delete_due(self, table: sa.Table, due: tuple[sa.ColumnElement[bool], ...]) -> int:
        return self._in_batches(table, due, lambda conn, ids: conn.execute(
            table.delete().where(table.c.id.in_(ids), *due)).rowcount)

    def expire_inbound_rows(self) -> int:
        """Delete the rows of inbound mail whose raw bytes went ``message_rows`` ago (or that never
        had any), that no journey, thread or pending job refers to."""
        if self.periods.message_rows is None:
            return 0
        table = inbound_messages
        gone_at = sa.func.coalesce(table.c.raw_deleted_at, table.c.processed_at, table.c.received_at)
        due = (table.c.status != InboundStatus.QUEUED,
               sa.or_(table.c.raw_deleted_at.is_not(None), table.c.blob_key == ""),
               gone_at < self.clock() - self.periods.message_rows,
               table.c.id.not_in(sa.select(journeys.c.source_message_id)),
               table.c.id.not_in(sa.select(journey_messages.c.inbound_message_id)
                                 .where(journey_messages.c.inbound_message_id.is_not(None))),
               ~_job_pending(table.c.id))
        return self._delete_due(table, due)

    def expire_outbound_rows(self) -> int:
        """Delete the rows of our own messages whose bytes are gone, ``message_rows`` after they
        were sent or given up."""
        if self.periods.message_rows is None:
            return 0
        table = outbound_messages
        due = (table.c.state.in_(FINAL_STATES), sa.func.length(table.c.raw) == 0,
               sa.func.coalesce(table.c.sent_at, table.c.created_at) < self.clock() - self.periods.message_rows)
        return self._delete_due(table, due)

    def expire_journeys(self) -> int:
        """Delete journeys nobody changed for ``idle_journeys`` (off unless set): the journey, its
        photos, their images and its raw mail, as the owner's ``delete`` does."""
        if self.periods.idle_journeys is None or self.forget_journey is None:
            return 0
        forget, deleted = self.forget_journey, 0
        due = (journeys.c.updated_at < self.clock() - self.periods.idle_journeys,)
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.execute(sa.select(journeys.c.id).where(*due).limit(self.batch_size)).scalars())
                keys = [key for ident in ids for key in forget(conn, ident)]
            for key in keys:  # after the commit; a crash before leaves orphans for the orphan sweep
                self.blobs.delete(key)
            deleted += len(ids)
            if not ids:
                return deleted

    def _in_batches(self, table: sa.Table, due: tuple[sa.ColumnElement[bool], ...],
                    act: Callable[[Connection, list[object]], int]) -> int:
        """Apply ``act`` to the ids of due rows, one batch per transaction, until none is due."""
        done = 0
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.execute(sa.select(table.c.id).where(*due).limit(self.batch_size)).scalars())
                if not ids:
                    return done
                done += act(conn, ids)

    def _mark_raw_deleted(self, status: InboundStatus, cutoff: datetime,
                          *extra: sa.ColumnElement[bool]) -> list[str]:
        """Set ``raw_deleted_at`` on up to one batch of due rows; the blob keys of those marked."""
        decided_at = sa.func.coalesce(inbound_messages.c.processed_at, inbound_messages.c.received_at)
        due = (inbound_messages.c.status == status, inbound_messages.c.raw_deleted_at.is_(None), *extra)
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(inbound_messages.c.id, inbound_messages.c.blob_key)
                                .where(*due, decided_at < cutoff).limit(self.batch_size)).all()
            now = self.clock()
            # the conditions again: a retry that requeued the message since it was read keeps its bytes
            return [row.blob_key for row in rows
                    if conn.execute(inbound_messages.update().where(inbound_messages.c.id == row.id, *due)
                                    .values(raw_deleted_at=now)).rowcount == 1]

    def expire_reports(self) -> int:
        """Delete DMARC and TLS reports (and their rows) received longer ago than their period."""
        if self.reports_after is None or self.failure_reports_after is None:
            return 0
        now, kind = self.clock(), dmarc_reports.c.kind
        due = sa.or_(sa.and_(kind == "failure", dmarc_reports.c.received_at < now - self.failure_reports_after),
                     sa.and_(kind != "failure", dmarc_reports.c.received_at < now - self.reports_after))
        deleted = 0
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.execute(sa.select(dmarc_reports.c.id).where(due).limit(self.batch_size)).scalars())
                if not ids:
                    return deleted
                for child in (dmarc_records, tls_report_policies):
                    conn.execute(child.delete().where(child.c.report_pk.in_(ids)))
                deleted += conn.execute(dmarc_reports.delete().where(dmarc_reports.c.id.in_(ids))).rowcount

    def remove_orphans(self) -> int:
        """Delete blobs older than the grace period that no row needs."""
        cutoff = self.clock() - self.orphan_grace
        removed = 0
        for folder, owned in OWNERS.items():
            old = (key for key, written in self.blobs.iter_keys(folder) if written < cutoff)
            for batch in _batches(old, self.batch_size):
                with self.engine.connect() as conn:
                    needed = owned(conn, batch)
                orphans = [key for key in batch if key not in needed]
                for key in orphans:
                    self.blobs.delete(key)
                removed += len(orphans)
        return removed

    def prune_claims(self) -> int:
        """Delete the duplicate claims no copy can be decided by any more (see the module's doc)."""
        expired: tuple[sa.ColumnElement[bool], ...] = ()
        if self.duplicate_window > timedelta(0):
            with self.engine.connect() as conn:
                oldest_pending = conn.execute(sa.select(sa.func.min(inbound_messages.c.received_at)).where(
                    sa.or_(inbound_messages.c.status == InboundStatus.QUEUED,
                           sa.and_(inbound_messages.c.status == InboundStatus.DEAD,
                                   inbound_messages.c.raw_deleted_at.is_(None))))).scalar()
            horizon = self.clock() - self.orphan_grace
            if oldest_pending is not None:
                horizon = min(horizon, oldest_pending)
            # duplicates.py: a claim decides for a copy only while claim.received_at > copy's - window
            expired = (inbound_dedupe.c.received_at <= horizon - self.duplicate_window,)
        deleted = 0
        while True:
            with self.engine.begin() as conn:
                keys = list(conn.execute(sa.select(inbound_dedupe.c.key).where(*expired)
                                         .limit(self.batch_size)).scalars())
                if not keys:
                    return deleted
                # the condition again: a claim taken over since it was read has a new received_at
                deleted += conn.execute(inbound_dedupe.delete()
                                        .where(inbound_dedupe.c.key.in_(keys), *expired)).rowcount


@dataclass(frozen=True)
class Holding:
    """One store of personal data as it stands: `waypost retention` prints one line of each."""

    store: str
    holds: str
    rows: int
    bytes: int | None  # None: not measured (rows of a few short fields)
    setting: str  # the key, as in docs/configuration.md
    period: timedelta | None  # None: kept until someone deletes it
    next_goes: datetime | None  # when the oldest item goes; None: nothing held, or kept

    def to_json(self) -> dict[str, object]:
        return {"store": self.store, "holds": self.holds, "rows": self.rows, "bytes": self.bytes,
                "setting": self.setting,
                "period_days": None if self.period is None else self.period.total_seconds() / 86400,
                "next_goes": None if self.next_goes is None else self.next_goes.isoformat()}


def holdings(sweeper: RetentionSweeper) -> list[Holding]:
    """What each store holds now, how much, its period and when its oldest item goes."""
    periods, inbound, out = sweeper.periods, inbound_messages, outbound_messages
    held_raw = (inbound.c.raw_deleted_at.is_(None), inbound.c.blob_key != "")
    decided_at = sa.func.coalesce(inbound.c.processed_at, inbound.c.received_at)
    sent_at = sa.func.coalesce(out.c.sent_at, out.c.created_at)
    raw_gone_at = sa.func.coalesce(inbound.c.raw_deleted_at, inbound.c.processed_at, inbound.c.received_at)
    purge_due = (sa.select(sa.func.count(), sa.func.min(jobs.c.run_after))
                 .where(jobs.c.kind == PURGE_RAW_JOB, jobs.c.state.in_((JobState.QUEUED, JobState.RUNNING))))

    def measure(conn: Connection, table: sa.Table, size: sa.ColumnElement[int] | None, at: sa.ColumnElement[datetime],
                *where: sa.ColumnElement[bool]) -> tuple[int, int | None, datetime | None]:
        size_sum = sa.func.coalesce(sa.func.sum(size), 0) if size is not None else sa.literal(0)
        row = conn.execute(sa.select(sa.func.count(), size_sum, sa.func.min(at)).select_from(table).where(*where)).one()
        return int(row[0]), (int(row[1]) if size is not None else None), row[2]

    def holding(store: str, holds: str, setting: str, period: timedelta | None,
                measured: tuple[int, int | None, datetime | None]) -> Holding:
        rows, size, oldest = measured
        goes = None if period is None or oldest is None else oldest + period
        return Holding(store, holds, rows, size, setting, period, goes)

    with sweeper.engine.connect() as conn:
        raw_of = {status: measure(conn, inbound, inbound.c.size, decided_at, inbound.c.status == status, *held_raw)
                  for status in (InboundStatus.REFUSED, InboundStatus.DEAD)}
        service = measure(conn, inbound, inbound.c.size, decided_at, inbound.c.status == InboundStatus.PROCESSED,
                          *held_raw, ~_purge_pending())
        awaiting = measure(conn, inbound, inbound.c.size, decided_at, inbound.c.status == InboundStatus.PROCESSED,
                           *held_raw, _purge_pending())
        purges, first_purge = conn.execute(purge_due).one()
        found = [
            holding("refused mail", "raw bytes of mail refused by the gate", "retention.refused_raw_days",
                    sweeper.raw_after[InboundStatus.REFUSED], raw_of[InboundStatus.REFUSED]),
            holding("dead mail", "raw bytes of mail whose processing gave up", "retention.dead_raw_days",
                    sweeper.raw_after[InboundStatus.DEAD], raw_of[InboundStatus.DEAD]),
            Holding("mail awaiting its purge", "raw bytes of journeys, bounce and report mail, with the originals",
                    awaiting[0], awaiting[1], "journeys.keep_originals_days, feedback.keep_reports_days",
                    None, first_purge if purges else None),
            holding("service mailboxes", "raw mail to unsubscribe@, postmaster@, abuse@ and the operator",
                    "retention.service_mail_days", periods.service_mail, service),
            holding("sent messages", "the bytes of our own messages", "retention.sent_raw_days", periods.sent_raw,
                    measure(conn, out, sa.func.length(out.c.raw), sent_at, out.c.state.in_(FINAL_STATES),
                            sa.func.length(out.c.raw) > 0)),
            holding("inbound messages", "rows: sender, recipients, subject, times, outcome",
                    "retention.message_rows_days", periods.message_rows,
                    _oldest_of(measure(conn, inbound, None, decided_at),
                               measure(conn, inbound, None, raw_gone_at, inbound.c.status != InboundStatus.QUEUED,
                                       sa.or_(inbound.c.raw_deleted_at.is_not(None), inbound.c.blob_key == "")))),
            holding("outbound messages", "rows: recipient, subject, state, times", "retention.message_rows_days",
                    periods.message_rows,
                    _oldest_of(measure(conn, out, None, sent_at),
                               measure(conn, out, None, sent_at, out.c.state.in_(FINAL_STATES),
                                       sa.func.length(out.c.raw) == 0))),
            holding("feedback payloads", "bounce and complaint notifications as received",
                    "retention.feedback_raw_days", sweeper.periods.feedback_raw,
                    measure(conn, feedback_events, sa.func.length(feedback_events.c.raw),
                            feedback_events.c.received_at, feedback_events.c.raw != "")),
            holding("audit log", "who did what, failed logins, deleted links", "retention.audit_days",
                    periods.audit, measure(conn, audit_log, None, audit_log.c.at, audit_log.c.action != VIEW_ACTION)),
            holding("journey views", "one entry per page view, with a truncated IP", "retention.audit_views_days",
                    periods.audit_views,
                    measure(conn, audit_log, None, audit_log.c.at, audit_log.c.action == VIEW_ACTION)),
            holding("journeys", "journeys with their photos' places, times and images",
                    "retention.idle_journeys_days", periods.idle_journeys,
                    measure(conn, journeys, None, journeys.c.updated_at)),
            holding("DMARC and TLS reports", "reports from mail providers; failure reports quote mail headers",
                    "dmarc.keep_reports_days", sweeper.reports_after,
                    measure(conn, dmarc_reports, None, dmarc_reports.c.received_at)),
        ]
        rows, size, first_expiry = measure(conn, erasure_requests, None, erasure_requests.c.expires_at)
        found.append(Holding("erasure requests", "\"delete my data\" requests waiting for their yes", rows, size,
                             "journeys.erasure_confirm_days", None, first_expiry))
        if sweeper.catcher_dir is not None:
            files = sweeper.catcher_files()
            oldest = min((stat.st_mtime for _, stat in files), default=None)
            found.append(holding("catcher outbox", "replies kept as files, since catcher mode delivers nothing",
                                 "retention.sent_raw_days", periods.sent_raw,
                                 (len(files), sum(stat.st_size for _, stat in files),
                                  None if oldest is None else datetime.fromtimestamp(oldest, UTC))))
        # exports carry their own expiry (apps/people_export.py deletes them): listed, not swept here
        rows, size, first_expiry = measure(conn, exports, exports.c.size, exports.c.expires_at)
        found.append(Holding("exports", "zips of everything held about a person, behind an expiring link", rows,
                             size, "journeys.export_link_days", None, first_expiry))
    return found


def _oldest_of(total: tuple[int, int | None, datetime | None],
               due: tuple[int, int | None, datetime | None]) -> tuple[int, int | None, datetime | None]:
    """All rows of a table, with the oldest moment among those that can already expire."""
    return total[0], total[1], due[2]


def _job_pending(message_id: sa.ColumnElement[str], kind: str | None = None) -> sa.Exists:
    """A job not yet done or dead whose payload names the message (inbound, purge-raw)."""
    conditions = [jobs.c.state.in_((JobState.QUEUED, JobState.RUNNING)),
                  jobs.c.payload["message_id"].as_string() == message_id]
    if kind is not None:
        conditions.append(jobs.c.kind == kind)
    return sa.exists().where(*conditions)


def _purge_pending() -> sa.Exists:
    """A purge job will delete the message's raw bytes (journeys, bounce and DMARC mail)."""
    return _job_pending(inbound_messages.c.id, PURGE_RAW_JOB)


def _inbound_owned(conn: Connection, keys: list[str]) -> set[str]:
    """Raw messages whose row exists and still has them (``raw_deleted_at`` unset). Looked up
    by the id in the file name (the primary key); a name of another shape by its blob key."""
    by_id = {key.rsplit("/", 1)[-1].removesuffix(".eml"): key for key in keys}
    ids = [ident for ident in by_id if _is_message_id(ident)]
    others = [key for ident, key in by_id.items() if not _is_message_id(ident)]
    table = inbound_messages
    query = sa.select(table.c.blob_key).where(table.c.raw_deleted_at.is_(None))
    found = set(conn.execute(query.where(table.c.id.in_(ids))).scalars()) if ids else set()
    if others:
        found |= set(conn.execute(query.where(table.c.blob_key.in_(others))).scalars())
    return found


def _photos_owned(conn: Connection, keys: list[str]) -> set[str]:
    """Photo JPEGs some photo row names (one file may serve the same photo in several journeys)."""
    rows = conn.execute(sa.select(photos.c.thumb_key, photos.c.display_key)
                        .where(sa.or_(photos.c.thumb_key.in_(keys), photos.c.display_key.in_(keys))))
    return {key for row in rows for key in row if key is not None}


def _is_message_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


OWNERS: dict[str, Owned] = {"inbound": _inbound_owned, "photos": _photos_owned}
