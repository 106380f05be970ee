"""`waypost drill`: the feedback loop proved end to end (the SES mailbox simulator in SES mode,
a loopback simulator otherwise), and its history. Registered on the main group by ``waypost.cli``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors, runtime_for

if TYPE_CHECKING:
    from waypost.drill.history import DrillRun

_MARK = {"pass": "pass", "fail": "FAIL", "waiting": "wait", "running": "run "}
SES_TIMEOUT, LOCAL_TIMEOUT = 600.0, 60.0  # SES reports within minutes; the loopback simulator at once


@cli.command()
@data_dir_option
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help=f"Seconds to wait for what comes back [default: {SES_TIMEOUT:g} in SES mode, "
                   f"{LOCAL_TIMEOUT:g} otherwise].")
@click.option("--history", "show_history", is_flag=True, help="List the recorded runs instead of drilling.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many runs --history lists.")
@click.option("--json", "as_json", is_flag=True, help="The run (or the history) as JSON.")
@friendly_errors
def drill(data_dir: Path, timeout: float | None, show_history: bool, limit: int, as_json: bool) -> None:
    """Mail the test addresses through the real outbox and check each bounce, complaint,
    delivery and out-of-office answer comes back and is classified right. Exit status: 0 every
    scenario as expected, 1 otherwise."""
    if show_history:
        _history(data_dir, limit, as_json)
        return
    from waypost.drill.runner import Drill

    runtime = runtime_for(data_dir)
    try:
        mode = runtime.settings.outbound.transport
        run = Drill(runtime, timeout=timeout or (SES_TIMEOUT if mode == "ses" else LOCAL_TIMEOUT)).run()
    finally:
        runtime.close()
    click.echo(json.dumps(run.to_dict(), indent=2) if as_json else "\n".join(describe_run(run)))
    click.get_current_context().exit(0 if run.passed else 1)


def describe_run(run: DrillRun) -> list[str]:
    where = "SES mailbox simulator" if run.mode == "ses" else "local simulator"
    lines = [f"waypost drill {run.id}: {run.mode} mode, {where}, {run.started_at:%Y-%m-%d %H:%M}Z"]
    for o in run.outcomes:
        lines.append(f"[{_MARK.get(o.verdict, o.verdict)}] {o.scenario:<16} {o.address}")
        lines.append(f"       expected: {o.expected}")
        lines.append(f"       result:   {o.why}")
    lines.append(f"{run.verdict}: {run.detail}")
    return lines


def _history(data_dir: Path, limit: int, as_json: bool) -> None:
    from waypost.drill.history import history

    runs = history(database_for(data_dir), limit)
    if as_json:
        click.echo(json.dumps([run.to_dict() for run in runs], indent=2))
        return
    if not runs:
        click.echo("no drill recorded yet: run `waypost drill`")
    for run in runs:
        click.echo(f"#{run.id:<5} {run.started_at:%Y-%m-%d %H:%M}Z  {run.mode:<8} {run.verdict:<7} {run.detail}")
        for o in run.outcomes:
            if o.verdict != "pass":
                click.echo(f"       {o.scenario}: {o.why}")
