"""What delivery feedback does: the one place that turns events into suppressions, review
items and reputation counts. Batched: a whole SQS receive (or one bounce mail) is applied in
the caller's transaction, with a handful of statements however many events it holds.

Every bounce carries a reason (``reasons``); the reason decides before the bounce type does:

| event | outcome |
|---|---|
| bounce about our sending (authfailure, blocked, requireptr, ...) | review, never suppressed; counts as "setup" |
| bounce proving the address dead (userunknown, hostunknown, hasmoved, notaccept) | suppressed (BOUNCE); counted |
| SES Permanent bounce with no more precise reason (General, Suppressed) | suppressed, as SES judged |
| Permanent / OnAccountSuppressionList | suppressed; not counted (SES did not send, REFERENCE-SES §1a) |
| transient reason (mailboxfull, suspend, expired, filtered, ...) | scored: the limit-th in the window suppresses |
| the message was refused (mesgtoobig, exceedlimit, virusdetected; SES MessageTooLarge, ...) | recorded |
| Undetermined bounce with no reason | review list; nothing suppressed |
| complaint (abuse, fraud, virus, other, none) | suppressed (COMPLAINT), leave hook (journeys: off the allowlist) |
| complaint not-spam | recorded; auth-failure (a DMARC failure report, RFC 6591): review |
| complaint opt-out, SES subscription opt-out | suppressed (UNSUBSCRIBE), leave hook; not counted |
| delivery | clears the address's transient-bounce score |
| delay, reject, rendering failure | recorded (reject and rendering failure logged as errors) |
| auto-reply, send, open, click | ignored (send/open/click are not stored) |

Trust: SES events arrive signed (SNS) or through an IAM-protected queue and are taken as
they are. A DSN or ARF report arrives by mail, where anyone can write anything, so it acts
only through one of our outbound rows (its VERP address, or our Message-ID quoted in it) and
then only on that row's recipient; an unlinked report goes to the review list. Mailbox
simulator addresses are never suppressed or counted, as SES does not count them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from waypost.config import FeedbackSettings
from waypost.feedback.events import BounceType, FeedbackEvent, Kind, Source
from waypost.feedback.reasons import DEAD, MESSAGE, advice
from waypost.feedback.reasons import SETUP as SETUP_FAMILY
from waypost.feedback.reasons import family as reason_family
from waypost.outbound import suppression
from waypost.outbound.unsubscribe import StreamHook  # the leave hooks, run on complaints and opt-outs
from waypost.store.driver import DriverInList, DriverStatement
from waypost.store.models import bounce_scores, feedback_events, outbound_messages, utcnow

log = logging.getLogger(__name__)

SUPPRESSED, SCORED, REVIEW, RECORDED, IGNORED = "suppressed", "scored", "review", "recorded", "ignored"
SETUP = "setup"  # counts_as for bounces about our sending: the "sending setup and reputation" signal
NOT_STORED = (Kind.SEND, Kind.OPEN, Kind.CLICK)
CONTENT_SUBTYPES = ("MessageTooLarge", "ContentRejected", "AttachmentRejected")
NOT_COMPLAINTS = ("not-spam",)
OPT_OUTS = ("opt-out", "unsubscribe")
SIMULATOR_DOMAIN = "simulator.amazonses.com"
# `waypost drill`'s local simulator mails only this reserved domain (RFC 2606 .invalid): its
# bounces and complaints are checked for their classification, never suppress or count
DRILL_DOMAIN = "drill.waypost.invalid"
ON_ACCOUNT_LIST = "OnAccountSuppressionList"
_AT_SIMULATOR, _AT_DRILL = "@" + SIMULATOR_DOMAIN, "@" + DRILL_DOMAIN
_SEVERITY = {BounceType.PERMANENT: 3, BounceType.TRANSIENT: 2, BounceType.UNDETERMINED: 1}

VerpReader = Callable[[str], "int | None"]


@runtime_checkable
class BatchHook(Protocol):
    """A leave hook that also takes a batch's addresses in one call (``Allowlist.forget``)."""

    def __call__(self, conn: Connection, address: str, /) -> object: ...

    def many(self, conn: Connection, addresses: Sequence[str], /) -> object: ...


@dataclass
class Applied:
    """What one batch did."""

    received: int = 0
    duplicates: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    suppressed: set[str] = field(default_factory=set)  # newly suppressed addresses

    def __str__(self) -> str:
        parts = [f"{n} {o}" for o, n in sorted(self.outcomes.items())]
        return f"{self.received} events ({self.duplicates} duplicates): {', '.join(parts) or 'nothing new'}"


