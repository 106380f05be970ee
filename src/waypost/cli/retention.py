"""`waypost retention`: every store of personal data, what it holds now and when its oldest item goes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import click

from waypost.cli.base import cli, data_dir_option, friendly_errors, runtime_for


@cli.command("retention")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per store instead of the table.")
@friendly_errors
def retention(data_dir: Path, as_json: bool) -> None:
    """Each store of personal data: what it holds, how many rows and bytes, its setting, when the oldest goes."""
    from waypost.pipeline.retention import holdings

    runtime = runtime_for(data_dir)
    try:
        found = holdings(runtime.retention())
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps([entry.to_json() for entry in found], ensure_ascii=False, indent=2))
        return
    rows = [("store", "rows", "size", "kept", "oldest goes", "setting")]
    rows += [(entry.store, str(entry.rows), _size(entry.bytes), _period(entry.period, entry.setting, entry.next_goes),
              _when(entry.next_goes, entry.rows), entry.setting) for entry in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) if i in (1, 2) else cell.ljust(width)
                             for i, (cell, width) in enumerate(zip(row, widths, strict=False))) + "  " + row[-1])
    click.echo("")
    for entry in found:
        click.echo(f"{entry.store}: {entry.holds}")


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _period(period: timedelta | None, setting: str, next_goes: datetime | None) -> str:
    if period is None:  # each item its own time (a purge job, an expiry), or kept
        return "per item" if next_goes is not None or "," in setting else "kept"
    days = period.total_seconds() / 86400
    return "next sweep" if days == 0 else f"{days:g} days" if days != 1 else "1 day"


def _when(moment: datetime | None, rows: int) -> str:
    if moment is None:
        return "-" if rows else "nothing held"
    return f"{moment:%Y-%m-%d %H:%M}Z"
