"""Fuzzing the way in: generated MIME structures and byte mutations of seed messages. The
seeds are the shared corpus's messages (tests marked ``corpus``, left out without it) and,
always, messages made in code: the ``message()`` strategy's and the generated report and
replay samples (tests/support), so the mutation fuzzing runs on a fresh clone too.

Properties: ``parse_message`` raises nothing but ``MalformedMessage`` (a message built
well never even that); what it returns is safe to store and show; each case finishes within
a deadline with bounded memory; and through the real pipeline, every message ends in one
recorded outcome without a job failing ("a crash"), ``Worker.run_once`` never raising.

The default run makes a little over 2,000 cases; ``-m slow`` runs ten times as many.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import functools
import logging
import quopri
import tracemalloc
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import corpus_dir, wait_until
from tests.support.replay_samples import generated_files
from tests.support.report_samples import SAMPLES
from waypost.apps.journeys.samples import Shot, make_photo
from waypost.config import Settings
from waypost.mail.addresses import domain_of, first_mailbox
from waypost.mail.parse import SUBJECT_LIMIT, MalformedMessage, MimeLimitExceeded, MimeLimits, parse_message
from waypost.pipeline.inbox import ReceivedMail
from waypost.store.models import inbound_messages, outbound_messages

LIMITS = MimeLimits()
PHOTO = make_photo(Shot(46.0, 7.7, datetime(2024, 7, 1, 9, 0, tzinfo=UTC), "fuzz"), size=(32, 24))
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
INTENDED_DEATHS = ("MalformedMessage", "MimeLimitExceeded")


def scaled(request: pytest.FixtureRequest, examples: int) -> int:
    """``examples``, or ten times as many for the slow variant (``-m slow``; the default run
    leaves it out through pytest's addopts)."""
    if request.node.get_closest_marker("slow") is None:
        return examples
    return examples * 10


SCALES = [pytest.param(1, id="default"), pytest.param(10, id="long", marks=pytest.mark.slow)]

# --- generated messages ---------------------------------------------------------------------

ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
any_text = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(BIDI + "\x00\x01\x7f\t/\\.")),
                   max_size=30)
token = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_"), min_size=1, max_size=12)
charsets = st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "windows-1252", "koi8-r", "utf-16", "utf-7", "x-unknown",
                            "utf-8*en", "rot13", "base64", "idna", "", "us-ascii"])


def one_line(value: bytes) -> bytes:
    return value.replace(b"\r", b" ").replace(b"\n", b" ")


@st.composite
def encoded_word(draw: st.DrawFn) -> bytes:
    text = draw(any_text).encode("utf-8")
    kind = draw(st.sampled_from("bBqQx"))
    if kind in "bB":
        body = base64.b64encode(text) if draw(st.booleans()) else draw(st.binary(max_size=12)).hex().encode()
    else:
        body = quopri.encodestring(text, header=True).replace(b"=\n", b"")
    return b"=?" + draw(charsets).encode() + b"?" + kind.encode() + b"?" + one_line(body) + b"?="


HOSTILE_TEXT = [b"nul\x00byte", b"\x1b[31mred", b"\xe2\x80\xaegpj.exe", b"=?utf-8?q?nul=00?=", b"=?utf-8?b?7aC A?=",
                b"\xed\xa0\x80 lone surrogate", b"a\x0bb\x0cc\x1cd\x85e"]
header_text = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    ascii_text.map(str.encode),
    any_text.map(lambda s: s.encode("utf-8")),  # raw UTF-8, RFC 6532
    st.binary(max_size=30),  # raw bytes of any charset
    st.lists(encoded_word(), min_size=1, max_size=4).map(b" ".join),
).map(one_line)


@st.composite
def from_header(draw: st.DrawFn) -> bytes:
    address = f"{draw(token)}@{draw(token)}.example".encode()
    return draw(st.sampled_from([
        address,
        b"<" + address + b">",
        draw(header_text) + b" <" + address + b">",
        b'"' + draw(header_text).replace(b'"', b"") + b'" <' + address + b">",
        address + b", other@example.org",
        b"friends: " + address + b";",
        draw(header_text),
    ]))


NAMES = ["IMG_0001.jpg", "../../etc/passwd", "C:\\Users\\x\\a.jpg", "\u202egpj.exe", ".hidden.heic", "winmail.dat",
         "trip.zip", "photos.tar.gz", "x" * 300 + ".jpeg", "a\x00b.png", "Straße café.jpg", "..", ""]


