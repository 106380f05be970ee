"""SPF, DKIM and DMARC verification against a real DNS server on loopback.

Every lookup travels over UDP/TCP to ``LoopbackDns`` through the resolver ``make_resolver``
builds, so pyspf's and dkimpy's DNS hooks are exercised for real. Messages are signed here with
the project's own signer; addresses come from the documentation ranges (RFC 5737).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from tests.support.dns_server import LoopbackDns
from waypost.mail.auth import AuthVerdict, DkimResult, make_resolver, verify
from waypost.mail.dkim_sign import DkimSigner, generate_key

OUR_IP = "192.0.2.10"  # in example.org's SPF record
FOREIGN_IP = "203.0.113.66"  # nobody's sender, except attacker.test's
SPF_EXAMPLE = f"v=spf1 ip4:{OUR_IP} -all"


@dataclasses.dataclass(frozen=True)
class Keys:
    rsa_pem: bytes
    rsa_txt: str
    other_pem: bytes  # never published: its signatures fail under a selector that holds rsa_txt
    ed_pem: bytes
    ed_txt: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("dkim-keys")
    rsa_txt = generate_key(folder / "rsa.pem", "rsa")
    generate_key(folder / "other.pem", "rsa")
    ed_txt = generate_key(folder / "ed.pem", "ed25519")
    read = lambda name: (folder / name).read_bytes()  # noqa: E731
    return Keys(read("rsa.pem"), rsa_txt, read("other.pem"), read("ed.pem"), ed_txt)


@pytest.fixture
def server(keys: Keys) -> Iterator[LoopbackDns]:
    """example.org: SPF for OUR_IP, DKIM key at sel._domainkey; attacker.test: its own SPF and
    key. No DMARC records: each test publishes the policy it needs."""
    with LoopbackDns() as dns_server:
        dns_server.add_txt("example.org", SPF_EXAMPLE)
        dns_server.add_txt("sel._domainkey.example.org", keys.rsa_txt)
        dns_server.add_txt("attacker.test", f"v=spf1 ip4:{FOREIGN_IP} -all")
        dns_server.add_txt("sel._domainkey.attacker.test", keys.rsa_txt)
        yield dns_server


def message(from_address: str = "alice@example.org", *, extra: str = "", body: str = "Photos from the trip.") -> bytes:
    return (f"{extra}From: Alice <{from_address}>\r\nTo: trips@waypost.test\r\nSubject: Lisbon\r\n"
            "Date: Mon, 02 Mar 2026 08:15:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\n"
            f"{body}\r\n").encode()


def sign(raw: bytes, domain: str, pem: bytes, selector: str = "sel") -> bytes:
    return DkimSigner(domain, selector, pem).sign(raw)


def check(server: LoopbackDns, raw: bytes, *, peer_ip: str = OUR_IP, helo: str = "mx.example.org",
          mail_from: str = "alice@example.org", from_domain: str | None = "example.org") -> AuthVerdict:
    resolver = make_resolver((server.nameserver,), 2.0)
    return verify(raw, peer_ip=peer_ip, helo=helo, mail_from=mail_from, from_domain=from_domain, resolver=resolver)


def bare(verdict: AuthVerdict) -> AuthVerdict:
    """The verdict without its free text, for whole-verdict comparison."""
    return dataclasses.replace(verdict, detail="", dkim=tuple(dataclasses.replace(s, reason="") for s in verdict.dkim))


def expected(*, spf: str, spf_domain: str | None, spf_aligned: bool, dkim: tuple[DkimResult, ...], dmarc: str,
             dmarc_policy: str | None, dmarc_record_found: bool, from_domain: str | None = "example.org",
             spf_scope: str = "mailfrom") -> AuthVerdict:
    return AuthVerdict(spf=spf, spf_domain=spf_domain, spf_aligned=spf_aligned, dkim=dkim, dmarc=dmarc,
                       dmarc_policy=dmarc_policy, dmarc_record_found=dmarc_record_found, from_domain=from_domain,
                       source="smtp", spf_scope=spf_scope)


def test_aligned_spf_and_dkim_pass_dmarc(server: LoopbackDns, keys: Keys) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; rua=mailto:dmarc@example.org")
    verdict = check(server, sign(message(), "example.org", keys.rsa_pem))
    assert bare(verdict) == expected(
        spf="pass", spf_domain="example.org", spf_aligned=True,
        dkim=(DkimResult("example.org", "sel", "pass", True),),
        dmarc="pass", dmarc_policy="reject", dmarc_record_found=True)
    assert verdict.dmarc_pass and verdict.dkim_aligned_pass and verdict.spf_aligned_pass
    assert verdict.to_header("mx.waypost.test") == (
        "mx.waypost.test; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org header.s=sel; "
        "dmarc=pass (p=reject) header.from=example.org")


def test_body_altered_after_signing_fails_dkim_and_dmarc(server: LoopbackDns, keys: Keys) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    server.add_txt("lists.test", "v=spf1 ip4:198.51.100.7 -all")
    signed = sign(message(), "example.org", keys.rsa_pem)
    altered = signed.replace(b"Photos from the trip.", b"Photos from the TRIP.")
    assert altered != signed
    verdict = check(server, altered, peer_ip="198.51.100.7", mail_from="bounce@lists.test")
    assert bare(verdict) == expected(
        spf="pass", spf_domain="lists.test", spf_aligned=False,
        dkim=(DkimResult("example.org", "sel", "fail", True),),
        dmarc="fail", dmarc_policy="reject", dmarc_record_found=True)
    assert "body hash" in verdict.dkim[0].reason
    # the unaltered message passes the same checks: the failure is the alteration
    assert check(server, signed, peer_ip="198.51.100.7", mail_from="bounce@lists.test").dmarc == "pass"


def test_spf_fails_for_a_foreign_ip(server: LoopbackDns) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=quarantine")
    verdict = check(server, message(), peer_ip=FOREIGN_IP)
    assert bare(verdict) == expected(
        spf="fail", spf_domain="example.org", spf_aligned=True, dkim=(),
        dmarc="fail", dmarc_policy="quarantine", dmarc_record_found=True)
    assert check(server, message(), peer_ip=OUR_IP).spf == "pass"


def test_spoofed_from_signed_by_another_domain_does_not_align(server: LoopbackDns, keys: Keys) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    forged = sign(message("alice@example.org"), "attacker.test", keys.rsa_pem)
    verdict = check(server, forged, peer_ip=FOREIGN_IP, mail_from="x@attacker.test", helo="mx.attacker.test")
    assert bare(verdict) == expected(
        spf="pass", spf_domain="attacker.test", spf_aligned=False,
        dkim=(DkimResult("attacker.test", "sel", "pass", False),),
        dmarc="fail", dmarc_policy="reject", dmarc_record_found=True)
    assert not verdict.dkim_aligned_pass and not verdict.aligned_pass and not verdict.dmarc_pass


@pytest.mark.parametrize("policy", ["none", "reject"])
def test_failing_dmarc_reports_the_published_policy(server: LoopbackDns, policy: str) -> None:
    server.add_txt("_dmarc.example.org", f"v=DMARC1; p={policy}")
    verdict = check(server, message(), peer_ip=FOREIGN_IP)
    assert bare(verdict) == expected(
        spf="fail", spf_domain="example.org", spf_aligned=True, dkim=(),
        dmarc="fail", dmarc_policy=policy, dmarc_record_found=True)


@pytest.mark.parametrize(("adkim", "aligned", "dmarc"), [("s", False, "fail"), ("r", True, "pass")])
def test_subdomain_signature_aligns_only_when_relaxed(server: LoopbackDns, keys: Keys, adkim: str,
                                                      aligned: bool, dmarc: str) -> None:
    server.add_txt("_dmarc.example.org", f"v=DMARC1; p=reject; adkim={adkim}")
    server.add_txt("sel._domainkey.mail.example.org", keys.rsa_txt)
    signed = sign(message(), "mail.example.org", keys.rsa_pem)
    verdict = check(server, signed, peer_ip=FOREIGN_IP, mail_from="bounce@lists.test")
    assert bare(verdict) == expected(
        spf="none", spf_domain="lists.test", spf_aligned=False,
        dkim=(DkimResult("mail.example.org", "sel", "pass", aligned),),
        dmarc=dmarc, dmarc_policy="reject", dmarc_record_found=True)


def test_no_dmarc_record_gives_none(server: LoopbackDns, keys: Keys) -> None:
    verdict = check(server, sign(message(), "example.org", keys.rsa_pem))
    assert bare(verdict) == expected(
        spf="pass", spf_domain="example.org", spf_aligned=True,
        dkim=(DkimResult("example.org", "sel", "pass", True),),
        dmarc="none", dmarc_policy=None, dmarc_record_found=False)
    assert verdict.aligned_pass and not verdict.dmarc_pass


def test_forged_authentication_results_header_is_ignored(server: LoopbackDns) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    forged = ("Authentication-Results: mx.waypost.test; spf=pass smtp.mailfrom=example.org; "
              "dkim=pass header.d=example.org; dmarc=pass header.from=example.org\r\n")
    verdict = check(server, message(extra=forged), peer_ip=FOREIGN_IP)
    assert bare(verdict) == expected(
        spf="fail", spf_domain="example.org", spf_aligned=True, dkim=(),
        dmarc="fail", dmarc_policy="reject", dmarc_record_found=True)
    assert "dmarc=fail" in verdict.to_header("mx.waypost.test")


@pytest.mark.parametrize("signed", [False, True])
def test_policy_falls_back_to_the_organizational_domain(server: LoopbackDns, keys: Keys, signed: bool) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=none; sp=reject")
    raw = message("alice@a.b.example.org")
    raw = sign(raw, "example.org", keys.rsa_pem) if signed else raw
    verdict = check(server, raw, peer_ip=FOREIGN_IP, mail_from="bounce@lists.test", from_domain="a.b.example.org")
    assert bare(verdict) == expected(
        spf="none", spf_domain="lists.test", spf_aligned=False,
        dkim=(DkimResult("example.org", "sel", "pass", True),) if signed else (),
        dmarc="pass" if signed else "fail", dmarc_policy="reject", dmarc_record_found=True,
        from_domain="a.b.example.org")
    asked = [name for name, rtype in server.queries if name.startswith("_dmarc.")]
    # RFC 7489 §6.6.3: the From domain, then the organizational domain; no walk up the tree
    assert asked == ["_dmarc.a.b.example.org.", "_dmarc.example.org."]


def test_servfail_everywhere_is_temperror(server: LoopbackDns, keys: Keys) -> None:
    for name in ("example.org", "sel._domainkey.example.org", "_dmarc.example.org"):
        server.fail(name)
    verdict = check(server, sign(message(), "example.org", keys.rsa_pem))
    assert bare(verdict) == expected(
        spf="temperror", spf_domain="example.org", spf_aligned=True,
        dkim=(DkimResult("example.org", "sel", "temperror", True),),
        dmarc="temperror", dmarc_policy=None, dmarc_record_found=False)


def test_servfail_for_the_key_leaves_dmarc_undecided(server: LoopbackDns, keys: Keys) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    server.fail("sel._domainkey.example.org")
    verdict = check(server, sign(message(), "example.org", keys.rsa_pem), peer_ip=FOREIGN_IP)
    # SPF failed, but the aligned signature might verify on a retry: not a DMARC fail yet
    assert bare(verdict) == expected(
        spf="fail", spf_domain="example.org", spf_aligned=True,
        dkim=(DkimResult("example.org", "sel", "temperror", True),),
        dmarc="temperror", dmarc_policy="reject", dmarc_record_found=True)


def test_servfail_for_the_policy_is_dmarc_temperror(server: LoopbackDns, keys: Keys) -> None:
    server.fail("_dmarc.example.org")
    verdict = check(server, sign(message(), "example.org", keys.rsa_pem))
    assert bare(verdict) == expected(
        spf="pass", spf_domain="example.org", spf_aligned=True,
        dkim=(DkimResult("example.org", "sel", "pass", True),),
        dmarc="temperror", dmarc_policy=None, dmarc_record_found=False)


@pytest.mark.parametrize(("aspf", "aligned", "dmarc"), [("r", True, "pass"), ("s", False, "fail")])
def test_null_mail_from_checks_the_helo_identity(server: LoopbackDns, aspf: str, aligned: bool, dmarc: str) -> None:
    server.add_txt("mx.example.org", SPF_EXAMPLE)
    server.add_txt("_dmarc.example.org", f"v=DMARC1; p=reject; aspf={aspf}")
    verdict = check(server, message(), mail_from="", helo="mx.example.org")
    assert bare(verdict) == expected(
        spf="pass", spf_domain="mx.example.org", spf_aligned=aligned, dkim=(),
        dmarc=dmarc, dmarc_policy="reject", dmarc_record_found=True, spf_scope="helo")
    assert "spf=pass smtp.helo=mx.example.org" in verdict.to_header("mx.waypost.test")
    assert ("mx.example.org.", "TXT") in server.queries


def test_each_of_several_signatures_is_verified(server: LoopbackDns, keys: Keys) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    server.add_txt("ed._domainkey.example.org", keys.ed_txt)
    raw = sign(message(), "example.org", keys.ed_pem, selector="ed")  # verifies
    raw = sign(raw, "example.org", keys.rsa_pem, selector="gone")  # no key published
    raw = sign(raw, "example.org", keys.other_pem)  # the key at sel is a different one
    verdict = check(server, raw, peer_ip=FOREIGN_IP)
    assert bare(verdict) == expected(
        spf="fail", spf_domain="example.org", spf_aligned=True,
        dkim=(DkimResult("example.org", "sel", "fail", True),
              DkimResult("example.org", "gone", "permerror", True),
              DkimResult("example.org", "ed", "pass", True)),
        dmarc="pass", dmarc_policy="reject", dmarc_record_found=True)
    assert "no key record at gone._domainkey.example.org" in verdict.dkim[1].reason


@pytest.mark.parametrize("record", ["v=DMARC1; p=bogus", "v=DMARC1; sp=reject"])
def test_malformed_dmarc_record_is_permerror(server: LoopbackDns, keys: Keys, record: str) -> None:
    server.add_txt("_dmarc.example.org", record)
    verdict = check(server, sign(message(), "example.org", keys.rsa_pem))
    assert bare(verdict) == expected(
        spf="pass", spf_domain="example.org", spf_aligned=True,
        dkim=(DkimResult("example.org", "sel", "pass", True),),
        dmarc="permerror", dmarc_policy=None, dmarc_record_found=True)


def test_two_dmarc_records_are_permerror(server: LoopbackDns) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=none")
    server.add_txt("_dmarc.example.org", "not a policy")  # ignored (RFC 7489 §6.6.3 step 2)
    verdict = check(server, message())
    assert (verdict.dmarc, verdict.dmarc_record_found, verdict.dmarc_policy) == ("permerror", True, None)
    assert "2 DMARC records" in verdict.detail


def test_every_lookup_goes_to_the_configured_server(server: LoopbackDns, keys: Keys) -> None:
    server.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    check(server, sign(message(), "example.org", keys.rsa_pem))
    assert {("example.org.", "TXT"), ("sel._domainkey.example.org.", "TXT"),
            ("_dmarc.example.org.", "TXT")} <= set(server.queries)
