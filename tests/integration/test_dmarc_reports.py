"""The reports mailbox end to end, on SQLite and PostgreSQL: reports delivered over SMTP on
loopback are stored once each (malformed ones kept and flagged), summarised by `waypost dmarc
summary` and the console page, raise own_mail_failing_dmarc for our own sources, and go with
the retention sweep."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from tests.conftest import corpus_dir
from tests.integration.test_admin_console import PASSWORD, login
from tests.integration.test_outbox import run_jobs
from tests.integration.test_smtp_ingress import listeners
from tests.unit.test_dmarc_reports import aggregate_xml, failure_mail, report_mail, tls_json, zipped
from waypost import runtime as wiring
from waypost.cli import cli
from waypost.dmarc.watch import ALARM
from waypost.pipeline.router import InboundMail
from waypost.store.models import (
    alarm_states,
    dmarc_records,
    dmarc_reports,
    inbound_messages,
    tls_report_policies,
    utcnow,
)
from waypost.web.admin.password import write_password
from waypost.web.app import create_app

OWN_IP = "198.51.100.25"
NOW = int(utcnow().timestamp()) - 86400


@pytest.fixture
def reports_runtime(make_settings: Callable[..., Any], database_url: str) -> Iterator[Any]:
    built = wiring.build(make_settings(database={"url": database_url}, trusted_networks=["127.0.0.0/8"],
                                       doctor={"sending_ips": [OWN_IP]}, web={"admin_token": "t" * 32}))
    yield built
    built.close()


def send(runtime: Any, raw: bytes, to: str = "dmarc@waypost.test") -> None:
    with listeners(runtime) as start:
        listener = start(runtime.inbox, max_message_size=4 * 1024 * 1024)
        with listener.client() as client:
            client.sendmail("noreply-dmarc@reporter.example", [to], raw)


def stored(runtime: Any) -> list[sa.Row]:
    with runtime.engine.connect() as conn:
        return list(conn.execute(sa.select(dmarc_reports).order_by(dmarc_reports.c.id)))


def cli_summary(runtime: Any, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["dmarc", "summary", "--data-dir", str(runtime.settings.data_dir), *args],
                                env={"WAYPOST_DATABASE__URL": runtime.settings.database_url,
                                     "WAYPOST_DOCTOR__SENDING_IPS": ",".join(runtime.settings.doctor.sending_ips)})
    assert result.exit_code == 0, result.output
    return result


def own_failing_report(report_id: str = "own-1") -> bytes:
    return aggregate_xml(report_id=report_id, begin=NOW, rows=(
        (OWN_IP, 7, "quarantine", "fail", "fail"),  # ours, failing
        (OWN_IP, 93, "none", "pass", "pass"),
        ("203.0.113.99", 4, "reject", "fail", "fail")))  # someone else's, spoofing


def test_reports_over_smtp_are_stored_once_and_summarised(reports_runtime: Any) -> None:
    runtime = reports_runtime
    aggregate = report_mail(gzip.compress(own_failing_report()), "application", "gzip", "r.xml.gz")
    send(runtime, aggregate)
    # the reporter sends it again, zipped this time: the same org and report id, one report
    send(runtime, report_mail(zipped("r.xml", own_failing_report()), "application", "zip", "r.zip"))
    send(runtime, report_mail(tls_json(), "application", "tlsrpt+json", "t.json"))
    send(runtime, failure_mail())
    send(runtime, b"From: x@elsewhere.example\r\nSubject: hi\r\n\r\nnot a report\r\n")
    run_jobs(runtime)

    rows = stored(runtime)
    assert sorted((r.kind, r.malformed) for r in rows) == \
        [("aggregate", False), ("failure", False), ("tls", False), ("unknown", True)]
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(dmarc_records)).scalar() == 3
        assert conn.execute(sa.select(sa.func.count()).select_from(tls_report_policies)).scalar() == 1
        outcomes = [(r.status, r.reason or "") for r in conn.execute(sa.select(inbound_messages))]
    assert len(outcomes) == 5 and {status for status, _ in outcomes} == {"processed"}
    assert sum("already stored" in reason for _, reason in outcomes) == 1

    found = json.loads(cli_summary(runtime, "--days", "7", "--json").output)
    sources = {(s["source_ip"], s["reporter"]): s for s in found["sources"]}
    own = sources[(OWN_IP, "reporter.example")]
    assert (own["messages"], own["dkim_aligned"], own["spf_aligned"], own["dmarc_fail"], own["own"]) == \
        (100, 93, 93, 7, True)
    assert own["dispositions"] == {"quarantine": 7, "none": 93}
    assert sources[("203.0.113.99", "reporter.example")]["own"] is False
    assert found["tls"] == [{"policy_domain": "waypost.test", "reports": 1, "successes": 40, "failures": 2,
                             "failure_types": {"certificate-expired": 2}}]
    assert found["counts"] == {"aggregate": 1, "failure": 1, "tls": 1, "malformed": 1}
    assert found["failure_reports"][0]["source_ip"] == "192.0.2.77"

    text = cli_summary(runtime).output
    assert re.search(rf"{re.escape(OWN_IP)} \(own\)\s+reporter.example\s+100\s+93\s+93\s+7", text)
    # a report whose traffic is older than --days is left out of the sources
    send(runtime, report_mail(aggregate_xml(report_id="old", begin=1_500_000_000, rows=(
        ("192.0.2.200", 9, "none", "pass", "pass"),)), "application", "xml", "old.xml"))
    run_jobs(runtime)
    recent = {s["source_ip"] for s in json.loads(cli_summary(runtime, "--days", "7", "--json").output)["sources"]}
    ever = {s["source_ip"] for s in json.loads(cli_summary(runtime, "--days", "9000", "--json").output)["sources"]}
    assert "192.0.2.200" in ever - recent


def test_own_sources_failing_dmarc_raise_the_alarm_and_others_do_not(reports_runtime: Any) -> None:
    runtime = reports_runtime
    watch = runtime.dmarc_watch()
    assert not watch.check().firing

    commit = runtime.router.app_for(["dmarc@waypost.test"])[0].handle(inbound_mail(
        report_mail(aggregate_xml(begin=NOW, rows=(("203.0.113.99", 50, "reject", "fail", "fail"),)),
                    "text", "xml", "a.xml")))
    with runtime.engine.begin() as conn:
        commit(conn)
    assert not watch.check().firing  # a spoofer's address is not ours

    commit = runtime.router.app_for(["dmarc@waypost.test"])[0].handle(inbound_mail(
        report_mail(own_failing_report(), "application", "xml", "b.xml")))
    with runtime.engine.begin() as conn:
        commit(conn)
    alarm = watch.check()
    assert alarm.firing and alarm.value == 7 and OWN_IP in alarm.detail
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(alarm_states.c.firing).where(alarm_states.c.name == ALARM)).scalar() is True


def test_in_ses_mode_our_from_domain_failing_counts(make_settings: Callable[..., Any], database_url: str) -> None:
    runtime = wiring.build(make_settings(database={"url": database_url}, outbound={"transport": "ses"},
                                         base_url="https://trips.waypost.test"))
    try:
        app = runtime.router.app_for(["dmarc@waypost.test"])[0]
        ok = aggregate_xml(begin=NOW, rows=(("54.240.0.1", 20, "none", "pass", "fail"),))
        with runtime.engine.begin() as conn:
            app.handle(inbound_mail(report_mail(ok, "application", "xml", "a.xml")))(conn)
        assert not runtime.dmarc_watch().check().firing
        bad = aggregate_xml(report_id="r-2", begin=NOW, rows=(("54.240.0.2", 3, "none", "fail", "fail"),))
        with runtime.engine.begin() as conn:
            app.handle(inbound_mail(report_mail(bad, "application", "xml", "b.xml")))(conn)
        assert runtime.dmarc_watch().check().value == 3
    finally:
        runtime.close()


def inbound_mail(raw: bytes) -> InboundMail:
    from waypost.mail.parse import parse_message

    return InboundMail(id="m" + str(abs(hash(raw)))[:10], message=parse_message(raw), sender="x@reporter.example",
                       recipient="dmarc@waypost.test", received_at=utcnow(), raw=raw)


def test_retention_deletes_old_reports_failure_reports_first(reports_runtime: Any) -> None:
    runtime = reports_runtime
    app = runtime.router.app_for(["dmarc@waypost.test"])[0]
    for raw in (report_mail(own_failing_report(), "application", "xml", "a.xml"), failure_mail()):
        with runtime.engine.begin() as conn:
            app.handle(inbound_mail(raw))(conn)
    kept = runtime.settings.dmarc
    sweeper = runtime.retention()
    assert sweeper.expire_reports() == 0
    sweeper.clock = lambda: utcnow() + timedelta(days=kept.keep_failure_reports_days + 1)
    assert sweeper.expire_reports() == 1 and [r.kind for r in stored(runtime)] == ["aggregate"]
    sweeper.clock = lambda: utcnow() + timedelta(days=kept.keep_reports_days + 1)
    assert sweeper.expire_reports() == 1 and stored(runtime) == []
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(dmarc_records)).scalar() == 0


@pytest.mark.corpus
def test_the_whole_corpus_through_the_app_never_fails_and_stores_each_report_once(reports_runtime: Any) -> None:
    runtime = reports_runtime
    app = runtime.router.app_for(["dmarc@waypost.test"])[0]
    files = sorted(p for p in (corpus_dir() / "dmarc").rglob("*") if p.is_file())
    for path in files:
        data = path.read_bytes()
        raw = data if path.suffix == ".eml" else report_mail(data, "application", "octet-stream", path.name)
        for _ in range(2):  # every one twice
            with runtime.engine.begin() as conn:
                app.handle(inbound_mail(raw))(conn)
    rows = stored(runtime)
    # 19 files: the .xml and .xml.gz of nice-input are one report, and invalid_xml.xml repeats
    # veeam's org and report id (the manifest: the same report with broken XML)
    assert len(rows) == 17
    assert [r.problem for r in rows if r.malformed] == ["empty report"]
    assert sum(r.kind == "failure" for r in rows) == 3
    found = json.loads(cli_summary(runtime, "--days", "100000", "--json").output)
    assert sum(s["messages"] for s in found["sources"]) > 3047


def test_console_page_shows_sources_and_tls(reports_runtime: Any) -> None:
    runtime = reports_runtime
    app = runtime.router.app_for(["dmarc@waypost.test"])[0]
    for raw in (report_mail(own_failing_report(), "application", "xml", "a.xml"),
                report_mail(tls_json(), "application", "tlsrpt+json", "t.json"),
                report_mail(b"<broken", "application", "xml", "c.xml")):
        with runtime.engine.begin() as conn:
            app.handle(inbound_mail(raw))(conn)
    write_password(runtime.settings.admin_password_file, PASSWORD)
    client = TestClient(create_app(runtime), client=("127.0.0.1", 50000))
    assert client.get("/admin/dmarc", follow_redirects=False).status_code in (302, 303, 401)
    assert login(client).status_code == 303
    page = client.get("/admin/dmarc?days=30")
    assert page.status_code == 200, page.text
    assert f"{OWN_IP} <strong>(own)</strong>" in page.text and "certificate-expired 2" in page.text
    assert "not well-formed" in page.text and 'href="/admin/dmarc"' in page.text