@st.composite
def filename_parameter(draw: st.DrawFn) -> bytes:
    name = draw(st.one_of(st.sampled_from(NAMES), any_text))
    raw = name.encode("utf-8", "surrogatepass")
    form = draw(st.integers(0, 5))
    if form == 0:
        return b'filename="' + one_line(raw).replace(b'"', b"'") + b'"'
    if form == 1:
        return b"filename=" + one_line(raw)
    if form == 2:  # RFC 2231
        return b"filename*=" + draw(charsets).encode() + b"''" + "".join(f"%{b:02X}" for b in raw).encode()
    if form == 3:  # RFC 2231 continuations, percent signs broken now and then
        encoded = "".join(f"%{b:02X}" for b in raw)
        cut = draw(st.integers(0, len(encoded)))
        return (b"filename*0*=utf-8''" + encoded[:cut].encode() + b"; filename*1*=" + encoded[cut:].encode()
                + draw(st.sampled_from([b"", b"%Z", b"%"])))
    if form == 4:  # RFC 2047 inside a parameter
        return b'filename="' + b" ".join(draw(st.lists(encoded_word(), min_size=1, max_size=3))) + b'"'
    return b"name=" + draw(header_text).replace(b";", b"")


CONTENT_TYPES = ["image/jpeg", "image/png", "image/heic", "application/octet-stream", "application/zip",
                 "application/ms-tnef", "application/pdf", "text/plain", "text/html", "video/mp4", "audio/mpeg",
                 "message/delivery-status", "image/", "/jpeg", "garbage", "text/plain; charset=\"unterminated"]
ENCODINGS = ["base64", "quoted-printable", "7bit", "8bit", "binary", "x-uuencode", "BASE64", "bogus", None]


