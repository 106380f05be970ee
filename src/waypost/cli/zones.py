"""`waypost person zone add|list|remove`: the privacy zones the operator sets for a person
(apps/journeys/privacy_zones.py). Negative coordinates may be written as they are (``-9.2``)."""

from __future__ import annotations

from pathlib import Path

import click

from waypost.cli.base import data_dir_option, database_for, friendly_errors
from waypost.cli.people import person

# a negative coordinate is an argument, not an unknown option
COORDINATES = {"ignore_unknown_options": True}


@person.group("zone")
def zone() -> None:
    """Privacy zones: places left out of every public output of the person's journeys."""


@zone.command("add", context_settings=COORDINATES)
@data_dir_option
@click.argument("address")
@click.argument("latitude", type=float)
@click.argument("longitude", type=float)
@click.option("--radius", "radius", type=float, default=500.0, show_default=True, help="Radius in metres.")
@click.option("--label", default=None, help="What the place is, e.g. home (shown in the list).")
@friendly_errors
def zone_add(data_dir: Path, address: str, latitude: float, longitude: float, radius: float,
             label: str | None) -> None:
    """Hide everything within RADIUS metres of LATITUDE LONGITUDE from ADDRESS's share links."""
    from waypost.apps.journeys.privacy_zones import PrivacyZones

    database = database_for(data_dir)
    try:
        added = PrivacyZones(database).add(address, latitude, longitude, radius, label)
    finally:
        database.dispose()
    click.echo(f"zone added for {added.address}: {added.latitude:.5f}, {added.longitude:.5f}, "
               f"radius {added.radius_m:g} m")


@zone.command("list")
@data_dir_option
@click.argument("address")
@friendly_errors
def zone_list(data_dir: Path, address: str) -> None:
    """The privacy zones of ADDRESS (also without its +tag)."""
    from waypost.apps.journeys.privacy_zones import PrivacyZones

    database = database_for(data_dir)
    try:
        found = PrivacyZones(database).list(address)
    finally:
        database.dispose()
    for entry in found:
        click.echo(f"{entry.latitude:.5f} {entry.longitude:.5f}  radius {entry.radius_m:g} m  "
                   f"{entry.label or '-'}  (by {entry.source}, {entry.created_at:%Y-%m-%d})")
    if not found:
        click.echo("no privacy zones")


@zone.command("remove", context_settings=COORDINATES)
@data_dir_option
@click.argument("address")
@click.argument("latitude", type=float)
@click.argument("longitude", type=float)
@friendly_errors
def zone_remove(data_dir: Path, address: str, latitude: float, longitude: float) -> None:
    """Remove ADDRESS's zone centred at LATITUDE LONGITUDE (as `zone list` shows it)."""
    from waypost.apps.journeys.privacy_zones import PrivacyZones

    database = database_for(data_dir)
    try:
        removed = PrivacyZones(database).remove(address, latitude, longitude)
    finally:
        database.dispose()
    if not removed:
        raise click.ClickException(f"no zone of {address} is centred at {latitude:.5f}, {longitude:.5f} "
                                   "(see `waypost person zone list`)")
    click.echo(f"removed {removed} zone{'s' if removed != 1 else ''}")