@dataclass(frozen=True)
class _Link:
    id: int
    recipient: str
    stream: str


@dataclass
class _Decision:
    event: FeedbackEvent
    outcome: str
    link: _Link | None = None
    note: str | None = None
    counts_as: str | None = None
    suppress: suppression.Reason | None = None
    expires_at: datetime | None = None
    leave: bool = False  # run the stream's leave hook

    @property
    def address(self) -> str | None:
        return self.event.recipient


class FeedbackPolicy:
    def __init__(self, settings: FeedbackSettings, *, verp_outbound_id: VerpReader | None = None,
                 hooks: dict[str, StreamHook] | None = None) -> None:
        self.settings = settings
        self.verp_outbound_id = verp_outbound_id
        self.hooks = dict(hooks or {})

    def apply(self, conn: Connection, events: Sequence[FeedbackEvent]) -> Applied:
        """Apply ``events`` inside the caller's transaction. Idempotent: an event seen before
        (same dedupe key) changes nothing, so a redelivered batch is harmless."""
        applied = Applied(received=len(events))
        fresh = self._fresh(conn, events, applied)
        links = self._links(conn, fresh)
        decisions = [self._decide(event, link) for event, link in self._per_row(fresh, links, applied)]
        self._score_transients(conn, decisions)
        self._clear_scores(conn, [d.address for d in decisions if d.event.kind == Kind.DELIVERY and d.address])
        applied.suppressed = self._suppress(conn, decisions)
        self._leave(conn, decisions)
        self._store(conn, decisions)
        applied.outcomes.update(d.outcome for d in decisions)
        for d in decisions:
            if d.event.kind in (Kind.REJECT, Kind.RENDERING_FAILURE):
                log.error("%s for %s (%s): %s", d.event.kind, d.address, d.event.provider_message_id,
                          d.event.diagnostic)
        return applied

    # -- steps ------------------------------------------------------------------------------

    def _fresh(self, conn: Connection, events: Sequence[FeedbackEvent], applied: Applied) -> list[FeedbackEvent]:
        """Events not seen before (in the database or earlier in this batch)."""
        stored = [e for e in events if e.kind not in NOT_STORED]
        if len(stored) < len(events):
            applied.outcomes[IGNORED] += len(events) - len(stored)
        keys = [e.dedupe_key for e in stored]
        seen: set[str] = {key for (key,) in _SEEN.fetch(conn, keys)}
        fresh = []
        for event, key in zip(stored, keys, strict=True):
            if key in seen:
                applied.duplicates += 1
                continue
            seen.add(key)
            fresh.append(event)
        return fresh

    def _links(self, conn: Connection, events: list[FeedbackEvent]) -> dict[tuple[str, str], _Link]:
        """Our outbound rows, by ("provider", id), ("header", Message-ID) and ("verp", address).
        ``_link_of`` tries the provider id first: an event linked by it needs no other lookup."""
        links: dict[tuple[str, str], _Link] = {}
        self._look_up(conn, links, "provider", {e.provider_message_id for e in events if e.provider_message_id})
        rest = [e for e in events if not e.provider_message_id or ("provider", e.provider_message_id) not in links]
        verp_ids: dict[str, int] = {}
        for e in rest:
            if e.verp_address and self.verp_outbound_id is not None:
                number = self.verp_outbound_id(e.verp_address)
                if number is not None:
                    verp_ids[e.verp_address] = number
        self._look_up(conn, links, "header",
                      {form for e in rest if e.message_id_header for form in _header_forms(e.message_id_header)})
        self._look_up(conn, links, "id", set(verp_ids.values()))
        for address, number in verp_ids.items():
            if ("id", str(number)) in links:
                links[("verp", address)] = links[("id", str(number))]
        return links

    @staticmethod
    def _look_up(conn: Connection, links: dict[tuple[str, str], _Link], kind: str, values: set[Any]) -> None:
        for number, recipient, stream, key in _LINKS[kind].fetch(conn, list(values)):
            links[(kind, _norm_header(str(key)) if kind == "header" else str(key))] = _Link(number, recipient, stream)

    def _per_row(self, events: list[FeedbackEvent], links: dict[tuple[str, str], _Link],
                 applied: Applied) -> Iterable[tuple[FeedbackEvent, _Link | None]]:
        """A mail-borne report acts once per outbound row, on that row's recipient: the event
        naming our recipient, else the most severe one (a forwarded address bounced). Each
        with its outbound row, looked up once."""
        by_row: dict[int, list[FeedbackEvent]] = {}
        for event in events:
            link = _link_of(event, links)
            if event.source == Source.SES or link is None or event.kind == Kind.AUTO_REPLY:
                yield event, link
                continue
            by_row.setdefault(link.id, []).append(event)
        for row_events in by_row.values():
            link = _link_of(row_events[0], links)
            assert link is not None
            chosen = _choose(row_events, link.recipient)
            for other in row_events:
                if other is not chosen:
                    applied.outcomes[IGNORED] += 1
            # the same row as the chosen event's own link: the events were grouped by it
            yield (chosen if chosen.recipient and chosen.recipient.lower() == link.recipient.lower() else
                   replace(chosen, recipient=link.recipient)), link

    def _decide(self, event: FeedbackEvent, link: _Link | None) -> _Decision:
        decision = _Decision(event, RECORDED, link)
        if event.source != Source.SES and link is None and event.kind != Kind.AUTO_REPLY:
            decision.outcome, decision.note = REVIEW, "not linked to a message we sent: nothing changed"
            return decision
        recipient = event.recipient.lower() if event.recipient else ""
        if recipient.endswith(_AT_SIMULATOR):
            decision.note = "mailbox simulator: never suppressed or counted"
            return decision
        if recipient.endswith(_AT_DRILL):
            decision.note = "drill address: never suppressed or counted"
            return decision
        rule = _RULES.get(event.kind)
        if rule is not None:
            rule(self, decision)
        if decision.suppress is not None and not event.recipient:
            decision.outcome, decision.suppress, decision.note = REVIEW, None, "no recipient named"
        return decision

    def _bounce(self, d: _Decision) -> None:
        e = d.event
        verdict = bounce_verdict(e)
        if verdict == SETUP:
            d.outcome, d.counts_as = REVIEW, SETUP
            why = advice(e.reason or "")
            d.note = f"{e.reason}: about our sending, not the address (never suppressed); check {why}"
        elif verdict == SUPPRESSED:
            d.outcome, d.suppress = SUPPRESSED, suppression.Reason.BOUNCE
            d.counts_as = None if e.bounce_subtype == ON_ACCOUNT_LIST else "bounce"
        elif verdict == RECORDED:
            d.note = "the message was refused, not the address"
        elif verdict == SCORED:
            d.outcome = SCORED
        else:
            d.outcome, d.note = REVIEW, "undetermined bounce: check the diagnostic"

    def _complaint(self, d: _Decision) -> None:
        kind = (d.event.feedback_type or "").lower()
        if kind in NOT_COMPLAINTS:
            d.note = "the recipient marked our mail as not spam"
        elif kind == "auth-failure":
            d.outcome, d.note = REVIEW, "authentication failure report (RFC 6591): check SPF, DKIM and DMARC"
        elif kind in OPT_OUTS:
            d.outcome, d.suppress, d.leave = SUPPRESSED, suppression.Reason.UNSUBSCRIBE, True
        else:
            d.outcome, d.suppress, d.leave = SUPPRESSED, suppression.Reason.COMPLAINT, True
            d.counts_as = None if d.event.complaint_subtype == ON_ACCOUNT_LIST else "complaint"

    def _subscription(self, d: _Decision) -> None:
        if d.event.unsubscribe:
            d.outcome, d.suppress, d.leave = SUPPRESSED, suppression.Reason.UNSUBSCRIBE, True

    def _auto_reply(self, d: _Decision) -> None:
        d.outcome, d.note = IGNORED, "auto-reply (RFC 3834): not a bounce"

    def _score_transients(self, conn: Connection, decisions: list[_Decision]) -> None:
        """A sliding window with a decaying score: one transient bounce counts per address and
        day, a counted bounce stops counting once it is older than the window, and the
        ``soft_bounce_limit``-th one still counting suppresses the address for a while."""
        scored = [d for d in decisions if d.outcome == SCORED and d.address]
        if not scored:
            return
        keys = sorted({suppression.suppression_key(d.address) for d in scored if d.address})
        state: dict[str, list[datetime]] = {}
        for address, bounces in _SCORES.fetch(conn, keys):
            state[address] = [datetime.fromisoformat(at) for at in bounces]
        now, window, limit = utcnow(), timedelta(days=self.settings.soft_bounce_window_days), \
            self.settings.soft_bounce_limit
        for d in scored:
            key = suppression.suppression_key(d.address or "")
            recent = [at for at in state.get(key, []) if now - at < window]
            if not recent or recent[-1].date() != now.date():
                recent.append(now)
            d.note = f"transient bounce {len(recent)} of {limit} within {self.settings.soft_bounce_window_days:g} days"
            if len(recent) >= limit:
                d.outcome, d.suppress = SUPPRESSED, suppression.Reason.BOUNCE
                d.expires_at = now + timedelta(days=self.settings.soft_suppression_days)
                recent = []
            state[key] = recent
        _FORGET_SCORES.run(conn, list(state))
        kept = [{"address": key, "score": len(times), "bounces": [at.isoformat() for at in times],
                 "last_at": times[-1]} for key, times in state.items() if times]
        _INSERT_SCORES.insert_many(conn, kept)

    def _clear_scores(self, conn: Connection, addresses: list[str]) -> None:
        _FORGET_SCORES.run(conn, sorted({suppression.suppression_key(a) for a in addresses}))

    def _suppress(self, conn: Connection, decisions: list[_Decision]) -> set[str]:
        entries = [suppression.NewEntry(d.address, d.suppress, d.event.source.value, _detail(d), d.expires_at)
                   for d in decisions if d.suppress is not None and d.address]
        return suppression.add_many(conn, entries)

    def _leave(self, conn: Connection, decisions: list[_Decision]) -> None:
        """Each leaving address through its stream's hook (every hook when the stream is not
        known); a hook that takes a batch (``BatchHook``) gets all of its addresses at once."""
        by_hook: dict[int, tuple[StreamHook, list[str]]] = {}
        for d in decisions:
            if not d.leave or not d.address:
                continue
            stream = (d.link.stream if d.link else None) or d.event.stream
            hooks = [self.hooks[stream]] if stream in self.hooks else list(self.hooks.values())
            for hook in hooks:
                by_hook.setdefault(id(hook), (hook, []))[1].append(d.address)
        for hook, addresses in by_hook.values():
            if isinstance(hook, BatchHook):
                hook.many(conn, addresses)
            else:
                for address in addresses:
                    hook(conn, address)

    def _store(self, conn: Connection, decisions: list[_Decision]) -> None:
        if not decisions:
            return
        now = utcnow()
        _INSERT_EVENTS.insert_values(conn, [_row(d, now) for d in decisions])