@st.composite
def leaf_body(draw: st.DrawFn, encoding: str | None, content_type: str) -> bytes:
    data = draw(st.one_of(st.binary(max_size=300), st.just(PHOTO) if content_type.startswith("image") else
                          st.binary(max_size=40)))
    broken = draw(st.integers(0, 3)) == 0
    if encoding and encoding.lower() == "base64":
        body = base64.encodebytes(data)
        return body.replace(b"A", b"!", 3)[:-draw(st.integers(0, 5)) or None] if broken else body
    if encoding == "quoted-printable":
        body = quopri.encodestring(data)
        return body + b"=Z\r\n=" if broken else body
    if encoding == "x-uuencode":
        body = b"begin 644 f\n" + binascii.b2a_uu(data[:45]) + b"`\nend\n"
        return body[:len(body) // 2] if broken else body
    return data


@st.composite
def leaf(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    encoding = draw(st.sampled_from(ENCODINGS))
    headers = [b"Content-Type: " + content_type.encode()]
    if content_type.startswith("text/") and draw(st.booleans()):
        headers[0] += b"; charset=" + draw(charsets).encode()
    if draw(st.booleans()):
        headers[0] += b"; " + draw(filename_parameter()).replace(b"filename", b"name", 1)
    if draw(st.booleans()):
        disposition = draw(st.sampled_from([b"attachment", b"inline", b"bogus", b""]))
        headers.append(b"Content-Disposition: " + disposition + b"; " + draw(filename_parameter()))
    if encoding is not None:
        headers.append(b"Content-Transfer-Encoding: " + encoding.encode())
    return headers, draw(leaf_body(encoding, content_type))


@st.composite
def entity(draw: st.DrawFn, depth: int) -> bytes:
    """One MIME entity: header lines, a blank line, the body."""
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "rfc822"] if depth < 4 else ["leaf"]))
    extra = draw(st.lists(st.tuples(token, header_text), max_size=3))
    if kind == "multipart":
        boundary = f"b{depth}-{draw(token)}".encode()
        subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"digest", b"report", b"signed"]))
        children = draw(st.lists(entity(depth + 1), max_size=4))
        headers = [b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"']
        closing = b"--" + boundary + b"--\r\n" if draw(st.booleans()) or not children else b""
        body = draw(st.sampled_from([b"", b"preamble\r\n"])) + b"".join(
            b"--" + boundary + b"\r\n" + child + b"\r\n" for child in children) + closing
    elif kind == "rfc822":
        headers, body = [b"Content-Type: message/rfc822"], draw(message(depth + 1))
    else:
        headers, body = draw(leaf())
    headers += [b"X-" + name.encode() + b": " + value for name, value in extra]
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


@st.composite
def message(draw: st.DrawFn, depth: int = 0) -> bytes:
    headers = [b"From: " + draw(from_header()), b"Subject: " + draw(header_text), b"MIME-Version: 1.0"]
    optional = {
        b"Message-ID": st.sampled_from([b"<a.1@example.org>", b"no brackets", b"<\xff@x>"]),
        b"References": st.lists(st.sampled_from([b"<r1@x>", b"<r2@y>", b"junk"]), max_size=5).map(b" ".join),
        b"Date": st.sampled_from([b"Sat, 13 Jul 2024 09:04:00 +0545", b"yesterday", b"Mon, 99 Foo 99999 99:99:99"]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            headers.append(name + b": " + draw(values))
    raw = b"\r\n".join(headers) + b"\r\n" + draw(entity(depth))
    return raw.replace(b"\r\n", b"\n") if draw(st.booleans()) else raw  # both line ends occur


# --- mutated seed messages ------------------------------------------------------------------


def corpus_messages() -> list[bytes]:
    root = corpus_dir()
    paths = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".eml", ".txt", ".http")]
    found = [p.read_bytes() for p in sorted(paths) if p.stat().st_size <= 70_000]
    assert len(found) > 80, f"only {len(found)} corpus messages"
    return found


@functools.cache
def generated_messages() -> tuple[bytes, ...]:
    """Well-formed and broken mail made in code: DSNs, non-standard bounces, feedback reports,
    auto-replies, and the replay's messages (photo, TNEF, no sender, too many parts, ...)."""
    found = [sample.raw for sample in SAMPLES]
    found += [made.data for made in generated_files() if made.file.endswith((".eml", ".txt", ".http"))]
    assert len(found) > 30, f"only {len(found)} generated messages"
    return tuple(found)


# seeds: the corpus when it is there; generated messages always
SEEDS = [pytest.param("generated", id="generated"), pytest.param("corpus", id="corpus", marks=pytest.mark.corpus)]


def seed_messages(request: pytest.FixtureRequest, seeds: str) -> st.SearchStrategy[bytes]:
    """What ``mutated`` starts from: a corpus message, or a generated one (fixed or drawn)."""
    if seeds == "corpus":
        return st.sampled_from(request.getfixturevalue("corpus"))
    return st.one_of(st.sampled_from(generated_messages()), message())


INTERESTING = [b"\r\n", b"\r\n\r\n", b"\n", b"--", b"\x00", b"\xff\xfe", b'"', b"(", b";", b"=?utf-8?b?", b"?=",
               b"%E2%80%AE", b"Content-Type: multipart/mixed; boundary=x\r\n", b"\r\n--x\r\n", b"\r\n--x--\r\n",
               b"Content-Transfer-Encoding: base64\r\n", b"begin 644 f\r\n", b"=\r\n", b"filename*=utf-8''%",
               b"Content-Type: message/rfc822\r\n\r\n", b"From: a@b.example\r\n"]


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    raw = bytearray(draw(seeds))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "lines"]))
        at = draw(st.integers(0, len(raw)))
        span = draw(st.integers(1, 64))
        if op == "flip" and raw:
            raw[min(at, len(raw) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            raw[at:at] = draw(st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=16)))
        elif op == "delete":
            del raw[at:at + span]
        elif op == "duplicate":
            raw[at:at] = raw[at:at + span] * draw(st.integers(1, 4))
        else:
            raw = bytearray(mutate_lines(bytes(raw), draw))
    return bytes(raw)


def mutate_lines(raw: bytes, draw: st.DrawFn) -> bytes:
    lines = raw.splitlines(keepends=True)
    if not lines:
        return raw
    index = draw(st.integers(0, len(lines) - 1))
    op = draw(st.sampled_from(["duplicate", "delete", "swap"]))
    if op == "duplicate":
        lines.insert(index, lines[index])
    elif op == "delete":
        del lines[index]
    else:
        other = draw(st.integers(0, len(lines) - 1))
        lines[index], lines[other] = lines[other], lines[index]
    return b"".join(lines)


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return corpus_messages()


# --- what a parse must give -----------------------------------------------------------------


