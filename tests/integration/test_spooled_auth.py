"""A message on disk (the SMTP spool's file) is authenticated from the file, in pieces, with the
verdict the whole message in memory gets; and a big message through a real SMTP listener is
authenticated and stored that way, byte for byte behind its trace lines."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from dkim.canonicalization import ALGORITHMS
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import corpus_dir
from tests.integration.test_smtp_refusal import JOURNEYS, rows, send, serve, wired  # noqa: F401  (fixtures)
from tests.support.dns_server import LoopbackDns
from waypost.ingress.limits import SessionLimits
from waypost.ingress.smtp import Spooling
from waypost.ingress.spool import FILE_OVER, InflightBudget, MessageSpool
from waypost.mail.auth import make_resolver
from waypost.mail.authenticator import Authenticator
from waypost.mail.dkim_body import CanonicalBody
from waypost.mail.dkim_sign import generate_key
from waypost.mail.dkim_verify import check_dkim
from waypost.mail.spooled import SpooledMessage

SELECTOR = "big"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    path = tmp_path_factory.mktemp("dkim") / "key.pem"
    record = generate_key(path, "rsa")
    return path.read_bytes(), record


@pytest.fixture
def zone(dns: LoopbackDns, key: tuple[bytes, str]) -> LoopbackDns:
    dns.add_txt(f"{SELECTOR}._domainkey.example.org", key[1])
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    dns.add_txt("example.org", "v=spf1 ip4:192.0.2.1 -all")  # 127.0.0.1 is not ann's server: DKIM must carry it
    return dns


def sign(key: tuple[bytes, str], raw: bytes, canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
         length: bool = False) -> bytes:
    return dkim.sign(raw, SELECTOR.encode(), b"example.org", key[0], canonicalize=canonicalize, length=length,
                     include_headers=[b"from", b"to", b"subject", b"message-id"], linesep=b"\r\n") + raw


def on_disk(raw: bytes, directory: Path) -> tuple[MessageSpool, SpooledMessage]:
    """``raw`` through a spool that keeps nothing in memory, in lines as SMTP delivers them."""
    spool = MessageSpool(InflightBudget(1024 * 1024), SessionLimits(), directory, file_over=0)
    for line in raw.splitlines(keepends=True):
        spool.write(line)
    assert spool.on_disk
    return spool, spool.spooled()


def body(lines: int = 200, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    words = [b"journey", b"photo", b"  spaced  ", b"\ttab", b"x" * 70, b""]
    return b"".join(b" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) + b"\r\n" for _ in range(lines))


HEAD = (b"From: Ann <ann@example.org>\r\nTo: journeys@waypost.test\r\nSubject: Lisbon\r\n"
        b"Message-ID: <big-1@example.org>\r\n\r\n")


def cases(key: tuple[bytes, str]) -> dict[str, bytes]:
    plain = HEAD + body()
    return {
        "relaxed": sign(key, plain),
        "simple": sign(key, plain, (b"simple", b"simple")),
        "trailing empty lines": sign(key, plain + b"\r\n\r\n  \r\n\r\n", (b"relaxed", b"simple")),
        "bare LF in the body": sign(key, HEAD + b"one\ntwo \n\nthree\r\n\n\r\n"),
        "l= covering all": sign(key, plain, length=True),
        "l= then appended": sign(key, plain, length=True) + b"Click here\r\n",
        "tampered body": sign(key, plain).replace(b"journey", b"Journey", 1),
        "tampered header": sign(key, plain).replace(b"Subject: Lisbon", b"Subject: Porto"),
        "empty body": sign(key, HEAD),
        "no signature": plain,
        "unparseable header": b"not a header line\r\n" + plain,
    }


@pytest.mark.parametrize("case", ["relaxed", "simple", "trailing empty lines", "bare LF in the body",
                                  "l= covering all", "l= then appended", "tampered body", "tampered header",
                                  "empty body", "no signature", "unparseable header"])
def test_dkim_from_the_file_is_what_dkimpy_finds_in_memory(zone: LoopbackDns, key: tuple[bytes, str],
                                                          tmp_path: Path, case: str) -> None:
    raw = cases(key)[case]
    resolver = make_resolver((zone.nameserver,), 2.0)
    spool, spooled = on_disk(raw, tmp_path)
    try:
        assert check_dkim(spooled, resolver) == check_dkim(raw, resolver)
    finally:
        spool.close()
    if case in ("relaxed", "simple", "bare LF in the body", "l= covering all", "empty body"):
        assert [s.result for s in check_dkim(raw, resolver)[0]] == ["pass"]  # the cases mean what they say


CORPUS_SIGNED = ["dkimpy_exim_ed25519.eml", "dkimpy_gmail_degenerate_folding.eml", "dkimpy_rfc6376_dual_signed.eml",
                 "mimekit_gmail.eml", "mimekit_gmail_multipart_related.eml", "mimekit_gmail_no_end_boundary.eml",
                 "mimekit_rfc8463_example.eml"]


@pytest.mark.corpus
@pytest.mark.parametrize("name", CORPUS_SIGNED)
def test_real_signed_mail_verifies_from_the_file_as_in_memory(dns: LoopbackDns, tmp_path: Path, name: str) -> None:
    folder = corpus_dir() / "dkim"
    for record, entry in json.loads((folder / "dns_records.json").read_text()).items():
        dns.add_txt(record.rstrip("."), entry["txt"])
    raw = (folder / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # as SMTP carries it
    resolver = make_resolver((dns.nameserver,), 2.0)
    spool, spooled = on_disk(raw, tmp_path)
    try:
        from_file = check_dkim(spooled, resolver)
    finally:
        spool.close()
    assert from_file == check_dkim(raw, resolver)
    assert {s.result for s in from_file[0]} == {"pass"}  # every signature, ed25519 and RSA, as the corpus says


def test_the_whole_verdict_from_the_file_is_the_in_memory_one(zone: LoopbackDns, key: tuple[bytes, str],
                                                              tmp_path: Path) -> None:
    raw = cases(key)["relaxed"]
    checks = Authenticator((zone.nameserver,), 2.0)
    spool, spooled = on_disk(raw, tmp_path)
    try:
        from_file = checks.authenticate(spooled, "127.0.0.1", "mail.example.org", "ann@example.org")
    finally:
        spool.close()
    assert from_file == checks.authenticate(raw, "127.0.0.1", "mail.example.org", "ann@example.org")
    assert (from_file.dmarc, [s.result for s in from_file.dkim]) == ("pass", ["pass"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n", b"x"]), max_size=60),
       st.lists(st.integers(1, 12), max_size=20))
def test_the_streamed_canonical_body_is_dkimpys_for_any_split(parts: list[bytes], cuts: list[int]) -> None:
    text = b"".join(parts)
    _, whole = dkim.rfc822_parse(b"From: a@example.org\r\n\r\n" + text)
    pieces, rest = [], text
    for cut in cuts:  # pieces end at a line end, as the file is read (the last may not)
        end = rest.find(b"\n", cut) + 1
        if not end:
            break
        pieces.append(rest[:end])
        rest = rest[end:]
    pieces.append(rest)
    for algorithm in ALGORITHMS.values():
        out: list[bytes] = []
        canonical = CanonicalBody(algorithm, out.append)
        for piece in pieces:
            canonical.feed(piece)
        canonical.end()
        assert b"".join(out) == algorithm.canonicalize_body(whole)


def test_a_big_signed_message_is_authenticated_and_stored_from_the_spool_file(
        wired: Callable[..., Any], serve: Callable[..., Any],  # noqa: F811
        zone: LoopbackDns, key: tuple[bytes, str]) -> None:
    """Past FILE_OVER the data goes to a file as it arrives and is never held whole again: the
    budget never lent more than the threshold, DKIM passed from the file (SPF fails for
    127.0.0.1, so DMARC p=reject rests on it), and the blob is the message behind our lines."""
    raw = sign(key, HEAD + body(lines=120_000))
    assert len(raw) > FILE_OVER + 1024 * 1024
    budget = InflightBudget(64 * 1024 * 1024)
    runtime = wired()
    spool_directory = runtime.settings.data_dir / "spool"
    runtime, listener = serve(runtime, Spooling(budget, spool_directory))
    assert send(listener, raw, [JOURNEYS], mail_from="ann@example.org") == b"250 2.0.0"
    assert budget.peak <= FILE_OVER + 64 * 1024
    [row] = rows(runtime)
    assert (row.auth["dmarc"], row.auth["spf"], [(s["result"], s["aligned"]) for s in row.auth["dkim"]]) == \
        ("pass", "fail", [("pass", True)])
    stored = runtime.blobs.get(row.blob_key)
    assert stored.endswith(raw) and row.size == len(stored)
    trace = stored[:-len(raw)]
    assert trace.startswith(b"Authentication-Results: mx.waypost.test;") and b"\r\nReceived: from " in trace
    assert trace.endswith(b"\r\n") and not [p for p in spool_directory.rglob("*") if p.is_file()]