# statements compiled once per dialect and IN-list length, run on the driver: an expanding
# parameter is rendered and bound anew on every execution (a batch makes a handful of these,
# each with up to 500 values), which cost more than SQLite's lookups
_SEEN = DriverInList(feedback_events.c.dedupe_key, lambda among: sa.select(feedback_events.c.dedupe_key).where(among))


def _links_by(column: sa.Column[Any]) -> DriverInList:
    return DriverInList(column, lambda among: sa.select(outbound_messages.c.id, outbound_messages.c.recipient,
                                                        outbound_messages.c.stream, column.label("key")).where(among))


_LINKS = {kind: _links_by(column) for kind, column in (("provider", outbound_messages.c.provider_message_id),
                                                       ("header", outbound_messages.c.message_id_header),
                                                       ("id", outbound_messages.c.id))}
_SCORES = DriverInList(bounce_scores.c.address,
                       lambda among: sa.select(bounce_scores.c.address, bounce_scores.c.bounces).where(among))
_FORGET_SCORES = DriverInList(bounce_scores.c.address, lambda among: bounce_scores.delete().where(among))

_INSERT_SCORES = DriverStatement(bounce_scores.insert(), ("address", "score", "bounces", "last_at"))
# one row per event: on the driver, as SQLAlchemy's parameter handling per row cost more than the insert
_INSERT_EVENTS = DriverStatement(feedback_events.insert(), (
    "dedupe_key", "kind", "source", "recipient", "outbound_id", "stream", "bounce_type", "bounce_subtype", "status",
    "feedback_type", "diagnostic", "outcome", "note", "counts_as", "occurred_at", "received_at",
    "provider_message_id", "raw", "reason"))

