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

A sweep works in batches of ``batch_size`` keys or rows, so its memory does not grow with the
store. Several workers may sweep at once: every step is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from waypost.clock import utcnow
from waypost.store.blobs import BlobStore
from waypost.store.models import (
    InboundStatus,
    dmarc_records,
    dmarc_reports,
    inbound_dedupe,
    inbound_messages,
    photos,
    tls_report_policies,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 500

# Which keys of a batch a row still needs (the rest are orphans), per blob folder whose owner
# table is known. Folders not named here are never swept.
Owned = Callable[[Connection, list[str]], set[str]]


@dataclass(frozen=True)
class SweepCounts:
    refused_raw: int = 0  # raw messages of refused mail deleted
    dead_raw: int = 0  # raw messages of dead mail deleted
    orphans: int = 0  # blobs no row needed, deleted
    claims: int = 0  # duplicate claims (inbound_dedupe) that can no longer decide, deleted
    reports: int = 0  # DMARC and TLS reports past dmarc.keep_reports_days / keep_failure_reports_days

    @property
    def total(self) -> int:
        return self.refused_raw + self.dead_raw + self.orphans + self.claims + self.reports


class RetentionSweeper:
    def __init__(self, engine: Engine, blobs: BlobStore, *, refused_after: timedelta, dead_after: timedelta,
                 orphan_grace: timedelta, duplicate_window: timedelta, batch_size: int = BATCH_SIZE,
                 clock: Callable[[], datetime] = utcnow, reports_after: timedelta | None = None,
                 failure_reports_after: timedelta | None = None) -> None:
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
        counts = SweepCounts(self.expire_raw(InboundStatus.REFUSED), self.expire_raw(InboundStatus.DEAD),
                             self.remove_orphans(), self.prune_claims(), self.expire_reports())
        if counts.total - counts.reports:
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

    def _mark_raw_deleted(self, status: InboundStatus, cutoff: datetime) -> list[str]:
        """Set ``raw_deleted_at`` on up to one batch of due rows; the blob keys of those marked."""
        decided_at = sa.func.coalesce(inbound_messages.c.processed_at, inbound_messages.c.received_at)
        due = (inbound_messages.c.status == status, inbound_messages.c.raw_deleted_at.is_(None))
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
