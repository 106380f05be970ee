"""Feedback intake throughput and the suppression check's latency, against baselines measured in the same run.

    python benchmarks/feedback.py            # full: 20,000 events per run, 1,000,000 suppressed; about 3 minutes
    python benchmarks/feedback.py --quick    # CI: 4,000 events per run, 200,000 suppressed; under 30 s
    python benchmarks/feedback.py --json out.json

Throughput is SES notifications applied per second, from their JSON text to the commit
(parse_ses_notification + FeedbackIntake.apply), in batches of 10 (an SQS receive) and 500
(a catch-up), against the floor of inserting as many feedback_events rows with one
executemany per batch. The suppression check is suppression.lookup on one open connection,
with 1,000,000 entries against 1,000 and against a bare sqlite3 query. A full run exits 1
when the batched rate on SQLite is below 5,000 events/s or the median lookup is above
100 us; --quick fails only far below those (a shared CI machine). See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from outbox import (
    NAMES,
    UNLIMITED,
    Check,
    NoopSender,
    Report,
    build_runtime,
    fresh_database,
    machine_facts,
    postgres_problem,
    print_header,
    spread,
)
from process_tree import CpuWatch

from waypost import runtime
from waypost.feedback.events import FeedbackEvent, Kind
from waypost.feedback.ses_events import parse_ses_notification
from waypost.outbound import suppression
from waypost.store import migrate
from waypost.store.db import create_engine
from waypost.store.models import feedback_events, outbound_messages, sending_pauses, suppressions, utcnow

TARGET_RATE = 5_000  # SES events per second, batches of 500, SQLite (the figure)
TARGET_LOOKUP_US = 100.0  # median suppression.lookup with 1,000,000 entries, SQLite
BATCHES = (10, 500)  # an SQS receive (at most 10 messages), and a catch-up
# the mix of a sending day: one recipient per notification
MIX = (("delivery", 0.70), ("permanent", 0.20), ("transient", 0.05), ("complaint", 0.05))
LINKED_SHARE = 0.5  # of the events, those whose SES message id is one of our outbound rows
READERS = 2_000  # deliveries and transient bounces go to this many recurring addresses
BASELINE_ENTRIES = 1_000  # the lookup baseline's suppression list
FILL_CHUNK = 50_000  # rows per executemany when filling the suppression list
HASH_KEYS = (b"bench-signing-key-" + bytes(14),)  # one installation secret, as without a key rotation
SEED = 20240611


@dataclass(frozen=True)
class Mode:
    name: str
    events: int  # per contender and round
    rounds: int
    outbound_rows: int  # sent messages the feedback can link to
    entries: int  # suppressed addresses for the lookup
    lookups: int  # timed lookups per contender, half hits, half misses
    rate_floor: float  # events/s (batches of 500, SQLite) below which the run fails
    lookup_ceiling_us: float  # median lookup above which the run fails


MODES = {
    "full": Mode("full", 20_000, 3, 5_000, 1_000_000, 20_000, TARGET_RATE, TARGET_LOOKUP_US),
    # a loaded 2-core CI box: fail only when something broke (a lost index, a query per event)
    "quick": Mode("quick", 4_000, 2, 2_000, 200_000, 5_000, 1_500, 3 * TARGET_LOOKUP_US),
}


class LogCount(logging.Handler):
    """Keeps waypost's warnings and errors (the guard's pause) off stderr, and counts them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


# -- SES notifications -----------------------------------------------------------------------

@dataclass
class Workload:
    texts: list[str]  # SES event JSON, one recipient each
    kinds: Counter[str]


