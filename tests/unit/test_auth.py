"""Units of waypost.mail.auth: the header and JSON forms, SES receipts, the resolver settings,
and hostile input. DNS answers come from an in-memory stand-in with dnspython's ``resolve``
signature; tests/integration/test_auth_dns.py runs the same code against a real server."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import dns.name
import dns.rdata
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.zone_resolver import ZoneResolver
from waypost.config import ConfigError
from waypost.mail import auth, spf_check
from waypost.mail.auth import (
    MAX_DKIM_SIGNATURES,
    AuthVerdict,
    DkimResult,
    from_ses_receipt,
    make_resolver,
    organizational_domain,
    verify,
)
from waypost.mail.dkim_sign import DkimSigner, generate_key

OUR_IP = "192.0.2.10"
HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass(frozen=True)
class Signed:
    raw: bytes
    key_txt: str
    key_pem: bytes


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    key_file = tmp_path_factory.mktemp("dkim") / "key.pem"
    key_txt = generate_key(key_file, "rsa")
    raw = (b"From: Alice <alice@example.org>\r\nTo: trips@waypost.test\r\nSubject: Lisbon\r\n"
           b"Date: Mon, 02 Mar 2026 08:15:00 +0000\r\n\r\nPhotos from the trip, day one.\r\n")
    return Signed(DkimSigner("example.org", "sel", key_file.read_bytes()).sign(raw), key_txt, key_file.read_bytes())


def zone_for(key_txt: str) -> ZoneResolver:
    zone = ZoneResolver()
    zone.add_txt("example.org", f"v=spf1 ip4:{OUR_IP} -all")
    zone.add_txt("sel._domainkey.example.org", key_txt)
    zone.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    return zone


def check(raw: bytes, zone: ZoneResolver, **envelope: Any) -> AuthVerdict:
    args = {"peer_ip": OUR_IP, "helo": "mx.example.org", "mail_from": "alice@example.org",
            "from_domain": "example.org", **envelope}
    return verify(raw, resolver=zone, **args)  # type: ignore[arg-type]


def verdict(**changes: Any) -> AuthVerdict:
    base = AuthVerdict(spf="pass", spf_domain="example.org", spf_aligned=True,
                       dkim=(DkimResult("example.org", "sel", "pass", True, "signature verified"),),
                       dmarc="pass", dmarc_policy="reject", dmarc_record_found=True, from_domain="example.org",
                       source="smtp", detail="spf: sender SPF authorized")
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------- Authentication-Results


def split_resinfo(value: str) -> list[str]:
    """Split a header value at ';' outside quoted-strings and comments (RFC 8601 §2.2)."""
    parts, current, quoted, depth, escaped = [], "", False, 0, False
    for ch in value:
        if escaped:
            current, escaped = current + ch, False
            continue
        if ch == "\\" and (quoted or depth):
            current, escaped = current + ch, True
            continue
        if ch == '"' and not depth:
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth += 1
        elif ch == ")" and not quoted and depth:
            depth -= 1
        elif ch == ";" and not quoted and not depth:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    assert not quoted and not depth, f"unbalanced quoting in {value!r}"
    return [*parts, current.strip()]


def test_header_lists_every_method_in_rfc8601_shape() -> None:
    two = verdict(dkim=(DkimResult("example.org", "sel", "pass", True), DkimResult("lists.test", "k1", "fail", False)))
    assert two.to_header("mx.waypost.test") == (
        "mx.waypost.test; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org header.s=sel; "
        "dkim=fail header.d=lists.test header.s=k1; dmarc=pass (p=reject) header.from=example.org")


def test_header_without_signatures_or_identities() -> None:
    bare = verdict(spf="none", spf_domain=None, spf_aligned=False, dkim=(), dmarc="none", dmarc_policy=None,
                   dmarc_record_found=False, from_domain=None)
    assert bare.to_header("mx") == "mx; spf=none; dkim=none; dmarc=none"
    assert verdict(spf_scope="helo", spf_domain="mx.example.org").to_header("mx").startswith(
        "mx; spf=pass smtp.helo=mx.example.org;")
    with pytest.raises(ValueError, match="authserv-id"):
        bare.to_header("  ")


def test_header_marks_verdicts_that_ses_made() -> None:
    ses = from_ses_receipt({"spfVerdict": {"status": "PASS"}, "dkimVerdict": {"status": "PASS"},
                            "dmarcVerdict": {"status": "PASS"}}, "example.org")
    assert ses.to_header("mx") == (
        "mx; spf=pass (via Amazon SES); dkim=pass (via Amazon SES) header.d=example.org; "
        "dmarc=pass (via Amazon SES) header.from=example.org")


def test_hostile_identifiers_are_quoted_not_parsed() -> None:
    evil = verdict(dkim=(DkimResult('x.test; dmarc=pass header.from="example.org"', "s\r\nX-Evil: 1", "pass", False),))
    header = evil.to_header("mx.waypost.test")
    parts = split_resinfo(header)
    assert [part.split("=", 1)[0].split()[0] for part in parts[1:]] == ["spf", "dkim", "dmarc"]
    assert "\r" not in header and "\n" not in header
    assert 'header.d="x.test; dmarc=pass header.from=\\"example.org\\""' in header


@given(domain=st.text(max_size=40), selector=st.text(max_size=20), authserv=st.text(min_size=1, max_size=20))
@HOSTILE
def test_no_value_can_add_or_break_a_resinfo(domain: str, selector: str, authserv: str) -> None:
    if not authserv.strip():
        return
    header = verdict(dkim=(DkimResult(domain, selector, "fail", False),), from_domain=None,
                     spf_domain=domain or None).to_header(authserv)
    assert header.isascii() and not re.search(r"[\x00-\x1f\x7f]", header)
    assert len(split_resinfo(header)) == 4  # authserv-id, spf, dkim, dmarc


# ---------------------------------------------------------------- JSON


def test_json_round_trip_of_a_full_verdict() -> None:
    original = verdict(dkim=(DkimResult("example.org", "sel", "pass", True, "ok"),
                             DkimResult("", "", "permerror", False, "malformed")),
                       spam="pass", virus="fail", spf_scope="helo", source="ses")
    stored = json.loads(json.dumps(original.to_json()))
    assert stored["version"] == 1 and stored["dkim"][1]["result"] == "permerror"
    assert AuthVerdict.from_json(stored) == original


_WORDS = st.sampled_from(sorted(auth.DMARC_RESULTS))
_VERDICTS = st.builds(
    AuthVerdict, spf=st.sampled_from(sorted(auth.SPF_RESULTS)), spf_domain=st.none() | st.text(max_size=10),
    spf_aligned=st.booleans(),
    dkim=st.lists(st.builds(DkimResult, st.text(max_size=10), st.text(max_size=5),
                            st.sampled_from(sorted(auth.DKIM_RESULTS)), st.booleans(), st.text(max_size=10)),
                  max_size=3).map(tuple),
    dmarc=_WORDS, dmarc_policy=st.none() | st.sampled_from(sorted(auth.DMARC_POLICIES)),
    dmarc_record_found=st.booleans(), from_domain=st.none() | st.text(max_size=10),
    source=st.sampled_from(["smtp", "ses"]), detail=st.text(max_size=20), spam=st.none() | st.text(max_size=5),
    virus=st.none() | st.text(max_size=5), spf_scope=st.sampled_from(["mailfrom", "helo"]))


@given(_VERDICTS)
@HOSTILE
def test_any_verdict_survives_json(original: AuthVerdict) -> None:
    assert AuthVerdict.from_json(json.loads(json.dumps(original.to_json()))) == original


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("spf"),
    lambda d: d.update(version=2),
    lambda d: d.update(spf="maybe"),
    lambda d: d.update(dmarc_policy="drop"),
    lambda d: d.update(spf_aligned="yes"),
    lambda d: d.update(dkim="pass"),
    lambda d: d["dkim"][0].update(result="great"),
    lambda d: d["dkim"][0].pop("aligned"),
])
def test_from_json_rejects_what_to_json_never_writes(damage: Any) -> None:
    stored = verdict().to_json()
    damage(stored)
    with pytest.raises(ValueError):
        AuthVerdict.from_json(stored)


def test_unknown_result_words_are_refused() -> None:
    with pytest.raises(ValueError):
        verdict(dmarc="softfail")
    with pytest.raises(ValueError):
        DkimResult("example.org", "sel", "ok", True)


# ---------------------------------------------------------------- SES receipts

SES_STATUSES = ["PASS", "FAIL", "GRAY", "PROCESSING_FAILED"]
SES_WORD = {"PASS": "pass", "FAIL": "fail", "GRAY": "none", "PROCESSING_FAILED": "temperror"}


@pytest.mark.parametrize(("spf_status", "dkim_status", "dmarc_status"), list(itertools.product(SES_STATUSES, repeat=3)))
def test_every_ses_verdict_combination(spf_status: str, dkim_status: str, dmarc_status: str) -> None:
    receipt = {"spfVerdict": {"status": spf_status}, "dkimVerdict": {"status": dkim_status},
               "dmarcVerdict": {"status": dmarc_status}, "spamVerdict": {"status": "PASS"},
               "virusVerdict": {"status": "GRAY"}}
    got = from_ses_receipt(receipt, "Example.ORG")
    dmarc_pass = dmarc_status == "PASS"
    assert bare(got) == AuthVerdict(
        spf=SES_WORD[spf_status], spf_domain=None, spf_aligned=dmarc_pass and spf_status == "PASS",
        dkim=(DkimResult("example.org", "", SES_WORD[dkim_status], dmarc_pass and dkim_status == "PASS"),),
        dmarc=SES_WORD[dmarc_status], dmarc_policy=None, dmarc_record_found=dmarc_status in ("PASS", "FAIL"),
        from_domain="example.org", source="ses", spam="pass", virus="gray")
    assert got.dmarc_pass is dmarc_pass
    assert got.dkim_aligned_pass is (dmarc_pass and dkim_status == "PASS")


def bare(got: AuthVerdict) -> AuthVerdict:
    return dataclasses.replace(got, detail="", dkim=tuple(dataclasses.replace(s, reason="") for s in got.dkim))


@pytest.mark.parametrize(("policy", "expected"), [
    ("reject", "reject"), ("QUARANTINE", "quarantine"), ({"status": "none"}, "none"),
    (None, None), ("drop-it", None), (42, None),
])
def test_ses_dmarc_policy_in_either_shape(policy: Any, expected: str | None) -> None:
    receipt = {"dmarcVerdict": {"status": "FAIL"}, **({} if policy is None else {"dmarcPolicy": policy})}
    got = from_ses_receipt(receipt, "example.org")
    assert (got.dmarc, got.dmarc_policy, got.dmarc_record_found) == ("fail", expected, True)


@pytest.mark.parametrize("receipt", [
    {}, {"spfVerdict": "PASS"}, {"spfVerdict": {"status": 1}}, {"dkimVerdict": None}, [], "receipt",
    {"spfVerdict": {"status": "MAYBE"}, "dmarcVerdict": {"status": "MAYBE"}, "dkimVerdict": {"status": ""}},
])
def test_ses_receipt_of_odd_shape_never_passes(receipt: Any) -> None:
    got = from_ses_receipt(receipt, None)
    assert not got.dmarc_pass and not got.aligned_pass and got.from_domain is None
    assert got.spf in ("none", "permerror") and got.dmarc in ("none", "permerror")


def test_ses_unknown_status_is_permerror_and_missing_is_none() -> None:
    got = from_ses_receipt({"spfVerdict": {"status": "MAYBE"}}, "example.org")
    assert (got.spf, got.dkim, got.dmarc, got.spam, got.virus) == ("permerror", (), "none", None, None)


# ---------------------------------------------------------------- the resolver


def test_configured_nameservers_with_ports_and_no_system_fallback() -> None:
    resolver = make_resolver(("127.0.0.1:5353", "[::1]:53", "192.0.2.1"), 3.0)
    assert [(ns.address, ns.port) for ns in resolver.nameservers] == [
        ("127.0.0.1", 5353), ("::1", 53), ("192.0.2.1", 53)]
    assert resolver.lifetime == 3.0 and resolver.timeout <= 3.0
    assert resolver.search == [] and resolver.domain == dns.name.root


@pytest.mark.parametrize("bad", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:70000", "[::1]x", "::1:53:x", ""])
def test_malformed_nameserver_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        make_resolver((bad,), 1.0)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make_resolver(("127.0.0.1",), 0)


def test_no_nameservers_means_the_system_resolver() -> None:
    if not Path("/etc/resolv.conf").is_file():
        with pytest.raises(ConfigError):
            make_resolver((), 1.0)
        return
    system = dns.resolver.Resolver()
    assert [str(ns) for ns in make_resolver((), 1.0).nameservers] == [str(ns) for ns in system.nameservers]


@pytest.mark.parametrize(("domain", "organizational"), [
    ("a.b.example.org", "example.org"), ("example.org", "example.org"), ("mail.example.co.uk", "example.co.uk"),
    ("alice.github.io", "alice.github.io"), ("co.uk", "co.uk"),
])
def test_organizational_domain_from_the_bundled_list(domain: str, organizational: str) -> None:
    assert organizational_domain(domain) == organizational


# ---------------------------------------------------------------- verification with a stand-in zone


def test_verify_routes_pyspf_through_the_given_resolver(signed: Signed) -> None:
    zone = zone_for(signed.key_txt)
    got = check(signed.raw, zone)
    assert bare(got) == bare(verdict())
    assert ("example.org", "TXT") in zone.queries and ("sel._domainkey.example.org", "TXT") in zone.queries
    assert spf_check.spf.DNSLookup is spf_check.spf.DNSLookup_dnspython  # pyspf's module as shipped


def test_invalid_policy_with_rua_acts_as_p_none(signed: Signed) -> None:
    zone = zone_for(signed.key_txt)
    zone.records[("_dmarc.example.org", "TXT")] = ['"v=DMARC1; p=block; rua=mailto:d@example.org"']
    got = check(signed.raw, zone)
    assert (got.dmarc, got.dmarc_policy, got.dmarc_record_found) == ("pass", "none", True)


def test_spf_permerror_for_a_broken_record(signed: Signed) -> None:
    zone = zone_for(signed.key_txt)
    zone.records[("example.org", "TXT")] = ['"v=spf1 ip4:300.1.1.1 -all"']
    assert check(signed.raw, zone).spf == "permerror"


def test_missing_envelope_gives_spf_none_and_no_from_gives_dmarc_none(signed: Signed) -> None:
    zone = zone_for(signed.key_txt)
    got = check(signed.raw, zone, peer_ip=None, helo=None, mail_from=None, from_domain=None)
    assert (got.spf, got.spf_domain, got.dmarc, got.from_domain) == ("none", None, "none", None)
    assert got.dkim[0].result == "pass" and not got.dkim[0].aligned
    assert check(signed.raw, zone, peer_ip="list").spf == "none"  # pyspf's own magic value is no address


def test_thousands_of_signatures_are_capped(signed: Signed) -> None:
    zone = zone_for(signed.key_txt)
    header, rest = signed.raw.split(b"\r\n", 1)
    while not rest.startswith(b"From:"):  # the signature header is folded over several lines
        line, rest = rest.split(b"\r\n", 1)
        header += b"\r\n" + line
    raw = (header + b"\r\n") * 3000 + rest
    got = check(raw, zone)
    assert len(got.dkim) == MAX_DKIM_SIGNATURES and all(s.result == "pass" for s in got.dkim)
    assert f"3000 signature(s), only the first {MAX_DKIM_SIGNATURES} verified" in got.detail
    assert zone.queries.count(("sel._domainkey.example.org", "TXT")) == MAX_DKIM_SIGNATURES


def test_huge_header_and_malformed_signatures(signed: Signed) -> None:
    zone = zone_for(signed.key_txt)
    junk = [b"DKIM-Signature: v=1; a=rsa-sha256; d=; s=\r\n", b"DKIM-Signature: ;;;===\r\n",
            b"DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=a; h=from; bh=!!!; b=???\r\n",
            b"X-Long: " + b"a" * 1_000_000 + b"\r\n"]
    got = check(b"".join(junk) + signed.raw, zone)
    assert [s.result for s in got.dkim] == ["permerror", "permerror", "permerror", "pass"]


def der(tag: int, body: bytes) -> bytes:
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag]) + (bytes([len(body)]) if len(body) < 128 else bytes([0x80 | len(size)]) + size) + body


def rsa_key_record(modulus: int, exponent: int) -> str:
    """A DKIM key record (RFC 6376 §3.6.1) holding any modulus and exponent, as SubjectPublicKeyInfo."""
    integer = lambda value: der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))  # noqa: E731
    rsa_public_key = der(0x30, integer(modulus) + integer(exponent))
    algorithm = der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + der(0x05, b""))
    spki = der(0x30, algorithm + der(0x03, b"\x00" + rsa_public_key))
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode("ascii")


@pytest.mark.parametrize(("modulus_bits", "exponent_bits"), [(16384, 17), (2048, 200)])
def test_keys_too_costly_to_verify_are_refused_by_policy(signed: Signed, modulus_bits: int,
                                                         exponent_bits: int) -> None:
    zone = zone_for(signed.key_txt)
    zone.records[("sel._domainkey.example.org", "TXT")] = []
    zone.add_txt("sel._domainkey.example.org",
                 rsa_key_record((1 << (modulus_bits - 1)) | 1, (1 << (exponent_bits - 1)) | 1))
    got = check(signed.raw, zone)
    assert [(s.result, s.aligned) for s in got.dkim] == [("policy", True)]
    assert "over the local limit" in got.dkim[0].reason and got.dmarc == "pass"  # SPF still passes aligned


@pytest.mark.parametrize(("extra_fields", "result"), [(auth.MAX_SIGNED_FIELDS - 1, "pass"),
                                                      (auth.MAX_SIGNED_FIELDS, "policy")])
def test_signatures_listing_too_many_fields_are_refused(signed: Signed, extra_fields: int, result: str) -> None:
    key = serialization.load_pem_private_key(signed.key_pem, password=None)
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    raw = signed.raw.split(b"\r\nFrom:", 1)[1]
    raw = b"From:" + raw
    fields = [b"from", *(b"x-field-%d" % i for i in range(extra_fields))]  # absent fields may be signed
    signature = dkim.sign(raw, b"sel", b"example.org", pkcs1, include_headers=fields)
    got = check(signature + raw, zone_for(signed.key_txt))
    assert [s.result for s in got.dkim] == [result]


def signed_with_body_length(signed: Signed) -> bytes:
    """The fixture's message signed again by dkimpy with l= (the whole body, as signers write it)."""
    key = serialization.load_pem_private_key(signed.key_pem, password=None)
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    raw = b"From:" + signed.raw.split(b"\r\nFrom:", 1)[1]
    signature = dkim.sign(raw, b"sel", b"example.org", pkcs1, canonicalize=(b"relaxed", b"relaxed"), length=True)
    assert re.search(rb";\s*l=\d+;", signature)
    return signature + raw