def assert_safe(parsed: Any) -> None:
    """Everything parse_message returns can be stored (no surrogates, no NUL) and shown."""
    assert isinstance(parsed.subject, str) and len(parsed.subject) <= SUBJECT_LIMIT
    for text in (parsed.subject, parsed.from_header or "", *parsed.notes, *parsed.skipped):
        text.encode("utf-8")
        assert "\x00" not in text
    assert readable(parsed.subject)
    for value in (parsed.message_id, parsed.in_reply_to, *parsed.references):
        assert value is None or (value.isascii() and value.isprintable() and " " not in value)
    assert [a.position for a in parsed.attachments] == list(range(len(parsed.attachments)))
    assert sum(len(a.data) for a in parsed.attachments) <= LIMITS.max_attachment_bytes
    for attachment in parsed.attachments:
        assert attachment.data
        name = attachment.filename
        if name is not None:
            assert name and readable(name) and len(name) <= LIMITS.max_filename_length
            assert not name.startswith((".", " ")) and "/" not in name and "\\" not in name and ".." not in name
            name.encode("utf-8")


def readable(text: str) -> bool:
    """No control characters, surrogates, line breaks or bidi overrides; one space at a time."""
    bad = any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in BIDI for ch in text)
    return not bad and text == " ".join(text.split())


def assert_same_sender(raw: bytes, parsed: Any) -> None:
    """When the SMTP-time DMARC check finds a From address (runtime.authenticate:
    email.utils.getaddresses on the header as sent), the gate's address, if any, is in its
    domain; when it finds none, nothing can pass DMARC, so the gate's reading does not
    matter. (Raw UTF-8 in a local part reads as surrogates there, as text here.)"""
    header = email.message_from_bytes(raw, policy=email.policy.compat32).get("From")
    try:
        legacy = first_mailbox(str(header)) if header is not None else None
    except RecursionError:
        legacy = None
    if legacy is not None and parsed.from_address is not None:
        assert domain_of(parsed.from_address) == domain_of(legacy), (legacy, parsed.from_address)


def parse_or_malformed(raw: bytes) -> Any:
    try:
        parsed = parse_message(raw)
    except MalformedMessage as refused:
        assert str(refused)
        return None
    assert_safe(parsed)
    assert_same_sender(raw, parsed)
    return parsed


