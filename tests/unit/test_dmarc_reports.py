"""Reading DMARC aggregate and failure reports and SMTP TLS reports: every file of the shared
corpus's dmarc/ (ground truth from its MANIFEST.md), generated DMARC 2.0 (RFC 9990) reports,
TLS-RPT JSON, failure reports, malformed reports and decompression bombs."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from email.message import EmailMessage
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import corpus_dir
from waypost.dmarc.formats import unpack
from waypost.dmarc.mail import read_payload, read_reports
from waypost.dmarc.reports import Report, ReportFormatError, ReportKind

LIMIT = 1024 * 1024
NS2 = "urn:ietf:params:xml:ns:dmarc-2.0"

# MANIFEST.md of the corpus: file -> (org_name, report_id, policy domain, records, total count)
AGGREGATES = {
    "empty_reason.xml": ("example.org", "20240125141224705995", "example.com", 1, 2),
    "example.net!example.com!1529366400!1529452799.xml":
        ("example.net", "b043f0e264cf4ea995e93765242f6dfb", "example.com", 1, 1),
    "extract_nice-input.xml": ("google.com", "11038226378739404135", "example.com", 20, 3047),
    "extract_nice-input.xml.gz": ("google.com", "11038226378739404135", "example.com", 20, 3047),
    "fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz":
        ("FastMail Pty Ltd", "102675056", "indemed.com", 1, 1),
    "old_draft_from_wiki.xml": ("acme.com", "9391651994964116463", "example.com", 1, 2),
    "rfc9990-example.net!example.com!1700000000!1700086399.xml":
        ("example.net", "dmarcbis-test-report-001", "example.com", 2, 7),
    "rfc9990-sample.xml": ("Sample Reporter", "3v98abbp8ya9n3va8yr8oa3ya", "example.com", 1, 123),
    "twilight.eml": ("google.com", "1627703331531660819", "twlnet.com", 1, 1),
    "usssa.com!example.com!1538784000!1538870399.xml":
        ("usssa.com", "8953b4d4a4ee4218b6ac0e2cb2667ee1", "example.com", 2, 2),
    "veeam.com!example.com!1530133200!1530219600.xml":
        ("veeam.com", "sonexushealth.com:1530233361", "example.com", 1, 1),
}
# not strictly well-formed, yet real reports (parsedmarc reads them): read after a repair
REPAIRED = {"ikea.com!example.de!1538690400!1538776800.xml": ("ikea.com", "example.de"),
            "invalid_utf_8.xml": ("accurateplastics.com", "example.com"),
            "invalid_xml.xml": ("veeam.com", "example.com")}
ODD = {"mimecast-weird-gzip.eml", "empty.xml"}
# failure reports: file -> (reporter, reported domain, source IP)
FAILURES = {"_Netease_DMARC_Failure_Report__Rent_Reminder.eml": ("163.com", "cardinal.com", "167.89.69.24"),
            "dmarc_ruf_report_linkedin.crlf.eml": ("linkedin.com", "example.com", "10.10.10.10"),
            "exim_plain_text_only_no_arf_part.eml": ("node01.mailgate.example.net", "example.com", "203.0.113.68")}


def read_file(path: Path) -> list[Report]:
    data = path.read_bytes()
    return read_reports(data, LIMIT) if path.suffix == ".eml" else [read_payload(data, LIMIT, tls=False)]


@pytest.mark.corpus
def test_every_corpus_file_is_known_here() -> None:
    """The tables below cover every file of dmarc/: a new sample fails until it has its truth."""
    names = {p.name for p in (corpus_dir() / "dmarc").rglob("*") if p.is_file()}
    assert names == set(AGGREGATES) | set(REPAIRED) | ODD | set(FAILURES)


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(AGGREGATES))
def test_corpus_aggregate_reports(name: str) -> None:
    (report,) = read_file(corpus_dir() / "dmarc" / "rua" / name)
    org, report_id, domain, records, total = AGGREGATES[name]
    assert (report.kind, report.problem) == (ReportKind.AGGREGATE, None)
    assert (report.org_name, report.report_id, report.policy_domain) == (org, report_id, domain)
    assert (len(report.records), sum(r.count for r in report.records)) == (records, total)
    assert "repaired" not in report.details


@pytest.mark.corpus
def test_corpus_rfc9990_sample_in_detail() -> None:
    (report,) = read_file(corpus_dir() / "dmarc" / "rua" / "rfc9990-sample.xml")
    (record,) = report.records
    assert report.details["schema"] == "dmarc-2.0" and report.details["policy"]["p"] == "quarantine"
    assert (record.source_ip, record.count, record.disposition, record.dkim, record.spf) == \
        ("192.0.2.123", 123, "pass", "pass", "fail")
    assert record.passes and record.auth["dkim"][0]["selector"] == "abc123"


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(REPAIRED))
def test_corpus_reports_that_need_a_repair_are_read_and_say_so(name: str) -> None:
    (report,) = read_file(corpus_dir() / "dmarc" / "rua" / name)
    assert report.kind is ReportKind.AGGREGATE and not report.malformed
    assert (report.org_name, report.policy_domain) == REPAIRED[name]
    assert report.records and report.details["repaired"]
    with pytest.raises(ElementTree.ParseError):  # the manifest: strictly, it is not XML
        ElementTree.fromstring((corpus_dir() / "dmarc" / "rua" / name).read_bytes())


@pytest.mark.corpus
def test_corpus_mimecast_gzip_attachment_with_crlf_base64() -> None:
    (report,) = read_file(corpus_dir() / "dmarc" / "rua" / "mimecast-weird-gzip.eml")
    assert report.kind is ReportKind.AGGREGATE and not report.malformed
    assert report.report_id == "157a5fe30ec76f4bc0d8bccfc96c118a167a1280fee7c7465af5115e73082e5e"
    assert report.policy_domain == "ab.id.au"


@pytest.mark.corpus
def test_corpus_empty_file_is_kept_as_malformed() -> None:
    (report,) = read_file(corpus_dir() / "dmarc" / "rua" / "empty.xml")
    assert report.malformed and report.problem == "empty report" and report.raw == b""


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(FAILURES))
def test_corpus_failure_reports(name: str) -> None:
    (report,) = read_file(corpus_dir() / "dmarc" / "ruf" / name)
    reporter, domain, ip = FAILURES[name]
    assert (report.kind, report.problem) == (ReportKind.FAILURE, None)
    assert (report.org_name, report.policy_domain, report.details["fields"]["source-ip"]) == (reporter, domain, ip)
    assert report.details["fields"]["feedback-type"] == "auth-failure"


@pytest.mark.corpus
def test_corpus_failure_report_keeps_only_a_few_headers_of_the_original() -> None:
    (report,) = read_file(corpus_dir() / "dmarc" / "ruf" / "dmarc_ruf_report_linkedin.crlf.eml")
    assert set(report.details["original"]) <= {"from", "to", "subject", "date", "message-id"}
    assert report.details["fields"]["auth-failure"] == "dmarc"


# --- generated reports ------------------------------------------------------------------------

def aggregate_xml(*, ns: str | None = NS2, org: str = "reporter.example", report_id: str = "r-1",
                  domain: str = "waypost.test", rows: tuple[tuple[str, int, str, str, str], ...] =
                  (("192.0.2.10", 5, "none", "pass", "fail"),), begin: int = 1_800_000_000) -> bytes:
    records = "".join(
        f"<record><row><source_ip>{ip}</source_ip><count>{n}</count><policy_evaluated><disposition>{d}"
        f"</disposition><dkim>{dk}</dkim><spf>{sp}</spf></policy_evaluated></row><identifiers>"
        f"<header_from>{domain}</header_from></identifiers><auth_results><dkim><domain>{domain}</domain>"
        f"<result>{dk}</result></dkim><spf><domain>{domain}</domain><result>{sp}</result></spf>"
        f"</auth_results></record>" for ip, n, d, dk, sp in rows)
    xmlns = f' xmlns="{ns}"' if ns else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?><feedback{xmlns}><version>1.0</version><report_metadata>'
            f"<org_name>{org}</org_name><email>dmarc@{org}</email><report_id>{report_id}</report_id>"
            f"<date_range><begin>{begin}</begin><end>{begin + 86399}</end></date_range></report_metadata>"
            f"<policy_published><domain>{domain}</domain><p>reject</p><np>reject</np><testing>n</testing>"
            f"<discovery_method>treewalk</discovery_method></policy_published>{records}</feedback>").encode()


def tls_json(*, org: str = "Mail Receiver Inc", report_id: str = "2026-12-01T00:00:00Z_waypost.test",
             success: int = 40, failure: int = 2) -> bytes:
    return json.dumps({
        "organization-name": org, "contact-info": "tlsrpt@receiver.example", "report-id": report_id,
        "date-range": {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"},
        "policies": [{"policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce"],
                                 "policy-domain": "waypost.test", "mx-host": ["mx.waypost.test"]},
                      "summary": {"total-successful-session-count": success, "total-failure-session-count": failure},
                      "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
                                           "receiving-mx-hostname": "mx.waypost.test",
                                           "failed-session-count": failure}]}]}).encode()


def report_mail(payload: bytes, maintype: str, subtype: str, filename: str) -> bytes:
    message = EmailMessage()
    message["From"] = "noreply-dmarc@reporter.example"
    message["To"] = "dmarc@waypost.test"
    message["Subject"] = "Report domain: waypost.test"
    message.set_content("This is an aggregate report.")
    message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("ns", [NS2, None])
@pytest.mark.parametrize("packing", ["xml", "gzip", "zip"])
def test_generated_aggregate_in_each_packing_and_namespace(ns: str | None, packing: str) -> None:
    xml = aggregate_xml(ns=ns, rows=(("192.0.2.10", 5, "none", "pass", "fail"),
                                     ("2001:db8::1", 3, "reject", "fail", "fail")))
    payload, (maintype, subtype) = {"xml": (xml, ("application", "xml")),
                                    "gzip": (gzip.compress(xml), ("application", "gzip")),
                                    "zip": (zipped("r.xml", xml), ("application", "zip"))}[packing]
    (report,) = read_reports(report_mail(payload, maintype, subtype, f"r.{packing}"), LIMIT)
    assert report.kind is ReportKind.AGGREGATE and not report.malformed
    assert report.details["schema"] == ("dmarc-2.0" if ns else "rfc7489")
    assert report.details["policy"]["np"] == "reject"
    assert [(r.source_ip, r.count, r.disposition, r.passes) for r in report.records] == \
        [("192.0.2.10", 5, "none", True), ("2001:db8::1", 3, "reject", False)]
    assert report.begin is not None and report.begin.year == 2027


def test_aggregate_in_the_body_of_the_mail() -> None:
    message = EmailMessage()
    message["From"] = "dmarc@reporter.example"
    message.set_content(aggregate_xml().decode())
    (report,) = read_reports(message.as_bytes(), LIMIT)
    assert report.kind is ReportKind.AGGREGATE and report.report_id == "r-1"


@pytest.mark.parametrize("subtype, packed", [("tlsrpt+json", False), ("tlsrpt+gzip", True)])
def test_tls_report(subtype: str, packed: bool) -> None:
    body = tls_json()
    (report,) = read_reports(report_mail(gzip.compress(body) if packed else body, "application", subtype,
                                         "receiver!waypost.test!1!2.json" + (".gz" if packed else "")), LIMIT)
    assert (report.kind, report.problem, report.org_name) == (ReportKind.TLS, None, "Mail Receiver Inc")
    (policy,) = report.policies
    assert (policy.policy_domain, policy.policy_type, policy.success_count, policy.failure_count) == \
        ("waypost.test", "sts", 40, 2)
    assert policy.failures[0]["result-type"] == "certificate-expired"


def failure_mail(feedback_type: str = "auth-failure") -> bytes:
    message = EmailMessage()
    message["From"] = "dmarc-failures@receiver.example"
    message["To"] = "dmarc@waypost.test"
    message["Subject"] = "FW: DMARC failure report"
    message.set_content("A message claiming to be from you failed DMARC.")
    message.make_mixed()
    fields = (f"Feedback-Type: {feedback_type}\r\nUser-Agent: Test/1.0\r\nVersion: 1\r\n"
              "Source-IP: 192.0.2.77\r\nReported-Domain: waypost.test\r\nAuth-Failure: dmarc\r\n")
    original = EmailMessage()
    original["From"] = "someone@waypost.test"
    original["Subject"] = "hello"
    original.set_content("secret body")
    message.attach(_part("message/feedback-report", fields.encode()))
    quoted = EmailMessage()
    quoted.set_content(original)  # message/rfc822, as RFC 6591 §3.1 has it
    message.attach(quoted)
    return message.as_bytes()


def _part(content_type: str, body: bytes) -> EmailMessage:
    part = EmailMessage()
    part["Content-Type"] = content_type
    part.set_payload(body.decode())
    return part


def test_generated_failure_report() -> None:
    (report,) = read_reports(failure_mail(), LIMIT)
    assert (report.kind, report.problem, report.policy_domain) == (ReportKind.FAILURE, None, "waypost.test")
    assert report.details["fields"]["source-ip"] == "192.0.2.77"
    assert report.details["original"]["subject"] == "hello"
    assert "secret body" not in json.dumps(report.details)


def test_feedback_report_of_another_type_is_flagged() -> None:
    (report,) = read_reports(failure_mail("abuse"), LIMIT)
    assert report.kind is ReportKind.FAILURE and report.malformed and "abuse" in (report.problem or "")


@pytest.mark.parametrize("payload, problem", [
    (b"<feedback><report_metadata>", "not well-formed"),
    (b"<html><body>hi</body></html>", "is not <feedback>"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><feedback/>', "refused XML construct"),
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
    (b"PK\x03\x04garbage", "zip"),
    (b'{"organization-name": "x"}', "no policies"),
])
def test_malformed_payloads_are_kept_and_flagged(payload: bytes, problem: str) -> None:
    report = read_payload(payload, LIMIT, tls=False)
    assert report.malformed and problem in (report.problem or "")
    assert report.raw == payload and report.details["digest"]


def test_the_same_malformed_report_twice_has_one_key_and_others_differ() -> None:
    one, two = read_payload(b"<nope", LIMIT, tls=False), read_payload(b"<nope", LIMIT, tls=False)
    assert one.dedupe_key == two.dedupe_key != read_payload(b"<other", LIMIT, tls=False).dedupe_key


def test_mail_without_any_report_is_kept_as_unknown() -> None:
    message = EmailMessage()
    message["From"] = "spam@elsewhere.example"
    message.set_content("buy now")
    (report,) = read_reports(message.as_bytes(), LIMIT)
    assert report.kind is ReportKind.UNKNOWN and report.malformed and report.org_name == "elsewhere.example"


@pytest.mark.parametrize("pack", [gzip.compress, lambda data: zipped("bomb.xml", data)])
def test_bombs_stop_at_the_limit(pack: object) -> None:
    bomb = pack(b"<" + b"a" * (50 * LIMIT))  # type: ignore[operator]
    assert len(bomb) < LIMIT // 10
    with pytest.raises(ReportFormatError, match="over"):
        unpack(bomb, LIMIT)
    (report,) = read_reports(report_mail(bomb, "application", "gzip", "bomb.xml.gz"), LIMIT)
    assert report.malformed and "over" in (report.problem or "")


def test_a_gzip_within_the_limit_unpacks_whole_even_in_several_members() -> None:
    assert unpack(gzip.compress(b"<feed") + gzip.compress(b"back/>"), LIMIT) == b"<feedback/>"