_RULES: dict[Kind, Callable[[FeedbackPolicy, _Decision], None]] = {
    Kind.BOUNCE: FeedbackPolicy._bounce,
    Kind.COMPLAINT: FeedbackPolicy._complaint,
    Kind.SUBSCRIPTION: FeedbackPolicy._subscription,
    Kind.AUTO_REPLY: FeedbackPolicy._auto_reply,
}


def bounce_verdict(event: FeedbackEvent) -> str:
    """What a bounce does, from its reason first (``reasons``) and its bounce type second:
    SUPPRESSED only for a dead address (or SES's own Permanent verdict with no other reason),
    SETUP for our own fault (never suppressed, counted for the setup alarm), RECORDED when the
    message was the problem, SCORED for a transient failure, REVIEW when nothing is known."""
    family = reason_family(event.reason) if event.reason else None
    if family == SETUP_FAMILY:
        return SETUP
    permanent = event.bounce_type == BounceType.PERMANENT
    if permanent and (family in (None, DEAD) or event.reason == "undefined"):
        return SUPPRESSED
    content = event.bounce_subtype in CONTENT_SUBTYPES and event.bounce_type != BounceType.UNDETERMINED
    if family == MESSAGE or content:
        return RECORDED
    if event.bounce_type == BounceType.TRANSIENT or permanent:
        return SCORED
    return REVIEW


