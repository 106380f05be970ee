"""`waypost person`: what Waypost holds about one person, for requests made other than by mail."""

from __future__ import annotations

from pathlib import Path

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors


@cli.group()
def person() -> None:
    """One person: what Waypost holds about them."""


@person.command("show")
@data_dir_option
@click.argument("address")
@friendly_errors
def person_show(data_dir: Path, address: str) -> None:
    """Allowlist entry, suppression, journeys and message counts of ADDRESS (also without +tag)."""
    from waypost.apps.people import describe

    database = database_for(data_dir)
    try:
        found = describe(database, address)
    finally:
        database.dispose()
    click.echo(f"person:      {found.address}")
    allowed = ", ".join(f"{e.kind} {e.value} (since {e.added_at:%Y-%m-%d}{'; ' + e.note if e.note else ''})"
                        for e in found.allowlist)
    click.echo(f"allowlist:   {allowed or 'not on the allowlist'}")
    for entry in found.suppressions or []:
        click.echo(f"suppressed:  {entry.address}: {entry.reason} by {entry.source} since {entry.created_at:%Y-%m-%d}"
                   f"{'; ' + entry.detail if entry.detail else ''}")
    if not found.suppressions:
        click.echo("suppressed:  no")
    if found.stopped_by_self:
        click.echo("             left by their own stop by mail: they may come back by writing “start”")
    click.echo(f"journeys:    {len(found.journeys)}")
    for journey in found.journeys:
        click.echo(f"  {journey.id:>6}  {journey.created:%Y-%m-%d}  {journey.photos:>4} photos  {journey.state():8} "
                   f"{journey.title}")
    click.echo(f"mail in:     {_counts(found.inbound)}")
    click.echo(f"mail out:    {_counts(found.outbound)}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "none"
