"""The Authenticator: SPF, DKIM and DMARC for mail arriving over SMTP, against a real DNS
server on loopback, through one resolver made on first use."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.resolver
import pytest

from tests.support.dns_server import LoopbackDns
from waypost.errors import ConfigError
from waypost.mail import authenticator as authenticator_module
from waypost.mail.auth import make_resolver, verify
from waypost.mail.authenticator import MAX_HEADER_SCAN, Authenticator, from_domain
from waypost.mail.dkim_sign import DkimSigner, generate_key

OUR_IP = "192.0.2.10"  # in example.org's SPF record (RFC 5737 documentation range)


@pytest.fixture(scope="module")
def key_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    path = tmp_path_factory.mktemp("dkim") / "key.pem"
    record = generate_key(path, "rsa")
    return path.read_bytes(), record


@pytest.fixture
def zone(dns: LoopbackDns, key_pem: tuple[bytes, str]) -> LoopbackDns:
    dns.add_txt("example.org", f"v=spf1 ip4:{OUR_IP} -all")
    dns.add_txt("sel._domainkey.example.org", key_pem[1])
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=reject")
    return dns


def message(from_header: str = "Alice <alice@example.org>") -> bytes:
    return (f"From: {from_header}\r\nTo: trips@waypost.test\r\nSubject: Lisbon\r\n"
            "Date: Mon, 02 Mar 2026 08:15:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\n"
            "Photos from the trip.\r\n").encode()


def signed(key_pem: tuple[bytes, str], raw: bytes | None = None) -> bytes:
    return DkimSigner("example.org", "sel", key_pem[0]).sign(raw or message())


def test_a_signed_message_from_an_authorised_ip_passes_dmarc(zone: LoopbackDns, key_pem: tuple[bytes, str]) -> None:
    verdict = Authenticator((zone.nameserver,), 2.0).authenticate(
        signed(key_pem), OUR_IP, "mx.example.org", "alice@example.org")
    assert (verdict.spf, verdict.dmarc, verdict.dmarc_policy, verdict.from_domain) == \
        ("pass", "pass", "reject", "example.org")
    assert [(s.domain, s.result, s.aligned) for s in verdict.dkim] == [("example.org", "pass", True)]


def test_the_verdict_is_what_verify_gives_for_the_from_domain(zone: LoopbackDns, key_pem: tuple[bytes, str]) -> None:
    raw = signed(key_pem)
    direct = verify(raw, peer_ip="203.0.113.66", helo="mx.elsewhere.test", mail_from="x@elsewhere.test",
                    from_domain="example.org", resolver=make_resolver((zone.nameserver,), 2.0))
    got = Authenticator((zone.nameserver,), 2.0).authenticate(raw, "203.0.113.66", "mx.elsewhere.test",
                                                              "x@elsewhere.test")
    assert got == direct


def test_every_lookup_goes_to_the_configured_server(zone: LoopbackDns, key_pem: tuple[bytes, str]) -> None:
    Authenticator((zone.nameserver,), 2.0).authenticate(signed(key_pem), OUR_IP, "mx.example.org",
                                                        "alice@example.org")
    assert {("example.org.", "TXT"), ("sel._domainkey.example.org.", "TXT"),
            ("_dmarc.example.org.", "TXT")} <= set(zone.queries)


def test_trusted_networks_are_the_callers_business(zone: LoopbackDns) -> None:
    """A loopback peer is checked like any other: unsigned local mail does not pass."""
    verdict = Authenticator((zone.nameserver,), 2.0).authenticate(message(), "127.0.0.1", "localhost",
                                                                  "alice@example.org")
    assert (verdict.spf, verdict.dkim, verdict.dmarc) == ("fail", (), "fail")


def test_dns_failure_is_temperror(zone: LoopbackDns, key_pem: tuple[bytes, str]) -> None:
    for name in ("example.org", "sel._domainkey.example.org", "_dmarc.example.org"):
        zone.fail(name)
    verdict = Authenticator((zone.nameserver,), 2.0).authenticate(signed(key_pem), OUR_IP, "mx.example.org",
                                                                  "alice@example.org")
    assert (verdict.spf, [s.result for s in verdict.dkim], verdict.dmarc) == ("temperror", ["temperror"], "temperror")


@pytest.mark.parametrize(("from_header", "expected"), [
    ("Alice <alice@Example.ORG>", "example.org"),
    ("alice@example.org, bob@example.net", None),  # several authors: no single Author Domain
    ("undisclosed-recipients:;", None),
    ("", None),
])
def test_dmarc_is_judged_for_the_single_from_address(from_header: str, expected: str | None) -> None:
    assert from_domain(message(from_header)) == expected


def test_a_from_header_past_the_scanned_header_section_is_not_read() -> None:
    padding = b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"p" * 60) for i in range(MAX_HEADER_SCAN // 70 + 1))
    assert from_domain(padding + message()) is None
    assert from_domain(message()) == "example.org"


def test_a_message_without_a_usable_from_gets_dmarc_none(zone: LoopbackDns) -> None:
    verdict = Authenticator((zone.nameserver,), 2.0).authenticate(
        message("alice@example.org, mallory@attacker.test"), OUR_IP, "mx.example.org", "alice@example.org")
    assert (verdict.spf, verdict.dmarc, verdict.from_domain) == ("pass", "none", None)


def test_the_resolver_is_made_lazily_once_for_all_threads(zone: LoopbackDns, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dns.resolver.Resolver] = []

    def counting(nameservers: tuple[str, ...], timeout: float) -> dns.resolver.Resolver:
        made.append(make_resolver(nameservers, timeout))
        return made[-1]

    monkeypatch.setattr(authenticator_module, "make_resolver", counting)
    checker = Authenticator((zone.nameserver,), 3.0)
    assert made == []
    start = threading.Barrier(8)

    def first_use(_: int) -> dns.resolver.Resolver:
        start.wait(timeout=10)
        return checker.resolver()

    with ThreadPoolExecutor(8) as pool:
        resolvers = list(pool.map(first_use, range(8)))
    assert len(made) == 1 and all(r is made[0] for r in resolvers)
    assert made[0].lifetime == 3.0
    assert [(ns.address, ns.port) for ns in made[0].nameservers] == [("127.0.0.1", zone.port)]


def test_a_bad_nameserver_is_reported_at_first_use_not_construction() -> None:
    checker = Authenticator(("not-an-address",), 2.0)
    with pytest.raises(ValueError, match="not-an-address"):
        checker.authenticate(message(), OUR_IP, "mx.example.org", "alice@example.org")


def test_no_system_resolver_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unconfigured(*args: Any, **kwargs: Any) -> None:
        raise dns.resolver.NoResolverConfiguration()

    monkeypatch.setattr(dns.resolver.Resolver, "__init__", unconfigured)
    with pytest.raises(ConfigError):
        Authenticator((), 2.0).resolver()
