"""`waypost doctor`: the live setup checked (DNS, and in SES mode the SES account), each finding
with what was found, why it matters and the fix. Registered on the main group by ``waypost.cli``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors, settings_from

if TYPE_CHECKING:
    from waypost.doctor.history import DoctorRun
    from waypost.doctor.results import Report

_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}


@cli.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object: every check with status, found, why, fix.")
@click.option("--no-record", is_flag=True, help="Do not store this run (the drift alarm and ses-request read them).")
@friendly_errors
def doctor(data_dir: Path, as_json: bool, no_record: bool) -> None:
    """Check DNS (MX, SPF, DKIM, DMARC, reverse DNS) and the SES account through the configured
    resolver. Exit status: 0 all ok, 1 warnings only, 2 any failure."""
    from waypost.doctor.history import record
    from waypost.doctor.runner import run_doctor

    report = run_doctor(settings_from(data_dir))
    run = None if no_record else record(database_for(data_dir), report, "cli")
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "drift": list(run.drift) if run else []}, indent=2))
    else:
        _print(run, report)
    click.get_current_context().exit(report.exit_code)


def _print(run: DoctorRun | None, report: Report) -> None:
    click.echo(f"waypost doctor: {report.mode} mode, {report.at:%Y-%m-%d %H:%M}Z")
    for finding in report.findings:
        click.echo(f"[{_MARK[finding.status.value]}] {finding.title}")
        click.echo(f"       found: {finding.found}")
        click.echo(f"       why:   {finding.why}")
        if finding.fix:
            click.echo(f"       fix:   {finding.fix}")
    counts = ", ".join(f"{count} {status}" for status, count in report.counts().items() if count)
    click.echo(f"{counts}: exit {report.exit_code}")
    if run and run.drift:
        click.echo(f"drift since the previous run (passed, now fail): {', '.join(run.drift)}")
