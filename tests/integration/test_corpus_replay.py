"""Every file of the shared corpus through the real pipeline: inbox, worker, gate, router,
journeys app, outbox; and a set of files generated in code (tests/support/replay_samples.py)
the same way, so a clone without the corpus replays each kind and outcome too. Messages go
in as they are; photos and other files go in as the attachment of a generated mail. Each must
end in exactly one recorded outcome (processed, refused with its reason, or dead with its
reason and its raw bytes kept), and no job may fail with anything but a MalformedMessage (a
"crash")."""

from __future__ import annotations

import json
import logging
import mimetypes
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import corpus_dir, wait_until
from tests.support.replay_samples import generated_files
from waypost.apps.journeys.images import is_supported_image
from waypost.mail.parse import MalformedMessage, parse_message
from waypost.mail.robots import RobotInput, RobotSign, robot_sign
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.models import inbound_messages, outbound_messages, photos

MESSAGE_SUFFIXES = {".eml", ".txt", ".http"}
OUTCOMES = ("processed", "refused", "dead")
# dead letters of these kinds are the intended answer to bad input; anything else is a crash
INTENDED_DEATHS = ("MalformedMessage", "MimeLimitExceeded")
ENVELOPE_SENDER = "corpus@example.org"


@dataclass(frozen=True)
class Case:
    kind: str  # category and how it was sent, e.g. "dsn (message)", "exif (photo in a mail)"
    record: dict[str, Any]
    raw: bytes


@dataclass
class Replay:
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)
    unprocessed: list[str] = field(default_factory=list)  # "file: status: reason", for the table

    def table(self) -> str:
        columns = (*OUTCOMES, "notes")  # notes: files whose parse names an archive or winmail.dat
        rows = [f"{'kind':34} {'files':>5} " + " ".join(f"{o:>9}" for o in columns)]
        for kind in sorted(self.outcomes):
            counts = self.outcomes[kind]
            rows.append(f"{kind:34} {sum(counts[o] for o in OUTCOMES):>5} "
                        + " ".join(f"{counts[o]:>9}" for o in columns))
        return "\n".join([*rows, "", *sorted(self.unprocessed)])