def test_a_body_length_limit_covering_the_whole_body_passes(signed: Signed) -> None:
    got = check(signed_with_body_length(signed), zone_for(signed.key_txt), peer_ip="203.0.113.66")
    assert [(s.result, s.aligned) for s in got.dkim] == [("pass", True)] and got.dmarc == "pass"


@pytest.mark.parametrize("appended", [b"Pay at https://attacker.test/invoice\r\n", b"\r\n\r\nx\r\n"])
def test_content_appended_after_a_body_length_limit_is_not_authenticated(signed: Signed, appended: bytes) -> None:
    """RFC 6376 §8.2: the signature still verifies over its l= octets, but what follows is
    unsigned, so it may not count for DMARC (SPF fails here: a replay from elsewhere)."""
    raw = signed_with_body_length(signed) + appended
    body_octets = len(dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed").canonicalize_body(
        raw.split(b"\r\n\r\n", 1)[1]))
    got = check(raw, zone_for(signed.key_txt), peer_ip="203.0.113.66")
    assert [s.result for s in got.dkim] == ["policy"] and not got.dkim_aligned_pass
    assert got.dkim[0].reason == f"body length limit covers only 32 of {body_octets} octets"
    assert got.dmarc == "fail" and not got.dmarc_pass


@pytest.mark.parametrize(("padding", "result"), [(auth.MAX_HEADER_FIELDS - 100, "pass"),
                                                 (auth.MAX_HEADER_FIELDS, "policy")])
