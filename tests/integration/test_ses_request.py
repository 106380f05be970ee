"""`waypost ses-request`, golden-free: each statement appears exactly when its evidence exists
(a setting, a doctor or drill run, a record) and is otherwise listed under "Not yet shown"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from waypost.cli import cli
from waypost.clock import utcnow
from waypost.doctor.history import record
from waypost.doctor.results import Finding, Report, Status
from waypost.drill.runner import Drill
from waypost.outbound.outbox import OutboundMessage
from waypost.readiness.evidence import gather
from waypost.readiness.request import Request, render_sample, write_request
from waypost.runtime import STREAMS

DOMAIN = "waypost.test"


@pytest.fixture
def build(make_settings: Callable[..., Any], database_url: str,
          allowing_runtime: Callable[..., Any]) -> Callable[..., Any]:
    def make(**settings: Any) -> Any:
        return allowing_runtime(make_settings(database={"url": database_url}, mail_domain=DOMAIN, **settings))

    return make


def written(runtime: Any, **when: Any) -> Request:
    return write_request(runtime.settings, gather(runtime.engine, **when), render_sample(runtime.settings), STREAMS)


def shown(request: Request, key: str) -> bool:
    """The claim is made, or listed as not yet shown: never both, never neither."""
    claimed, missing = key in request.claims, key in {g.key for g in request.gaps}
    assert claimed != missing, (key, request.claims.get(key), request.gaps)
    return claimed


def doctor(runtime: Any, **statuses: tuple[Status, str, str | None]) -> None:
    findings = tuple(Finding(name, name, status, found, "why", fix) for name, (status, found, fix) in statuses.items())
    record(runtime.engine, Report(utcnow(), runtime.settings.outbound.transport, findings), "cli")


def test_without_evidence_only_settings_are_claimed(build: Any) -> None:
    request = written(build())

    for key in ("drill", "doctor", "website", "policy_urls", "volumes", "history", "unsubscribe"):
        assert not shown(request, key), key
    assert "reputation" not in request.claims and "spf" not in request.claims
    assert shown(request, "mail_type") and shown(request, "rate") and shown(request, "opt_in")  # ann is allowlisted
    assert "Transactional only" in request.claims["mail_type"].text
    text = request.render()
    assert "## Not yet shown" in text and "no passing drill in the last 30 days" in text
    assert "run `waypost drill`" in text and "## Policy URLs" not in text


def test_a_passing_drill_is_cited_with_its_date_until_it_is_30_days_old(build: Any) -> None:
    runtime = build()
    run = Drill(runtime, timeout=30).run()
    assert run.passed

    request = written(runtime)
    assert shown(request, "drill")
    assert run.started_at.strftime("%Y-%m-%d") in request.claims["drill"].text
    assert request.claims["drill"].source == f"drill run {run.id}, catcher mode"
    # drill mail reaches no person: it is no sending history
    assert not shown(request, "volumes") and not shown(request, "history")

    later = written(runtime, now=utcnow() + timedelta(days=31))
    assert not shown(later, "drill")


def test_a_failed_drill_is_not_evidence(build: Any) -> None:
    runtime = build(outbound={"paused_recheck_seconds": 0.05})
    from waypost.outbound import control

    with runtime.engine.begin() as conn:
        control.pause(conn, control.ALL, "maintenance", by="test")
    assert not Drill(runtime, timeout=0.5).run().passed

    request = written(runtime)
    assert not shown(request, "drill")
    assert "did not pass" in next(g.what for g in request.gaps if g.key == "drill")


def test_dns_claims_follow_the_latest_doctor_run(build: Any) -> None:
    runtime = build()
    fix = f'_dmarc.{DOMAIN}. TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"'
    doctor(runtime, spf=(Status.OK, '"v=spf1 ip4:192.0.2.10 -all"', None),
           **{f"dmarc:{DOMAIN}": (Status.WARN, "p=none only monitors", fix)})

    request = written(runtime)
    assert shown(request, "doctor") and "1 ok, 1 warn" in request.claims["doctor"].text
    assert shown(request, "spf") and "ip4:192.0.2.10" in request.claims["spf"].text
    assert request.claims["spf"].source.startswith("doctor run ")
    assert not shown(request, "dmarc")
    assert next(g.how for g in request.gaps if g.key == "dmarc") == fix
    assert not shown(request, "dkim")  # not checked by that run

    doctor(runtime, spf=(Status.OK, "ok", None), dkim=(Status.OK, "published key matches", None),
           **{f"dmarc:{DOMAIN}": (Status.OK, "p=quarantine", None)})
    request = written(runtime)
    assert shown(request, "dmarc") and shown(request, "dkim")
    stale = written(runtime, now=utcnow() + timedelta(days=31))
    assert not shown(stale, "doctor") and "spf" not in stale.claims and "dmarc" not in stale.claims


def test_public_pages_and_sending_history_are_claimed_once_they_exist(build: Any) -> None:
    runtime = build(base_url=f"https://{DOMAIN}", guard={"compromise_checks": False})  # ann never wrote in
    with runtime.engine.begin() as conn:
        for n in range(3):
            raw = f"From: <journeys@{DOMAIN}>\r\nTo: ann@example.org\r\nSubject: hi\r\n\r\nhi\r\n".encode()
            runtime.outbox.queue_message(conn, OutboundMessage(f"k{n}", "journeys", "ann@example.org",
                                                               f"journeys@{DOMAIN}", "hi", f"<k{n}@{DOMAIN}>", raw))
    while runtime.worker().run_once():
        pass

    request = written(runtime)
    assert shown(request, "website") and shown(request, "policy_urls")
    assert f"https://{DOMAIN}/privacy" in request.claims["policy_urls"].text
    assert shown(request, "volumes") and "3 messages" in request.claims["volumes"].text
    assert shown(request, "history") and "0 counted bounces (0.00%)" in request.claims["reputation"].text
    assert shown(request, "unsubscribe") and "https one-click link" in request.claims["unsubscribe"].text


def test_the_command_writes_the_request_and_the_sample_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "req" / "ses-request.md"
    result = CliRunner().invoke(cli, ["ses-request", "--data-dir", str(tmp_path / "data"), "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert "not yet shown: no passing drill" in result.output
    text = out.read_text()
    assert text.startswith("# Amazon SES production access request") and "ses-request.sample.eml" in text
    eml = (tmp_path / "req" / "ses-request.sample.eml").read_bytes()
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in eml and b"traveller@example.org" in eml
    assert "<html" in (tmp_path / "req" / "ses-request.sample.html").read_text().lower()