def manifest() -> list[dict[str, Any]]:
    root = corpus_dir()
    with (root / "manifest.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def cases() -> Iterator[Case]:
    root = corpus_dir()
    for number, record in enumerate(manifest()):
        path = root / record["file"]
        yield case_for(record, path, path.read_bytes(), number)


def generated_cases() -> list[Case]:
    return [case_for(made.record(), Path(made.file), made.data, number)
            for number, made in enumerate(generated_files())]


def case_for(record: dict[str, Any], path: Path, data: bytes, number: int) -> Case:
    if path.suffix in MESSAGE_SUFFIXES:
        return Case(f"{record['category']} (message)", record, data)
    if record["category"] == "exif":
        return Case("exif (photo in a mail)", record, wrapped(path, data, number))
    return Case(f"{record['category']} ({path.suffix} in a mail)", record, wrapped(path, data, number))


def wrapped(path: Path, data: bytes, number: int) -> bytes:
    """``path`` as the one attachment of a mail; each from its own sender, so that the
    gate's per-sender rate limit does not refuse the corpus."""
    message = EmailMessage()
    message["From"] = f"Corpus <corpus-{number}@example.org>"
    message["To"] = "journeys@waypost.test"
    message["Subject"] = f"corpus file {path.name}"
    message["Message-ID"] = f"<{path.stem.replace(' ', '_')}@corpus.example.org>"
    message.set_content("one file from the corpus")
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    maintype, subtype = guessed.split("/", 1)
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return message.as_bytes()


def sender_of(raw: bytes) -> str | None:
    try:
        return parse_message(raw).from_address
    except MalformedMessage:
        return None


def robot_sign_of(raw: bytes) -> RobotSign | None:
    """What marks a message as a program's (mail/robots.py), with the envelope the replay gives."""
    try:
        message = parse_message(raw)
    except MalformedMessage:
        return None
    return robot_sign(RobotInput(ENVELOPE_SENDER, message.from_address, dict(message.robot_headers)))


def notes_of(raw: bytes) -> tuple[str, ...]:
    try:
        return parse_message(raw).notes
    except MalformedMessage:
        return ()


def drain(runtime: Any, timeout: float = 240.0) -> None:
    """Run jobs until none is queued or running; retries wait for their backoff."""
    worker = runtime.worker()

    def settled() -> bool:
        while worker.run_once():
            pass
        depth = runtime.queue.depth()
        return not depth.get("queued") and not depth.get("running")

    wait_until(settled, timeout=timeout, interval=0.02, message="the queue to drain")


def rows(runtime: Any) -> dict[str, sa.Row]:
    with runtime.engine.connect() as conn:
        return {row.id: row for row in conn.execute(sa.select(inbound_messages))}


def replies(runtime: Any) -> Counter[str]:
    with runtime.engine.connect() as conn:
        keys = conn.execute(sa.select(outbound_messages.c.idempotency_key)).scalars()
        return Counter(keys)


def photo_rows(runtime: Any) -> dict[str, list[sa.Row]]:
    found: dict[str, list[sa.Row]] = defaultdict(list)
    with runtime.engine.connect() as conn:
        for row in conn.execute(sa.select(photos.c.filename, photos.c.problem, photos.c.width)):
            found[row.filename].append(row)
    return found


def check_outcome(case: Case, row: sa.Row, runtime: Any, replay: Replay) -> None:
    name = case.record["file"]
    replay.outcomes[case.kind][row.status] += 1
    if row.status != "processed":
        replay.unprocessed.append(f"{name}: {row.status}: {row.reason}")
    if row.status not in OUTCOMES:
        replay.problems.append(f"{name}: left {row.status!r}")
        return
    if not row.reason:
        replay.problems.append(f"{name}: {row.status} without a reason")
    if row.status == "dead":
        if not row.reason.startswith(INTENDED_DEATHS):
            replay.problems.append(f"{name}: crashed: {row.reason[:300]}")
        if not runtime.blobs.exists(row.blob_key):
            replay.problems.append(f"{name}: dead but its raw bytes are gone")


def check_expectations(case: Case, row: sa.Row, parsed_sender: str | None, replay: Replay) -> None:
    """What the manifest (or plain sense about the file) says the outcome must be."""
    name, category = case.record["file"], case.record["category"]
    expected: tuple[str, ...]
    if category in ("dsn", "arf", "dmarc/ruf") or case.kind.endswith("in a mail)"):
        # bounces, complaints and reports to the journeys mailbox are answered or refused,
        # never dead; a generated mail always comes from an allowlisted sender
        expected = ("processed",) if case.kind.endswith("in a mail)") else ("processed", "refused")
    elif parsed_sender is None:
        expected = ("refused", "dead")  # no single From address, or no message at all
    elif robot_sign_of(case.raw) is not None:
        expected = ("refused",)  # a program's mail (a list, a noreply sender): never answered (RFC 3834)
        if not (row.reason or "").startswith("automatic-mail: "):
            replay.problems.append(f"{name}: {row.status} ({row.reason}); expected refused as automatic mail")
    else:
        expected = ("processed",)  # a readable message from an allowlisted sender
    if row.status not in expected:
        replay.problems.append(f"{name}: {row.status} ({row.reason}); expected {' or '.join(expected)}")
    unopened = "winmail" in name or "tnef" in name or name.endswith((".gz", ".zip"))
    if unopened and row.status == "processed" and not notes_of(case.raw):
        replay.problems.append(f"{name}: TNEF or an archive, but no note says it was not opened")


def replay(runtime: Any, cases: list[Case], caplog: pytest.LogCaptureFixture) -> tuple[Replay, dict[str, Case]]:
    """Every case through the pipeline, each from an allowlisted sender where it has one;
    the replay's table and problems, and each case by its inbound message id."""
    caplog.set_level(logging.WARNING, logger="waypost")
    senders = {sender for case in cases if (sender := sender_of(case.raw))}
    for sender in senders:
        runtime.allowlist.add(sender)
    journeys = f"{runtime.settings.journeys.mailbox}@{runtime.settings.mail_domain}"
    accepted = {
        runtime.inbox.accept(ReceivedMail(raw=case.raw, mail_from=ENVELOPE_SENDER, rcpt_tos=(journeys,),
                                          peer_ip="127.0.0.1")): case
        for case in cases
    }

    drain(runtime)

    result = Replay()
    recorded = rows(runtime)
    sent = replies(runtime)
    for message_id, case in accepted.items():
        row = recorded[message_id]
        check_outcome(case, row, runtime, result)
        check_expectations(case, row, sender_of(case.raw), result)
        result.outcomes[case.kind]["notes"] += bool(notes_of(case.raw))
        # files that are copies of one mail (same sender and Message-ID) are answered once
        answered = 0 if (row.reason or "").startswith("duplicate of ") else 1
        if row.status == "processed" and sent[f"journeys-reply-{message_id}"] != answered:
            result.problems.append(f"{case.record['file']}: processed ({row.reason}) with "
                                   f"{sent[f'journeys-reply-{message_id}']} replies, not {answered}")
    check_photos(accepted.values(), runtime, result)
    crashes = [r.getMessage() for r in caplog.records if r.name.startswith("waypost.pipeline.worker")
               and not any(f"dead-lettered: {kind}:" in r.getMessage() for kind in INTENDED_DEATHS)]
    print(f"\nreplay of {len(cases)} files on", runtime.engine.dialect.name, "\n" + result.table())
    assert not crashes, "jobs failed:\n" + "\n".join(crashes[:20])
    assert not result.problems, result.table() + "\n\n" + "\n".join(result.problems)
    return result, accepted


@pytest.mark.corpus
@pytest.mark.timeout(600)
def test_every_corpus_file_ends_in_one_recorded_outcome(runtime: Any, caplog: pytest.LogCaptureFixture) -> None:
    all_cases = list(cases())
    assert len(all_cases) == len(manifest()) >= 190, "the manifest lists fewer files than expected"
    result, _ = replay(runtime, all_cases, caplog)
    # the 67 bounces and complaints (dsn/, arf/), sent to the journeys mailbox, are a program's
    # mail and refused unanswered (RFC 3834); nearly all the rest is processed
    assert sum(counts["processed"] for counts in result.outcomes.values()) > 100


def test_every_generated_file_ends_in_its_recorded_outcome(runtime: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The same replay over files made in code (tests/support/replay_samples.py), one or more
    for each kind and outcome the corpus replay's table tells apart: each must end in the
    outcome its record names, and the table must show every outcome and a note."""
    result, accepted = replay(runtime, generated_cases(), caplog)
    recorded = rows(runtime)
    wrong = []
    for message_id, case in accepted.items():
        row, expected, reason = recorded[message_id], case.record["expected"], case.record["reason"]
        if row.status != expected or not (row.reason or "").startswith(reason):
            wrong.append(f"{case.record['file']}: {row.status} ({row.reason}); expected {expected} ({reason}...)")
    assert not wrong, result.table() + "\n\n" + "\n".join(wrong)
    totals = Counter[str]()
    for counts in result.outcomes.values():
        totals.update(counts)
    assert all(totals[outcome] for outcome in (*OUTCOMES, "notes")), result.table()
    assert {kind.split(" (")[1] for kind in result.outcomes} >= {"message)", "photo in a mail)", ".zip in a mail)"}
    assert {kind.split(" (")[0] for kind in result.outcomes} >= {"dsn", "arf", "mime", "exif", "ses"}


def check_photos(all_cases: Any, runtime: Any, replay: Replay) -> None:
    """Each wrapped photo in a format we take became a photo; one Pillow reads is not unreadable."""
    stored = photo_rows(runtime)
    for case in all_cases:
        if case.kind != "exif (photo in a mail)":
            continue
        name = Path(case.record["file"]).name
        guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not is_supported_image(guessed, name):
            continue
        found = stored.get(name, [])
        if not found:
            replay.problems.append(f"{name}: no photo stored")
            continue
        readable = bool(case.record.get("pillow_ground_truth", {}).get("size_px"))
        if readable and found[0].problem and found[0].problem.startswith("could not read"):
            replay.problems.append(f"{name}: Pillow reads it, the pipeline did not: {found[0].problem}")