def ses_workload(count: int, tag: str, rng: random.Random, provider_ids: Sequence[str]) -> Workload:
    """``count`` SES event-publishing records in the MIX, shuffled; about LINKED_SHARE of
    them name one of ``provider_ids`` as mail.messageId (and quote its Message-ID)."""
    kinds = [kind for kind, share in MIX for _ in range(round(count * share))]
    kinds = (kinds + ["delivery"] * count)[:count]
    rng.shuffle(kinds)
    start = utcnow() - timedelta(minutes=5)
    texts = []
    for index, kind in enumerate(kinds):
        if rng.random() < LINKED_SHARE:
            number = rng.randrange(len(provider_ids))
            message_id, header = provider_ids[number], f"<bench-out-{number}@waypost.test>"
        else:
            message_id = f"0100018f{hashlib.sha1(f'{tag}{index}'.encode()).hexdigest()[:24]}-000000"
            header = f"<{tag}-{index}@waypost.test>"
        if kind in ("permanent", "complaint"):
            recipient = f"{'gone' if kind == 'permanent' else 'annoyed'}-{tag}-{index}@example.net"
        else:
            recipient = f"reader{rng.randrange(READERS)}@example.org"
        at = start + timedelta(milliseconds=index)
        texts.append(json.dumps(_ses_record(kind, recipient, message_id, header, at, f"{tag}-{index:08x}")))
    return Workload(texts, Counter(kinds))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _ses_record(kind: str, recipient: str, message_id: str, header: str, at: datetime,
                feedback_id: str) -> dict[str, Any]:
    """One SES event-publishing record shaped like AWS's examples (about 1.6 KB of JSON)."""
    sent = at - timedelta(seconds=2)
    mail = {
        "timestamp": _iso(sent), "source": "Waypost <journeys@waypost.test>",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/waypost.test",
        "sendingAccountId": "123456789012", "messageId": message_id, "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": "From", "value": "Waypost <journeys@waypost.test>"},
                    {"name": "To", "value": recipient}, {"name": "Subject", "value": "Your journey, day 3"},
                    {"name": "Message-ID", "value": header}, {"name": "MIME-Version", "value": "1.0"},
                    {"name": "Content-Type", "value": 'multipart/alternative; boundary="=_waypost_b3f1"'}],
        "commonHeaders": {"from": ["Waypost <journeys@waypost.test>"], "to": [recipient], "messageId": header,
                          "subject": "Your journey, day 3"},
        "tags": {"ses:configuration-set": ["waypost"], "ses:source-ip": ["192.0.2.10"],
                 "ses:from-domain": ["waypost.test"], "ses:caller-identity": ["waypost"], "stream": ["journeys"]},
    }
    fid = f"0100018f{hashlib.sha1(feedback_id.encode()).hexdigest()[:24]}-000000"
    if kind == "delivery":
        return {"eventType": "Delivery", "mail": mail, "delivery": {
            "timestamp": _iso(at), "processingTimeMillis": 812, "recipients": [recipient],
            "smtpResponse": "250 2.0.0 OK  1718000000 a1b2c3d4e5f6 - gsmtp", "remoteMtaIp": "192.0.2.25",
            "reportingMTA": "a8-30.smtp-out.amazonses.com"}}
    if kind == "complaint":
        return {"eventType": "Complaint", "mail": mail, "complaint": {
            "feedbackId": fid, "complaintSubType": None, "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": _iso(at), "userAgent": "Yahoo!-Mail-Feedback/2.0", "complaintFeedbackType": "abuse",
            "arrivalDate": _iso(at)}}
    permanent = kind == "permanent"
    return {"eventType": "Bounce", "mail": mail, "bounce": {
        "bounceType": "Permanent" if permanent else "Transient",
        "bounceSubType": "General" if permanent else "MailboxFull",
        "bouncedRecipients": [{"emailAddress": recipient, "action": "failed",
                               "status": "5.1.1" if permanent else "4.2.2",
                               "diagnosticCode": "smtp; 550 5.1.1 user unknown" if permanent
                               else "smtp; 452 4.2.2 mailbox full"}],
        "timestamp": _iso(at), "feedbackId": fid, "reportingMTA": "dsn; a8-30.smtp-out.amazonses.com"}}


def insert_outbound_rows(built: runtime.Runtime, count: int) -> list[str]:
    """``count`` messages sent over the last 6 days (state "sent", window_at set), so the
    feedback links to real rows and the guard's windows hold real sends; their SES ids."""
    now, ids = utcnow(), [f"0100018fbench{number:019d}-000000" for number in range(count)]
    rows = []
    for number, provider_id in enumerate(ids):
        at = now - timedelta(days=6) * (number / count)
        rows.append({"idempotency_key": f"bench-out-{number}", "stream": "journeys",
                     "recipient": f"reader{number % READERS}@example.org", "envelope_sender": "journeys@waypost.test",
                     "subject": "Your journey, day 3", "message_id_header": f"<bench-out-{number}@waypost.test>",
                     "raw": b"Subject: Your journey, day 3\r\n\r\nA day of it.\r\n", "state": "sent",
                     "provider_message_id": provider_id, "created_at": at, "sent_at": at, "admitted_at": at,
                     "handoff_at": at, "window_at": at})
    with built.engine.begin() as conn:
        conn.execute(outbound_messages.insert(), rows)
    return ids