PARSE_SETTINGS = dict(deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("scale", SCALES)
def test_generated_messages_parse_safely(request: pytest.FixtureRequest, scale: int) -> None:
    examples, cases = scaled(request, 900), Counter[str]()

    @settings(max_examples=examples, **PARSE_SETTINGS)  # type: ignore[arg-type]
    @given(raw=message())
    def check(raw: bytes) -> None:
        cases["run"] += 1
        try:
            parsed = parse_message(raw)
        except MimeLimitExceeded:
            return  # a generated message may nest deeper than allowed; that is the right answer
        except MalformedMessage as err:  # a message built well is never unreadable
            raise AssertionError(f"a well-formed message was refused: {err}") from err
        assert_safe(parsed)
        assert_same_sender(raw, parsed)
        cases["with attachments" if parsed.attachments else "without attachments"] += 1

    check()
    report("generated messages", cases)
    assert cases["run"] >= examples and cases["with attachments"] > examples // 10


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seeds", SEEDS)
def test_mutated_messages_parse_or_are_malformed(request: pytest.FixtureRequest, seeds: str, scale: int) -> None:
    examples, cases = scaled(request, 800), Counter[str]()

    @settings(max_examples=examples, **PARSE_SETTINGS)  # type: ignore[arg-type]
    @given(raw=mutated(seed_messages(request, seeds)))
    def check(raw: bytes) -> None:
        cases["run"] += 1
        cases["parsed" if parse_or_malformed(raw) is not None else "malformed"] += 1

    check()
    report(f"mutated {seeds} messages", cases)
    assert cases["run"] >= examples and cases["parsed"] > examples // 2


def report(what: str, cases: Counter[str]) -> None:
    print(f"\n{what}: " + ", ".join(f"{count:,} {name}" for name, count in sorted(cases.items())))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seeds", SEEDS)
def test_parsing_memory_stays_bounded(request: pytest.FixtureRequest, seeds: str, scale: int) -> None:
    # the inputs are at most 70 KB; what the parser holds is a few times that, never tens of MB
    bound = 24 * 1024 * 1024
    examples, peaks = scaled(request, 120), list[int]()

    @settings(max_examples=examples, **PARSE_SETTINGS)  # type: ignore[arg-type]
    @given(raw=st.one_of(message(), mutated(seed_messages(request, seeds))))
    def check(raw: bytes) -> None:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        parse_or_malformed(raw)
        peaks.append(tracemalloc.get_traced_memory()[1] - base)
        assert peaks[-1] < bound, f"{peaks[-1] / 1e6:.1f} MB for a message of {len(raw):,} bytes"

    tracemalloc.start()
    try:
        check()
    finally:
        tracemalloc.stop()
    print(f"\nparse peak memory: max {max(peaks) / 1e6:.2f} MB over {len(peaks)} cases")
    assert len(peaks) >= examples


# --- through the pipeline -------------------------------------------------------------------


class FailedJobs(logging.Handler):
    """Collects the worker's reports of jobs that failed for any reason but bad input."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not any(f"dead-lettered: {kind}:" in message for kind in INTENDED_DEATHS):
            self.failures.append(message)


@pytest.fixture
def fuzz_runtime(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Any]:
    """A runtime whose jobs get one attempt, so a crash shows at once as a dead job."""
    from waypost import runtime as wiring

    overrides: dict[str, Any] = {
        "database": {"url": database_url}, "trusted_networks": ["127.0.0.0/8"],
        "worker": {"max_attempts": 1, "retry_base_delay": 0.05, "retry_max_delay": 0.2, "poll_interval": 0.05},
    }
    if "gate" in Settings.model_fields:  # many cases share a sender: no per-sender rate limit here,
        # and mutations keep their Message-ID: each must reach the app, not be taken for a copy
        overrides["gate"] = {"sender_max_messages": 1_000_000, "duplicate_window_days": 0}
    built = wiring.build(make_settings(**overrides))
    yield built
    built.close()


def run_through(runtime: Any, raw: bytes, failed: FailedJobs) -> str:
    try:
        sender = parse_message(raw).from_address
    except MalformedMessage:
        sender = None
    if sender is not None:
        runtime.allowlist.add(sender)
    journeys = f"{runtime.settings.journeys.mailbox}@{runtime.settings.mail_domain}"
    answered_before = _answers_to(runtime, sender)
    message_id = runtime.inbox.accept(ReceivedMail(raw=raw, mail_from="fuzz@example.org", rcpt_tos=(journeys,),
                                                   peer_ip="127.0.0.1"))
    worker = runtime.worker()

    def settled() -> bool:
        while worker.run_once():  # raising out of here fails the case
            pass
        depth = runtime.queue.depth()
        return not depth.get("queued") and not depth.get("running")

    wait_until(settled, timeout=10, interval=0.01, message="the fuzz case's jobs")
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(inbound_messages).where(inbound_messages.c.id == message_id)).one()
    assert not failed.failures, failed.failures
    assert row.status in ("processed", "refused", "dead") and row.reason, (row.status, row.reason)
    if row.status == "dead":
        assert row.reason.startswith(INTENDED_DEATHS), row.reason
        assert runtime.blobs.exists(row.blob_key), "a dead message lost its raw bytes"
    if row.status == "processed":  # one answer: the journey's reply, or a command's (a subject may be "stop")
        replies = _answers_to(runtime, sender) - answered_before
        assert replies == 1, f"{replies} replies"
    return str(row.status)


def _answers_to(runtime: Any, sender: str | None) -> int:
    """Mail queued to ``sender`` so far, whatever its key: a journey reply, a command's answer
    (``stop-confirmation-…``) or the link an ``export`` job mails."""
    with runtime.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(outbound_messages)
                                .where(outbound_messages.c.recipient == sender)).scalar_one())


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seeds", SEEDS)
def test_pipeline_records_one_outcome_for_any_message(request: pytest.FixtureRequest, seeds: str, scale: int,
                                                      fuzz_runtime: Any) -> None:
    failed, examples, outcomes = FailedJobs(), scaled(request, 200), Counter[str]()
    for name in ("waypost.pipeline", "waypost.outbound", "waypost.apps"):
        logging.getLogger(name).addHandler(failed)

    @settings(max_examples=examples, deadline=5000,  # type: ignore[arg-type]
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(raw=st.one_of(message(), mutated(seed_messages(request, seeds))))
    def check(raw: bytes) -> None:
        failed.failures.clear()
        outcomes[run_through(fuzz_runtime, raw, failed)] += 1

    try:
        check()
    finally:
        for name in ("waypost.pipeline", "waypost.outbound", "waypost.apps"):
            logging.getLogger(name).removeHandler(failed)
    report(f"pipeline outcomes on {fuzz_runtime.engine.dialect.name}", outcomes)
    # the cases must reach the apps, not only the refusals: the corpus seeds are mostly bounces and
    # reports, which robots' silence (RFC 3834) refuses, so about a quarter are processed, varying
    # run to run; an eighth leaves room for that and still fails when nothing gets through
    assert outcomes.total() >= examples and outcomes["processed"] > examples // 8