def test_header_blocks_beyond_the_limit_are_not_verified(signed: Signed, padding: int, result: str) -> None:
    raw = b"".join(b"Received: from hop%d\r\n" % i for i in range(padding)) + signed.raw
    assert [s.result for s in check(raw, zone_for(signed.key_txt)).dkim] == [result]


@given(raw=st.binary(max_size=2048), peer=st.none() | st.text(max_size=20) | st.ip_addresses().map(str),
       helo=st.none() | st.text(max_size=30), mail_from=st.none() | st.text(max_size=30),
       from_domain=st.none() | st.text(max_size=30))
@HOSTILE
def test_random_input_never_raises(raw: bytes, peer: str | None, helo: str | None, mail_from: str | None,
                                   from_domain: str | None) -> None:
    got = verify(raw, peer_ip=peer, helo=helo, mail_from=mail_from, from_domain=from_domain,
                 resolver=ZoneResolver())  # type: ignore[arg-type]
    assert AuthVerdict.from_json(got.to_json()) == got
    assert not got.dmarc_pass and "internal error" not in got.detail


def mutate(raw: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(raw)
    for kind, where, value in edits:
        at = where % (len(data) + 1)
        if kind == 0 and at < len(data):
            data[at] = value
        elif kind == 1:
            data[at:at] = bytes([value])
        elif kind == 2:
            del data[at:at + value % 8 + 1]
        else:  # repeat a stretch: duplicated header lines, repeated tags
            data[at:at] = data[at:at + value]
    return bytes(data)


_EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6)