# -- 1. throughput ---------------------------------------------------------------------------

class GuardClock:
    """Times the reputation guard's runs, by wrapping ``guard.enforce`` on the instance."""

    def __init__(self, built: runtime.Runtime) -> None:
        self.seconds, self.runs = 0.0, 0
        self.enforce = enforce = built.guard.enforce

        def timed(conn: sa.Connection) -> Any:
            started = time.perf_counter()
            try:
                return enforce(conn)
            finally:
                self.seconds += time.perf_counter() - started
                self.runs += 1

        built.guard.enforce = timed  # type: ignore[method-assign]


@dataclass
class Split:
    """Where apply_batches' time went, over all rounds of one batch size: the rest of
    ``seconds`` is the policy's statements and the commit."""

    seconds: float = 0.0
    parse: float = 0.0
    guard: float = 0.0
    guard_runs: int = 0
    batches: int = 0

    def line(self) -> str:
        rest = self.seconds - self.parse - self.guard
        each = self.guard / max(self.guard_runs, 1) * 1000
        return (f"  time split: parse {self.parse / self.seconds:.0%}, reputation guard {self.guard / self.seconds:.0%}"
                f" ({self.guard_runs:,} runs in {self.batches:,} batches, {each:.1f} ms each),"
                f" policy + commit {rest / self.seconds:.0%} ({rest / self.batches * 1000:.1f} ms a batch)")


