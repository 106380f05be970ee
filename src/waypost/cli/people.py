"""`waypost person`: what Waypost holds about one person, for requests made other than by mail."""

from __future__ import annotations

from pathlib import Path

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors, runtime_for


@cli.group()
def person() -> None:
    """One person: what Waypost holds about them, their export and their erasure."""


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


@person.command("export")
@data_dir_option
@click.argument("address")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the zip (default: waypost-export-ADDRESS.zip here). Never overwritten.")
@friendly_errors
def person_export(data_dir: Path, address: str, out: Path | None) -> None:
    """Write a zip of everything Waypost holds about ADDRESS (also without +tag): journeys as
    JSON, GeoJSON and GPX with their images, message metadata, allowlist, suppression and audit
    entries, and a README.txt saying what each file is."""
    from waypost.apps.people_export import export_to_file
    from waypost.mail.addresses import AddressError

    runtime = runtime_for(data_dir)
    try:
        target = out or Path(f"waypost-export-{address.strip().lower()}.zip")
        size = export_to_file(runtime.engine, runtime.blobs, address, target, rules=runtime.journeys.rules,
                              locate=runtime.journeys.locate)
    except AddressError as err:
        raise click.ClickException(f"{address!r} is not an address: {err}") from None
    except FileExistsError:
        raise click.ClickException(f"{target} exists already; name another file with --out") from None
    finally:
        runtime.close()
    click.echo(f"wrote {target} ({size} bytes)")


@person.command("erase")
@data_dir_option
@click.argument("address")
@click.option("--yes", is_flag=True, help="Erase without asking.")
@friendly_errors
def person_erase(data_dir: Path, address: str, yes: bool) -> None:
    """Erase everything Waypost holds about ADDRESS (any case, any +tag): journeys, photos,
    images, messages, feedback, audit entries, exports, allowlist entry. Only a keyed hash of
    the address stays in the suppression list, so an earlier stop or complaint still holds."""
    from waypost.apps.erasure import Erasure, erase_alone, forget_files
    from waypost.keys import signing_keys
    from waypost.mail.addresses import AddressError, address_key

    try:
        person = address_key(address)
    except AddressError as err:
        raise click.ClickException(f"{address!r} is not an address: {err}") from None
    if not yes:
        click.confirm(f"Erase everything about {person} (and its +tag forms)? This cannot be undone", abort=True)
    runtime = runtime_for(data_dir)
    try:
        settings = runtime.settings
        erasure = Erasure(runtime.blobs, signing_keys(settings), forget_sent=forget_files(settings.outbox_dir)
                          if settings.outbound.transport == "catcher" else None)
        erased = erase_alone(runtime.engine, erasure, address)
    finally:
        runtime.close()
    click.echo(f"erased {person}: " + (", ".join(f"{n} {table}" for table, n in sorted(erased.rows.items()))
                                       or "nothing was held") + f"; {len(set(erased.blob_keys))} blobs")