# what the policy does, in the words of `waypost feedback explain`
_ACTIONS = {SUPPRESSED: "suppress", SCORED: "score", SETUP: "alarm", RECORDED: "record", REVIEW: "record",
            IGNORED: "ignore"}
_IGNORED_KINDS = (Kind.AUTO_REPLY, *NOT_STORED)


def explain_action(event: FeedbackEvent) -> str:
    """What ``apply`` would do with this event if it is linked to one of our messages, without
    a database: suppress, score, alarm (counted toward the setup alarm), record or ignore."""
    if event.kind in _IGNORED_KINDS:
        return "ignore"
    if event.recipient and event.recipient.lower().endswith(("@" + SIMULATOR_DOMAIN, "@" + DRILL_DOMAIN)):
        return "record"
    if event.kind == Kind.BOUNCE:
        return _ACTIONS[bounce_verdict(event)]
    kind = (event.feedback_type or "").lower()
    if event.kind == Kind.COMPLAINT:
        return "record" if kind in NOT_COMPLAINTS or kind == "auth-failure" else "suppress"
    return "suppress" if event.kind == Kind.SUBSCRIPTION and event.unsubscribe else "record"


def _row(d: _Decision, now: datetime) -> tuple[object, ...]:
    """The event's feedback_events row, its values in _INSERT_EVENTS' column order."""
    e, link = d.event, d.link
    return (
        e.dedupe_key,  # dedupe_key
        e.kind.value,  # kind
        e.source.value,  # source
        (e.recipient or None) and e.recipient[:320],  # recipient
        link.id if link else None,  # outbound_id
        (link.stream if link else None) or e.stream,  # stream
        e.bounce_type,  # bounce_type
        (e.bounce_subtype or None) and e.bounce_subtype[:32],  # bounce_subtype
        (e.status or "")[:16] or None,  # status
        (e.feedback_type or None) and e.feedback_type[:32],  # feedback_type
        e.diagnostic,  # diagnostic
        d.outcome,  # outcome
        d.note,  # note
        d.counts_as,  # counts_as
        e.occurred_at,  # occurred_at
        now,  # received_at
        (e.provider_message_id or None) and e.provider_message_id[:255],  # provider_message_id
        e.raw,  # raw
        (e.reason or None) and e.reason[:24],  # reason
    )


def _detail(d: _Decision) -> str:
    e = d.event
    what = "/".join(str(part) for part in (e.bounce_type, e.bounce_subtype) if part) or e.feedback_type or e.kind
    parts = [str(what), e.status or "", (e.diagnostic or "")[:300], d.note or ""]
    return " ".join(part for part in parts if part)[:1000]


def _link_of(event: FeedbackEvent, links: dict[tuple[str, str], _Link]) -> _Link | None:
    candidates = (("provider", event.provider_message_id), ("verp", event.verp_address),
                  ("header", _norm_header(event.message_id_header) if event.message_id_header else None))
    for kind, key in candidates:
        if key and (kind, key) in links:
            return links[(kind, key)]
    return None


def _choose(events: list[FeedbackEvent], recipient: str) -> FeedbackEvent:
    named = [e for e in events if e.recipient and e.recipient.lower() == recipient.lower()]
    pool = named or events
    return max(pool, key=lambda e: (e.kind == Kind.BOUNCE, _SEVERITY.get(e.bounce_type, 0) if e.bounce_type else 0,
                                    e.kind == Kind.COMPLAINT))


def _norm_header(value: str) -> str:
    return value.strip().strip("<>").strip()


def _header_forms(value: str) -> set[str]:
    bare = _norm_header(value)
    return {bare, f"<{bare}>"} if bare else set()