def apply_batches(built: runtime.Runtime, texts: Sequence[str], size: int, tally: Counter[str],
                  guard: GuardClock | None = None, split: Split | None = None) -> float:
    """The code under test, from JSON text to commit, ``size`` notifications per batch; the
    seconds it took. Adds the outcomes to ``tally``, and the time's parts to ``split``."""
    clock = time.perf_counter
    guard_before, runs_before = (guard.seconds, guard.runs) if guard else (0.0, 0)
    parsing, started = 0.0, clock()
    for start in range(0, len(texts), size):
        began = clock()
        events = [event for text in texts[start:start + size] for event in parse_ses_notification(text)]
        parsing += clock() - began
        applied = built.intake.apply(events)
        tally.update(applied.outcomes)
        tally["received"] += applied.received
        tally["duplicates"] += applied.duplicates
        tally["newly suppressed"] += len(applied.suppressed)
    seconds = clock() - started
    if split is not None and guard is not None:
        split.seconds += seconds
        split.parse += parsing
        split.guard += guard.seconds - guard_before
        split.guard_runs += guard.runs - runs_before
        split.batches += -(-len(texts) // size)
    return seconds


def insert_floor(built: runtime.Runtime, rows: Sequence[dict[str, Any]], size: int) -> float:
    """The floor: the same number of feedback_events rows, one executemany and one commit per batch."""
    started = time.perf_counter()
    for start in range(0, len(rows), size):
        with built.engine.begin() as conn:
            conn.execute(feedback_events.insert(), rows[start:start + size])
    return time.perf_counter() - started


def floor_rows(texts: Sequence[str]) -> list[dict[str, Any]]:
    """feedback_events rows as the policy writes them (untimed), with dedupe keys of their own."""
    now, rows = utcnow(), []
    for text in texts:
        for event in parse_ses_notification(text):
            rows.append(_floor_row(event, now))
    return rows


def _floor_row(e: FeedbackEvent, now: datetime) -> dict[str, Any]:
    counts = {Kind.BOUNCE: "bounce" if e.bounce_type == "Permanent" else None, Kind.COMPLAINT: "complaint"}
    return {"dedupe_key": hashlib.sha256(("floor" + e.dedupe_key).encode()).hexdigest(), "kind": e.kind.value,
            "source": e.source.value, "recipient": e.recipient, "outbound_id": None, "stream": e.stream,
            "bounce_type": e.bounce_type, "bounce_subtype": e.bounce_subtype, "status": e.status,
            "feedback_type": e.feedback_type, "diagnostic": e.diagnostic,
            "outcome": "suppressed" if counts.get(e.kind) else "recorded", "note": None,
            "counts_as": counts.get(e.kind), "occurred_at": e.occurred_at, "received_at": now,
            "provider_message_id": e.provider_message_id, "raw": e.raw}


def bench_throughput(report: Report, mode: Mode, kind: str, scratch: Path) -> None:
    watch, started = CpuWatch(), time.perf_counter()
    logs = LogCount()
    waypost_log = logging.getLogger("waypost")
    waypost_log.addHandler(logs)
    waypost_log.propagate = False
    try:
        with fresh_database(kind, scratch) as url:
            built = build_runtime(url, scratch / f"data-feedback-{kind}", UNLIMITED, NoopSender())
            try:
                rates, tallies, state, splits = _throughput_rounds(built, mode)
            finally:
                built.close()
    finally:
        waypost_log.removeHandler(logs)
        waypost_log.propagate = True
    best = {name: max(values) for name, values in rates.items()}
    lines = [f"{mode.events:,} SES events per contender and round, best of {mode.rounds} rounds (median beside it);"
             f" mix {', '.join(f'{share:.0%} {name}' for name, share in MIX)}; {LINKED_SHARE:.0%} name one of"
             f" {mode.outbound_rows:,} sent outbound rows"]
    for size in BATCHES:
        policy, floor = f"policy-{size}", f"floor-{size}"
        lines += [f"{'batches of ' + str(size) + ': parse + intake.apply':46} {best[policy]:8.0f} /s"
                  f"  (median {statistics.median(rates[policy]):7.0f})",
                  f"{'  floor: executemany into feedback_events':46} {best[floor]:8.0f} /s"
                  f"  (median {statistics.median(rates[floor]):7.0f})",
                  f"{'  policy / floor':46} {best[policy] / best[floor]:8.3f}x"
                  f"  (the policy takes {best[floor] / best[policy]:.1f}x the floor's time)", splits[size].line()]
    lines += [f"outcomes, all rounds: {', '.join(f'{n:,} {o}' for o, n in sorted(tallies.items()))}",
              f"each run: feedback_events from {state['start_rows']:,} to {state['end_rows']:,} rows (deleted after"
              f" it); {state['linked']:,} of the policy's rows linked to an outbound row;"
              f" {state['suppressions']:,} suppressions at the end",
              f"one guard.enforce with a run's rows still in the table: median"
              f" {statistics.median(state['guard_ms']):.1f} ms (it runs at most every guard.check_seconds per"
              " process, so the split above may show none)",
              f"paused by the guard: {', '.join(state['paused']) or 'nothing'};"
              f" waypost logged {len(logs.records)} warnings/errors"]
    figures = {"rates": rates, "outcomes": dict(tallies), "state": state, "log": logs.records[:5],
               "split_seconds": {size: asdict(split) for size, split in splits.items()}}
    report.section(f"1. Feedback throughput, {NAMES[kind]}", figures, lines, watch, started)
    for size in BATCHES:
        rate, ratio = best[f"policy-{size}"], best[f"policy-{size}"] / best[f"floor-{size}"]
        figure = f"{rate:.0f}/s {ratio:.2f}x"
        name = f"Feedback, {NAMES[kind]}, batches of {size}: events/s, / floor"
        if kind == "sqlite" and size == max(BATCHES):
            report.checks.append(Check(name, figure, f"want >= {TARGET_RATE:,}/s", _rate_verdict(rate, mode)))
        else:
            report.checks.append(Check(name, figure, "(no target)", "INFO"))


def _rate_verdict(rate: float, mode: Mode) -> str:
    if rate >= TARGET_RATE:
        return "PASS"
    return "FAIL" if rate < mode.rate_floor else "WARN"


def _throughput_rounds(built: runtime.Runtime, mode: Mode) -> tuple[dict[str, list[float]], Counter[str],
                                                                       dict[str, Any], dict[int, Split]]:
    """Events per second, every round; the four contenders take turns going first. Every run
    starts from the same feedback_events table: the rows a run added are deleted after it,
    untimed (the guard counts them, so a growing table would slow each run down more). Raises
    unless every event was applied once, with the outcome its kind calls for."""
    rng = random.Random(SEED)
    provider_ids = insert_outbound_rows(built, mode.outbound_rows)
    guard, splits = GuardClock(built), {size: Split() for size in BATCHES}
    tally: Counter[str] = Counter()
    warm = ses_workload(40, "warm", rng, provider_ids)  # compile and cache every statement once, untimed
    apply_batches(built, warm.texts, 10, Counter())
    insert_floor(built, floor_rows(warm.texts[:20]), 10)
    state: dict[str, Any] = {"start_rows": _count(built, feedback_events), "linked": 0, "guard_ms": []}
    watermark = _count(built, feedback_events, sa.func.max(feedback_events.c.id))
    expected: Counter[str] = Counter()
    rates: dict[str, list[float]] = {f"{who}-{size}": [] for size in BATCHES for who in ("policy", "floor")}
    names = list(rates)
    for round_index in range(mode.rounds):
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            who, size = name.split("-")
            work = ses_workload(mode.events, f"r{round_index}{name}", rng, provider_ids)
            if who == "policy":
                seconds = apply_batches(built, work.texts, int(size), tally, guard, splits[int(size)])
                rates[name].append(mode.events / seconds)
                expected += work.kinds
                state["linked"] += _count(built, feedback_events, where=(feedback_events.c.id > watermark,
                                                                        feedback_events.c.outbound_id.is_not(None)))
                state["guard_ms"].append(_time_guard(built, guard))
            else:
                rates[name].append(mode.events / insert_floor(built, floor_rows(work.texts), int(size)))
            state["end_rows"] = _count(built, feedback_events)
            _reset(built, watermark)
    _check_outcomes(tally, expected)
    with built.engine.connect() as conn:
        state["suppressions"] = _count(built, suppressions)
        state["paused"] = [f"{row.scope} ({row.reason[:60]}...)" for row in conn.execute(sa.select(sending_pauses))]
    return rates, tally, state, splits


def _reset(built: runtime.Runtime, watermark: int) -> None:
    """Delete the rows a run added. PostgreSQL then vacuums the table, or the dead rows would
    slow the next run's scans (the guard's counts); autovacuum would, in its own time."""
    with built.engine.begin() as conn:
        conn.execute(feedback_events.delete().where(feedback_events.c.id > watermark))
    if built.engine.dialect.name == "postgresql":
        with built.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) feedback_events")


