"""`waypost doctor` in SMTP mode against a real DNS server on loopback: a clean zone, and the
same zone with one fault each. Everything goes through the CLI (exit status, --json), and the
records travel over UDP/TCP through the resolver ``dns_nameservers`` configures."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.conftest import wait_until
from tests.support.dns_server import LoopbackDns
from waypost.cli import cli
from waypost.mail.dkim_sign import generate_key

DOMAIN = "example.org"
HELO = "mail.example.org"
BOUNCES = "bounces.example.org"
OUR_IP = "192.0.2.10"  # RFC 5737 documentation addresses
SELECTOR = "wp1"


@dataclass
class Zone:
    """Records by (name, type); a fault edits this before it is served."""

    records: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def set(self, name: str, rtype: str, *values: Any) -> None:
        self.records[(name, rtype)] = list(values)

    def serve(self, dns: LoopbackDns) -> None:
        adders = {"TXT": dns.add_txt, "A": dns.add_a, "PTR": dns.add_ptr, "CNAME": dns.add_cname}
        for (name, rtype), values in self.records.items():
            for value in values:
                if rtype == "MX":
                    dns.add_mx(name, value[1], value[0])
                else:
                    adders[rtype](name, value)


@dataclass(frozen=True)
class Keys:
    ours: Path
    ours_txt: str
    other_txt: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("doctor-keys")
    ours_txt = generate_key(folder / "ours.pem")
    return Keys(folder / "ours.pem", ours_txt, generate_key(folder / "other.pem"))


def certificate(path: Path, host: str, not_after: datetime) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_after - timedelta(days=90))
            .not_valid_after(not_after).add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), False)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def clean_zone(keys: Keys) -> Zone:
    zone = Zone()
    zone.set(DOMAIN, "MX", (10, HELO))
    zone.set(HELO, "A", OUR_IP)
    zone.set(OUR_IP, "PTR", HELO)
    zone.set(BOUNCES, "TXT", f"v=spf1 ip4:{OUR_IP} -all")
    zone.set(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT", keys.ours_txt)
    zone.set(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}")
    zone.set(f"_smtp._tls.{DOMAIN}", "TXT", f"v=TLSRPTv1; rua=mailto:tls@{DOMAIN}")
    return zone


def write_config(data_dir: Path, dns: LoopbackDns, keys: Keys, cert: Path | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tls = f'tls_cert_path = "{cert}"\n' if cert else ""
    (data_dir / "waypost.toml").write_text(
        f'mail_domain = "{DOMAIN}"\nbase_url = "https://{DOMAIN}"\ndns_nameservers = ["{dns.nameserver}"]\n'
        f"dns_timeout = 2.0\n"
        f'[outbound]\ntransport = "smtp"\nbounce_domain = "{BOUNCES}"\n'
        f'[smtp]\nhostname = "{HELO}"\n{tls}'
        f'[dkim]\nselector = "{SELECTOR}"\nprivate_key_path = "{keys.ours}"\n'
        f'[doctor]\nsending_ips = ["{OUR_IP}"]\n', encoding="utf-8")


Doctor = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def doctor(tmp_path: Path, dns: LoopbackDns, keys: Keys) -> Doctor:
    """Serves the zone (once per test), writes the configuration, runs `waypost doctor --json`."""
    served: list[bool] = []

    def run(zone: Zone, *, cert: Path | None | str = "valid") -> tuple[int, dict[str, Any]]:
        if not served:
            zone.serve(dns)
            served.append(True)
        if cert == "valid":
            cert = certificate(tmp_path / "cert.pem", HELO, datetime.now(UTC) + timedelta(days=60))
        write_config(tmp_path / "data", dns, keys, cert if isinstance(cert, Path) else None)
        result = CliRunner().invoke(cli, ["doctor", "--json", "--data-dir", str(tmp_path / "data")])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result.exit_code, json.loads(result.stdout)

    return run


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def test_a_clean_zone_passes_every_check(doctor: Doctor, keys: Keys) -> None:
    code, report = doctor(clean_zone(keys))
    checks = by_name(report)
    assert {name: c["status"] for name, c in checks.items() if c["status"] not in ("ok", "info")} == {}
    assert code == 0 and report["worst"] == "ok"
    expected = {"mx", "spf", "dkim", f"ptr:{OUR_IP}", "helo", "tls.certificate", "mta_sts", "tls_rpt",
                f"dmarc:{DOMAIN}", f"alignment:{DOMAIN}"}
    assert expected <= set(checks)
    assert "1 DNS-querying terms" not in checks["spf"]["found"] and "0 DNS-querying terms" in checks["spf"]["found"]
    assert checks["tls_rpt"]["status"] == "info" and "TLSRPTv1" in checks["tls_rpt"]["found"]
    assert checks["mta_sts"]["found"] == "not published"


def _includes(zone: Zone, count: int) -> None:
    """SPF whose includes nest: the top includes a chain that asks ``count`` lookups in all."""
    names = [f"s{i}.spf.example.net" for i in range(count)]
    zone.set(BOUNCES, "TXT", f"v=spf1 ip4:{OUR_IP} include:{names[0]} -all")
    for here, after in zip(names, [*names[1:], None], strict=True):
        zone.set(here, "TXT", f"v=spf1 include:{after} ~all" if after else "v=spf1 ip4:198.51.100.0/24 ~all")


FAULTS: dict[str, Callable[[Zone, Keys], object]] = {
    "spf_11_lookups": lambda zone, keys: _includes(zone, 11),
    "two_spf_records": lambda zone, keys: zone.set(BOUNCES, "TXT", f"v=spf1 ip4:{OUR_IP} -all", "v=spf1 mx -all"),
    "void_lookups": lambda zone, keys: zone.set(
        BOUNCES, "TXT", f"v=spf1 a:gone1.{DOMAIN} a:gone2.{DOMAIN} mx:gone3.{DOMAIN} ip4:{OUR_IP} -all"),
    "spf_without_our_ip": lambda zone, keys: zone.set(BOUNCES, "TXT", "v=spf1 ip4:198.51.100.7 -all"),
    "spf_neutral_all": lambda zone, keys: zone.set(BOUNCES, "TXT", f"v=spf1 ip4:{OUR_IP} ?all"),
    "pct_50": lambda zone, keys: zone.set(f"_dmarc.{DOMAIN}", "TXT",
                                          f"v=DMARC1; p=reject; pct=50; rua=mailto:dmarc@{DOMAIN}"),
    "p_none": lambda zone, keys: zone.set(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=none; rua=mailto:d@{DOMAIN}"),
    "no_rua": lambda zone, keys: zone.set(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject"),
    "two_dmarc": lambda zone, keys: zone.set(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject; rua=mailto:a@x.org",
                                             "v=DMARC1; p=none"),
    "no_dmarc": lambda zone, keys: zone.records.pop((f"_dmarc.{DOMAIN}", "TXT")),
    "missing_selector": lambda zone, keys: zone.records.pop((f"{SELECTOR}._domainkey.{DOMAIN}", "TXT")),
    "wrong_key": lambda zone, keys: zone.set(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT", keys.other_txt),
    "no_mx": lambda zone, keys: zone.records.pop((DOMAIN, "MX")),
    "null_mx": lambda zone, keys: zone.set(DOMAIN, "MX", (0, ".")),
    "mx_elsewhere": lambda zone, keys: zone.set(DOMAIN, "MX", (10, "mx.other.example.net")),
    "no_ptr": lambda zone, keys: zone.records.pop((OUR_IP, "PTR")),
    "ptr_not_confirmed": lambda zone, keys: zone.set(OUR_IP, "PTR", "host.provider.example.net"),
}

# fault → (check, status, words in what was found, exit status)
EXPECTED: dict[str, tuple[str, str, str, int]] = {
    "spf_11_lookups": ("spf", "fail", "11 lookups exceed 10", 2),
    "two_spf_records": ("spf", "fail", "2 SPF records", 2),
    "void_lookups": ("spf", "fail", "3 void lookups exceed 2", 2),
    "spf_without_our_ip": ("spf", "fail", f"{OUR_IP} is not allowed", 2),
    "spf_neutral_all": ("spf", "warn", "does not end in -all or ~all", 1),
    "pct_50": (f"dmarc:{DOMAIN}", "warn", "pct removed by DMARCbis", 1),
    "p_none": (f"dmarc:{DOMAIN}", "warn", "p=none only monitors", 1),
    "no_rua": (f"dmarc:{DOMAIN}", "warn", "no rua=", 1),
    "two_dmarc": (f"dmarc:{DOMAIN}", "fail", "2 DMARC records", 2),
    "no_dmarc": (f"dmarc:{DOMAIN}", "fail", "no DMARC record", 2),
    "missing_selector": ("dkim", "fail", f"no key published for selector {SELECTOR}", 2),
    "wrong_key": ("dkim", "fail", "not the public half of ours.pem", 2),
    "no_mx": ("mx", "fail", "no MX record", 2),
    "null_mx": ("mx", "fail", "null MX", 2),
    "mx_elsewhere": ("mx", "fail", f"does not lead to {HELO}", 2),
    "no_ptr": (f"ptr:{OUR_IP}", "fail", "no PTR record", 2),
    "ptr_not_confirmed": (f"ptr:{OUR_IP}", "fail", "does not resolve back", 2),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_found_named_and_explained(fault: str, doctor: Doctor, keys: Keys) -> None:
    zone = clean_zone(keys)
    FAULTS[fault](zone, keys)
    code, report = doctor(zone)
    name, status, words, exit_code = EXPECTED[fault]
    check = by_name(report)[name]
    assert (check["status"], code) == (status, exit_code), check
    assert words in check["found"], check["found"]
    assert check["fix"] and check["why"]
    others = {n: c["status"] for n, c in by_name(report).items() if n != name and c["status"] in ("warn", "fail")}
    # one fault, one finding (a DMARC without rua also loses nothing else; the alignment stays)
    assert others == {}, others


def test_the_fix_for_a_missing_key_is_the_exact_record(doctor: Doctor, keys: Keys) -> None:
    zone = clean_zone(keys)
    FAULTS["missing_selector"](zone, keys)
    _, report = doctor(zone)
    assert by_name(report)["dkim"]["fix"] == f'{SELECTOR}._domainkey.{DOMAIN}. TXT "{keys.ours_txt}"'


def test_spf_lookups_are_counted_through_nested_includes(doctor: Doctor, keys: Keys) -> None:
    zone = clean_zone(keys)
    _includes(zone, 10)  # exactly the limit: still fine
    code, report = doctor(zone)
    assert by_name(report)["spf"]["status"] == "ok" and "10 DNS-querying terms" in by_name(report)["spf"]["found"]
    assert code == 0


def test_certificate_expired_or_for_another_name_fails(doctor: Doctor, keys: Keys, tmp_path: Path) -> None:
    expired = certificate(tmp_path / "old.pem", HELO, datetime.now(UTC) - timedelta(days=1))
    code, report = doctor(clean_zone(keys), cert=expired)
    assert (by_name(report)["tls.certificate"]["status"], code) == ("fail", 2)
    assert "expired" in by_name(report)["tls.certificate"]["found"]
    other = certificate(tmp_path / "other.pem", "www.example.org", datetime.now(UTC) + timedelta(days=60))
    _, report = doctor(clean_zone(keys), cert=other)
    assert f"{HELO} is not among them" in by_name(report)["tls.certificate"]["found"]


def test_unanswered_dns_is_a_warning_not_a_missing_record(doctor: Doctor, keys: Keys, dns: LoopbackDns) -> None:
    dns.fail(BOUNCES)
    code, report = doctor(clean_zone(keys))
    spf = by_name(report)["spf"]
    assert (spf["status"], code) == ("warn", 1) and "no answer from DNS" in spf["found"]


def test_text_output_shows_found_why_and_fix(tmp_path: Path, dns: LoopbackDns, keys: Keys) -> None:
    zone = clean_zone(keys)
    FAULTS["wrong_key"](zone, keys)
    zone.serve(dns)
    write_config(tmp_path / "data", dns, keys, None)
    result = CliRunner().invoke(cli, ["doctor", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("[FAIL] DKIM key"))
    assert lines[at + 1].strip().startswith("found: the published key is not the public half")
    assert lines[at + 2].strip().startswith("why:") and lines[at + 3].strip().startswith("fix:   wp1._domainkey")
    assert "[WARN] STARTTLS certificate" in result.stdout  # no certificate configured
    assert lines[-1].endswith("exit 2")


def test_a_check_that_passed_and_now_fails_is_drift(doctor: Doctor, keys: Keys, dns: LoopbackDns) -> None:
    code, first = doctor(clean_zone(keys))
    assert code == 0 and first["drift"] == []
    dns.remove(f"{SELECTOR}._domainkey.{DOMAIN}")  # someone deleted the key
    _, second = doctor(clean_zone(keys))
    assert second["drift"] == ["dkim"]
    dns.fail(HELO)  # a DNS outage is a warning, never drift; the deleted key stays drift
    _, third = doctor(clean_zone(keys))
    assert third["drift"] == ["dkim"] and by_name(third)["helo"]["status"] == "warn"
    dns.add_txt(f"{SELECTOR}._domainkey.{DOMAIN}", keys.ours_txt)
    _, fourth = doctor(clean_zone(keys))
    assert fourth["drift"] == []


def test_the_worker_reruns_the_doctor_and_raises_the_drift_alarm(
        tmp_path: Path, dns: LoopbackDns, keys: Keys, make_settings: Callable[..., Any]) -> None:
    from waypost import runtime as wiring
    from waypost.doctor import history
    from waypost.store.models import alarm_states

    clean_zone(keys).serve(dns)
    settings = make_settings(
        mail_domain=DOMAIN, base_url=f"https://{DOMAIN}", dns_nameservers=[dns.nameserver],
        outbound={"transport": "smtp", "bounce_domain": BOUNCES}, smtp={"hostname": HELO},
        dkim={"selector": SELECTOR, "private_key_path": str(keys.ours)},
        doctor={"sending_ips": [OUR_IP], "interval_hours": 24}, alarms={"mail_operator": False})
    wired = wiring.build(settings)
    try:
        watch = wired.doctor_watch()
        stop = threading.Event()
        loop = threading.Thread(target=watch.loop, args=(stop,), daemon=True)
        loop.start()
        first = wait_until(lambda: history.latest(wired.engine), message="the worker's first doctor run")
        assert first.origin == "worker" and watch.due_in() > timedelta(hours=23)  # next one a day later
        stop.set()
        loop.join(timeout=10)
        assert not loop.is_alive()

        dns.remove(HELO)  # the HELO name lost its address: helo passed, now fails
        run = watch.run_once()
        assert "helo" in run.drift
        with wired.engine.connect() as conn:
            state = conn.execute(sa.select(alarm_states).where(alarm_states.c.name == "doctor_drift")).one()
        assert state.firing and "helo" in state.detail
    finally:
        wired.close()


@pytest.mark.parametrize(("transport", "hours", "watched"), [("smtp", 24, True), ("smtp", 0, False),
                                                             ("catcher", 24, False)])
def test_the_worker_watches_only_a_sending_setup_with_an_interval(
        transport: str, hours: float, watched: bool, make_settings: Callable[..., Any]) -> None:
    from waypost import runtime as wiring
    from waypost.doctor.history import DoctorWatch

    settings = make_settings(mail_domain=DOMAIN, base_url=f"https://{DOMAIN}", outbound={"transport": transport},
                             doctor={"interval_hours": hours})
    wired = wiring.build(settings)
    try:
        companions = wired.worker().companions
        assert any(isinstance(getattr(c, "__self__", None), DoctorWatch) for c in companions) is watched
    finally:
        wired.close()
