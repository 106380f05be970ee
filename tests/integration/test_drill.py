"""`waypost drill` with the local simulator, end to end: the real outbox hands each message to
the loopback MX, the simulated provider's DSN, ARF report and out-of-office answer come back
through Waypost's inbox, the feedback mail apps and the policy, and the run is recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from tests.integration.test_admin_console import LOCAL, PASSWORD, TOKEN, Console, logged_in
from tests.support.smtp_capture import SmtpCapture
from waypost.cli import cli
from waypost.drill.history import history, latest
from waypost.drill.runner import DRILL_SEND_JOB, Drill
from waypost.outbound import control
from waypost.store.models import feedback_events, jobs, outbound_messages, suppressions
from waypost.web.admin.password import write_password
from waypost.web.app import create_app


@pytest.fixture
def drill_runtime(make_settings: Callable[..., Any], database_url: str,
                  allowing_runtime: Callable[..., Any]) -> Callable[..., Any]:
    def build(**settings: Any) -> Any:
        return allowing_runtime(make_settings(database={"url": database_url}, **settings))

    return build


def _events(runtime: Any) -> dict[str, sa.Row]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(sa.select(feedback_events)).all()
    return {row.recipient.partition("+")[0]: row for row in rows}


def _assert_nothing_suppressed_or_counted(runtime: Any) -> None:
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressions)).scalar() == 0
        counted = conn.execute(sa.select(feedback_events.c.counts_as).where(feedback_events.c.counts_as.is_not(None)))
        assert counted.all() == []
        assert conn.execute(sa.select(jobs.c.id).where(jobs.c.kind == DRILL_SEND_JOB,
                                                       jobs.c.state != "done")).all() == []


def test_catcher_mode_drills_every_scenario_through_the_loopback_simulator(drill_runtime: Any) -> None:
    runtime = drill_runtime()
    run = Drill(runtime, timeout=30).run()

    assert run.passed, run.to_dict()
    assert [o.scenario for o in run.outcomes] == ["success", "bounce", "complaint", "ooto"]
    assert all(o.address.endswith("@drill.waypost.invalid") and "+d" in o.address for o in run.outcomes)
    events = _events(runtime)
    assert events["bounce"].kind == "bounce" and events["bounce"].bounce_type == "Permanent"
    assert events["bounce"].reason == "userunknown" and events["bounce"].source == "dsn"
    assert events["complaint"].kind == "complaint" and events["complaint"].feedback_type == "abuse"
    assert events["ooto"].kind == "auto-reply"
    assert "success" not in events
    # each came back linked to the message the outbox sent, and changed nothing for real people
    by_id = {o.outbound_id: o.scenario for o in run.outcomes}
    assert {by_id[e.outbound_id] for e in events.values()} == {"bounce", "complaint", "ooto"}
    assert all(e.outcome == "recorded" and "drill address" in (e.note or "") for e in events.values())
    _assert_nothing_suppressed_or_counted(runtime)
    with runtime.engine.connect() as conn:
        states = conn.execute(sa.select(outbound_messages.c.state, outbound_messages.c.stream)).all()
    assert sorted(states) == [("sent", "drill")] * 4

    recorded = latest(runtime.engine)
    assert recorded is not None and recorded.id == run.id and recorded.verdict == "pass"
    assert recorded.finished_at is not None and len(recorded.outcomes) == 4


def test_smtp_mode_drills_the_loopback_mx_and_never_the_smarthost(drill_runtime: Any) -> None:
    with SmtpCapture() as smarthost:
        runtime = drill_runtime(outbound={"transport": "smtp"}, base_url="https://trips.waypost.test",
                                smarthost={"host": smarthost.host, "port": smarthost.port, "security": "none"})
        run = Drill(runtime, timeout=30).run()
        assert smarthost.messages == []  # the drill's mail went to the simulator only

    assert run.passed, run.to_dict()
    assert run.mode == "smtp" and len(run.outcomes) == 4
    assert all(o.state == "sent" and o.provider_id for o in run.outcomes)
    _assert_nothing_suppressed_or_counted(runtime)


def test_a_paused_outbox_fails_the_drill_and_leaves_nothing_behind(drill_runtime: Any) -> None:
    runtime = drill_runtime()
    with runtime.engine.begin() as conn:
        control.pause(conn, control.ALL, "maintenance", by="test")

    run = Drill(runtime, timeout=1.5).run()

    assert run.verdict == "fail" and not run.passed
    assert all(o.verdict == "fail" and "paused" in o.why for o in run.outcomes), run.to_dict()
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(jobs.c.id).where(jobs.c.kind == DRILL_SEND_JOB)).all() == []
        states = {row.state for row in conn.execute(sa.select(outbound_messages.c.state))}
    assert states == {"failed"}


def test_drill_and_its_history_from_the_command_line(make_settings: Callable[..., Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(cli, ["drill", "--data-dir", str(data_dir), "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert "catcher mode, local simulator" in result.output
    assert result.output.count("[pass]") == 4 and "pass: 4 of 4 scenarios as expected" in result.output

    listed = runner.invoke(cli, ["drill", "--history", "--data-dir", str(data_dir)])
    assert listed.exit_code == 0 and "catcher  pass" in listed.output
    settings = make_settings(data_dir=data_dir)
    from waypost.store.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        assert [run.verdict for run in history(engine)] == ["pass"]
    finally:
        engine.dispose()


def test_the_console_shows_each_run_with_its_scenarios(drill_runtime: Any) -> None:
    runtime = drill_runtime(web={"admin_token": TOKEN})
    write_password(runtime.settings.admin_password_file, PASSWORD)
    app = create_app(runtime)
    shown = Console(runtime, app, TestClient(app, client=(LOCAL, 50000)))
    run = Drill(shown.runtime, timeout=30).run()
    assert logged_in(shown)

    page = shown.client.get("/admin/drills")

    assert page.status_code == 200, page.text
    assert f"Run {run.id}" in page.text and "4 of 4 scenarios as expected" in page.text
    for outcome in run.outcomes:
        assert outcome.address in page.text
    assert "dsn bounce (Permanent, NoEmail, userunknown, 5.1.1)" in page.text
    assert 'href="/admin/drills" aria-current="page"' in page.text