def _time_guard(built: runtime.Runtime, guard: GuardClock) -> float:
    """One guard.enforce (unwrapped, rolled back) with the run's rows still in the table; ms."""
    with built.engine.connect() as conn, conn.begin() as transaction:
        started = time.perf_counter()
        guard.enforce(conn)
        seconds = time.perf_counter() - started
        transaction.rollback()
    return seconds * 1000


def _count(built: runtime.Runtime, table: sa.Table, what: Any = None, where: Sequence[Any] = ()) -> int:
    with built.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count() if what is None else what).select_from(table)
                                .where(*where)).scalar() or 0)


def _check_outcomes(tally: Counter[str], expected: Counter[str]) -> None:
    """Each permanent bounce and complaint suppresses a new address; a delivery is recorded; a
    transient bounce is scored (one a day per address counts, so none reaches the limit)."""
    want = {"received": sum(expected.values()), "duplicates": 0,
            "suppressed": expected["permanent"] + expected["complaint"],
            "newly suppressed": expected["permanent"] + expected["complaint"],
            "recorded": expected["delivery"], "scored": expected["transient"]}
    wrong = {name: (tally[name], count) for name, count in want.items() if tally[name] != count}
    if wrong:
        raise RuntimeError(f"feedback outcomes differ from the events' kinds (got, want): {wrong}")


# -- 2. suppression check latency ------------------------------------------------------------

RAW_LOOKUP = ("SELECT id, address, reason, source, detail, created_at, expires_at FROM suppressions"
              " WHERE address = ?")


def fill_suppressions(url: str, count: int, rng: random.Random) -> tuple[sa.Engine, list[str], float]:
    """A migrated SQLite database with ``count`` suppressed addresses in random order, inserted
    in one transaction, FILL_CHUNK rows per executemany on the driver (the times stored as
    SQLAlchemy stores them); its engine, the addresses, the seconds taken. One entry in ten
    expires in a week (a soft bounce's), the rest never."""
    engine = create_engine(url)
    migrate.upgrade(engine)
    stamp = suppressions.c.created_at.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
    assert stamp is not None
    now, later = stamp(utcnow()), stamp(utcnow() + timedelta(days=7))
    reasons = ("BOUNCE",) * 6 + ("COMPLAINT", "UNSUBSCRIBE", "MANUAL")
    detail = "Permanent/General 5.1.1 smtp; 550 5.1.1 user unknown"
    addresses = [f"{rng.randrange(1 << 40):010x}.user{number}@mail{number % 997}.example.com"
                 for number in range(count)]
    insert = ("INSERT INTO suppressions (address, reason, source, detail, created_at, expires_at)"
              " VALUES (?, ?, ?, ?, ?, ?)")
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, count, FILL_CHUNK):
            conn.exec_driver_sql(insert, [
                (address, reasons[number % len(reasons)], "ses", detail, now, later if number % 10 == 0 else None)
                for number, address in enumerate(addresses[start:start + FILL_CHUNK], start)])
    return engine, addresses, time.perf_counter() - started