@given(edits=_EDITS)
@HOSTILE
def test_mutated_signed_message_never_raises(signed: Signed, edits: list[tuple[int, int, int]]) -> None:
    got = check(mutate(signed.raw, edits), zone_for(signed.key_txt), peer_ip="203.0.113.66")
    assert "internal error" not in got.detail
    assert got.spf == "fail" and all(s.result in auth.DKIM_RESULTS for s in got.dkim)


@given(data=st.data())
@HOSTILE
def test_any_changed_body_letter_breaks_the_signature(signed: Signed, data: st.DataObject) -> None:
    start = signed.raw.index(b"\r\n\r\n") + 4
    letters = [i for i in range(start, len(signed.raw)) if chr(signed.raw[i]).isalpha()]
    at = data.draw(st.sampled_from(letters))
    new = data.draw(st.sampled_from(b"abcdefghijklmnopqrstuvwxyz").filter(lambda c: c != signed.raw[at]))
    changed = signed.raw[:at] + bytes([new]) + signed.raw[at + 1:]
    got = check(changed, zone_for(signed.key_txt), peer_ip="203.0.113.66")
    assert [s.result for s in got.dkim] == ["fail"] and got.dmarc == "fail"


def test_changed_subject_breaks_the_signature(signed: Signed) -> None:
    got = check(signed.raw.replace(b"Subject: Lisbon", b"Subject: Lisbom"), zone_for(signed.key_txt))
    assert [s.result for s in got.dkim] == ["fail"] and got.dkim[0].reason == "signature did not verify"


@pytest.fixture(autouse=True)
def _pyspf_left_as_shipped() -> Iterator[None]:
    yield
    assert spf_check.spf.DNSLookup is spf_check.spf.DNSLookup_dnspython
    assert not hasattr(spf_check.spf, "_waypost_original_lookup")