def probe_addresses(addresses: Sequence[str], count: int, rng: random.Random) -> list[tuple[str, bool]]:
    """``count`` addresses in random order, half suppressed (as the outbox passes them, in a
    recipient's own case), half not; with whether each should be found."""
    hits = [(address.replace(".user", ".User", 1), True) for address in rng.choices(addresses, k=count // 2)]
    misses = [(f"{rng.randrange(1 << 40):010x}.reader@mail{rng.randrange(997)}.example.com", False)
              for _ in range(count - count // 2)]
    probes = hits + misses
    rng.shuffle(probes)
    return probes


def time_lookups(conn: sa.Connection, probes: Sequence[tuple[str, bool]]) -> list[float]:
    """suppression.lookup per address on one open connection; microseconds each."""
    lookup, clock, times = suppression.lookup, time.perf_counter_ns, []
    for address, found in probes:
        started = clock()
        entry = lookup(conn, address)
        times.append((clock() - started) / 1000)
        if (entry is not None) != found:
            raise RuntimeError(f"suppression.lookup({address!r}) gave {entry!r}")
    return times


def time_raw(cursor: sqlite3.Cursor, probes: Sequence[tuple[str, bool]]) -> list[float]:
    """The floor: a bare sqlite3 cursor on the same file, the key already lower-case."""
    clock, times = time.perf_counter_ns, []
    keys = [(address.lower(), found) for address, found in probes]
    for key, found in keys:
        started = clock()
        row = cursor.execute(RAW_LOOKUP, (key,)).fetchone()
        times.append((clock() - started) / 1000)
        if (row is not None) != found:
            raise RuntimeError(f"raw lookup of {key!r} gave {row!r}")
    return times


def time_keys(probes: Sequence[tuple[str, bool]]) -> list[float]:
    """suppression_key alone: the normalising that lookup does before its query."""
    key, clock, times = suppression.suppression_key, time.perf_counter_ns, []
    for address, _ in probes:
        started = clock()
        key(address)
        times.append((clock() - started) / 1000)
    return times


def bench_lookup(report: Report, mode: Mode, scratch: Path) -> None:
    watch, started = CpuWatch(), time.perf_counter()
    rng = random.Random(SEED)
    sizes = {"big": mode.entries, "small": BASELINE_ENTRIES}
    with fresh_database("sqlite", scratch) as big_url, fresh_database("sqlite", scratch) as small_url:
        engines, fill = {}, {}
        probes = {}
        for name, url in (("big", big_url), ("small", small_url)):
            engine, addresses, fill[name] = fill_suppressions(url, sizes[name], rng)
            # as the wiring does (intake_wiring): each lookup also looks for the keyed hash an
            # erased person's entry is kept under
            suppression.hash_addresses_with(engine, HASH_KEYS)
            engines[name] = engine
            probes[name] = probe_addresses(addresses, mode.lookups, rng)
        try:
            samples = _lookup_rounds(engines, probes, {"big": big_url, "small": small_url})
        finally:
            for engine in engines.values():
                engine.dispose()
        size_mb = Path(sa.engine.make_url(big_url).database or "").stat().st_size / 1e6
    figures = {name: spread(values) for name, values in samples.items()}
    labels = {"lookup-big": f"suppression.lookup, {mode.entries:,} entries",
              "lookup-small": f"suppression.lookup, {BASELINE_ENTRIES:,} entries (baseline)",
              "raw-big": f"floor: sqlite3 cursor, {mode.entries:,} entries",
              "raw-small": f"floor: sqlite3 cursor, {BASELINE_ENTRIES:,} entries",
              "key": "of which suppression_key() (normalising)"}
    big, small, raw = figures["lookup-big"], figures["lookup-small"], figures["raw-big"]
    lines = [f"{mode.lookups:,} lookups per contender, half hits, half misses, random order, on one open"
             f" connection (as the outbox's admission does); filled {mode.entries:,} entries in {fill['big']:.1f} s"
             f" ({mode.entries / fill['big']:,.0f} rows/s, file {size_mb:.0f} MB)",
             *(f"{label:52} median {figures[name]['median']:7.1f} us   p99 {figures[name]['p99']:7.1f} us"
               for name, label in labels.items()),
             f"{f'lookup, {mode.entries:,} / {BASELINE_ENTRIES:,} entries':52} median"
             f" {big['median'] / small['median']:7.2f}x    p99 {big['p99'] / small['p99']:6.2f}x"
             "  (about 1: the index does its work)",
             f"{f'lookup / sqlite3 floor, {mode.entries:,} entries':52} median"
             f" {big['median'] / raw['median']:7.2f}x    p99 {big['p99'] / raw['p99']:6.2f}x"]
    report.section(f"2. Suppression check latency, SQLite, {mode.entries:,} entries", {
        "entries": mode.entries, "fill_seconds": fill["big"], "file_mb": size_mb, "spread_us": figures}, lines,
        watch, started)
    median = big["median"]
    verdict = "PASS" if median <= TARGET_LOOKUP_US else "FAIL" if median > mode.lookup_ceiling_us else "WARN"
    report.checks += [
        Check(f"Suppression lookup, {mode.entries:,} entries: median (p99)", f"{median:.1f} ({big['p99']:.0f}) us",
              f"want <= {TARGET_LOOKUP_US:g} us", verdict),
        Check(f"Suppression lookup: {mode.entries:,} / {BASELINE_ENTRIES:,} entries; / sqlite3 floor",
              f"{median / small['median']:.2f}x {median / raw['median']:.2f}x", "(no target)", "INFO")]


def _lookup_rounds(engines: dict[str, sa.Engine], probes: dict[str, list[tuple[str, bool]]],
                   urls: dict[str, str], rounds: int = 4) -> dict[str, list[float]]:
    """Every contender gets an untimed warm-up pass, then a quarter of its probes per round,
    the starting contender rotating."""
    samples: dict[str, list[float]] = {"lookup-big": [], "lookup-small": [], "raw-big": [], "raw-small": [], "key": []}
    with engines["big"].begin() as big_conn, engines["small"].begin() as small_conn:
        raw = {name: sqlite3.connect(sa.engine.make_url(url).database or "") for name, url in urls.items()}
        try:
            cursors = {name: connection.cursor() for name, connection in raw.items()}
            contenders: list[tuple[str, Callable[[Sequence[tuple[str, bool]]], list[float]], str]] = [
                ("lookup-big", lambda p: time_lookups(big_conn, p), "big"),
                ("lookup-small", lambda p: time_lookups(small_conn, p), "small"),
                ("raw-big", lambda p: time_raw(cursors["big"], p), "big"),
                ("raw-small", lambda p: time_raw(cursors["small"], p), "small"),
                ("key", time_keys, "big"),
            ]
            for _, run, which in contenders:
                run(probes[which][:1000])
            for round_index in range(rounds):
                turn = round_index % len(contenders)
                for name, run, which in contenders[turn:] + contenders[:turn]:
                    share = len(probes[which]) // rounds
                    samples[name] += run(probes[which][round_index * share:(round_index + 1) * share])
        finally:
            for connection in raw.values():
                connection.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer events, 200,000 suppressed addresses (CI); fails only far below the targets")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to PATH")
    args = parser.parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    postgres = postgres_problem()
    kinds = ["sqlite"] if postgres else ["sqlite", "postgres"]
    report = Report(mode.name, machine_facts(postgres))
    print_header(report, "feedback")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="waypost-bench-") as scratch:
        for kind in kinds:
            bench_throughput(report, mode, kind, Path(scratch))
        bench_lookup(report, mode, Path(scratch))
    if postgres:
        report.checks.append(Check("PostgreSQL: feedback throughput", "--", f"({postgres})", "SKIP"))
    return report.finish(args.json, f"below the {mode.name} run's limit", time.perf_counter() - began)


if __name__ == "__main__":
    sys.exit(main())
