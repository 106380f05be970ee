"""`waypost relay device add|list|show|disable|enable|set-from|remove|rotate-password`, `waypost relay links
list|revoke` and `waypost relay purge`: the device relay (apps/relay, docs/relay.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors, settings_from

if TYPE_CHECKING:
    from waypost.apps.relay.devices import Devices
    from waypost.apps.relay.links import Links


@cli.group()
def relay() -> None:
    """The device relay: devices' mail forwarded with expiring links instead of attachments."""


@relay.group()
def device() -> None:
    """Devices that may send through the relay."""


@contextmanager
def _devices(data_dir: Path) -> Iterator[Devices]:
    from waypost.apps.relay.devices import Devices
    from waypost.ingress.submission import SubmissionUsers, users_path

    engine, settings = database_for(data_dir), settings_from(data_dir)
    try:
        yield Devices(engine, SubmissionUsers(users_path(settings)),
                      max_retention_days=settings.relay.max_retention_days)
    finally:
        engine.dispose()


@contextmanager
def _links(data_dir: Path) -> Iterator[Links]:
    from waypost.apps.relay.links import Links
    from waypost.runtime import blob_store

    engine = database_for(data_dir)
    try:
        yield Links(engine, blob_store(settings_from(data_dir)))
    finally:
        engine.dispose()


def _mailbox(data_dir: Path, name: str) -> str:
    settings = settings_from(data_dir)
    return f"{settings.relay.mailbox}+{name}@{settings.mail_domain}"


@device.command("add")
@data_dir_option
@click.argument("name")
@click.option("--owner", required=True, help="Who answers for the device: gets replies and notices.")
@click.option("--allow", "allow", multiple=True, help="An address or domain the device may mail (repeatable).")
@click.option("--default-to", "default_to", multiple=True,
              help="A recipient when the mail names none (repeatable; must be allowed too).")
@click.option("--retention-days", type=int, default=30, show_default=True, help="Days the files are kept.")
@click.option("--link-days", type=int, default=7, show_default=True, help="Days a link works.")
@click.option("--max-mb", type=int, default=25, show_default=True, help="Largest total of attachments, in MB.")
@click.option("--from", "sender", default=None,
              help="The From address the device mails its mailbox with through SES or from outside trusted "
                   "networks; such mail must pass DMARC for its domain.")
@friendly_errors
def device_add(data_dir: Path, name: str, owner: str, allow: tuple[str, ...], default_to: tuple[str, ...],
               retention_days: int, link_days: int, max_mb: int, sender: str | None) -> None:
    """Register device NAME and print its submission login (the password is shown only now)."""
    from waypost.apps.relay.devices import NewDevice

    with _devices(data_dir) as devices:
        added, password = devices.add(NewDevice(name, owner, allow, default_to, retention_days, link_days, max_mb,
                                                sender))
    click.echo(f"device added: {added.name}")
    click.echo(f"submission login: {added.submission_user}")
    click.echo(f"password (shown once): {password}")
    click.echo(f"mailbox: {_mailbox(data_dir, added.name)}")


@device.command("list")
@data_dir_option
@friendly_errors
def device_list(data_dir: Path) -> None:
    """Every device, its owner and state."""
    with _devices(data_dir) as devices:
        found = devices.list()
    for entry in found:
        state = "disabled" if entry.disabled_at else "enabled"
        click.echo(f"{entry.name}  {state}  owner {entry.owner}  allow {', '.join(entry.allow) or '-'}")
    if not found:
        click.echo("no devices (add one: waypost relay device add NAME --owner EMAIL --allow DOMAIN)")


@device.command("show")
@data_dir_option
@click.argument("name")
@friendly_errors
def device_show(data_dir: Path, name: str) -> None:
    """Everything about device NAME."""
    from waypost.apps.relay.devices import describe

    with _devices(data_dir) as devices:
        found = devices.get(name)
    for line in describe(found, _mailbox(data_dir, name)):
        click.echo(line)


@device.command("disable")
@data_dir_option
@click.argument("name")
@friendly_errors
def device_disable(data_dir: Path, name: str) -> None:
    """Refuse NAME's mail and its login (AUTH answers 535) until `device enable NAME`."""
    with _devices(data_dir) as devices:
        devices.disable(name)
    click.echo(f"disabled: {name}")


@device.command("enable")
@data_dir_option
@click.argument("name")
@friendly_errors
def device_enable(data_dir: Path, name: str) -> None:
    """Take NAME's mail and login again (after `disable` or a spike pause); its password is unchanged."""
    with _devices(data_dir) as devices:
        devices.enable(name)
    click.echo(f"enabled: {name}")


@device.command("edit")
@data_dir_option
@click.argument("name")
@click.option("--owner", default=None, help="A new owner (gets replies and notices).")
@click.option("--allow", "allow", multiple=True,
              help="Replace the allowlist with these addresses and domains (repeatable).")
@click.option("--add-allow", "allow_add", multiple=True, help="Add an address or domain (repeatable).")
@click.option("--remove-allow", "allow_remove", multiple=True, help="Remove an address or domain (repeatable).")
@click.option("--default-to", "default_to", multiple=True,
              help="Replace the default recipients (repeatable; must be allowed too).")
@click.option("--no-default-to", is_flag=True, help="Clear the default recipients.")
@click.option("--retention-days", type=int, default=None, help="Days the files of new mail are kept.")
@click.option("--link-days", type=int, default=None, help="Days the links of new mail work.")
@click.option("--max-mb", type=int, default=None, help="Largest total of attachments, in MB.")
@friendly_errors
def device_edit(data_dir: Path, name: str, owner: str | None, allow: tuple[str, ...], allow_add: tuple[str, ...],
                allow_remove: tuple[str, ...], default_to: tuple[str, ...], no_default_to: bool,
                retention_days: int | None, link_days: int | None, max_mb: int | None) -> None:
    """Change device NAME in place: its login, password, state and mailbox stay. New limits apply
    to mail relayed from now on; links already mailed keep their expiry and retention."""
    from waypost.apps.relay.devices import DeviceChange, describe

    if default_to and no_default_to:
        raise click.UsageError("--default-to and --no-default-to contradict each other")
    change = DeviceChange(owner=owner, allow=allow or None, allow_add=allow_add, allow_remove=allow_remove,
                          default_to=() if no_default_to else (default_to or None),
                          retention_days=retention_days, link_days=link_days, max_mb=max_mb)
    if change == DeviceChange():
        raise click.UsageError("nothing to change (see: waypost relay device edit --help)")
    with _devices(data_dir) as devices:
        changed = devices.edit(name, change)
    for line in describe(changed, _mailbox(data_dir, name)):
        click.echo(line)


@device.command("set-from")
@data_dir_option
@click.argument("name")
@click.argument("sender", required=False)
@friendly_errors
def device_set_from(data_dir: Path, name: str, sender: str | None) -> None:
    """Set the From address NAME mails its mailbox with from outside trusted networks (none: clear it)."""
    with _devices(data_dir) as devices:
        changed = devices.set_sender(name, sender)
    click.echo(f"{name}: mailbox mail from {changed.sender or 'trusted networks only'}")


@device.command("remove")
@data_dir_option
@click.argument("name")
@friendly_errors
def device_remove(data_dir: Path, name: str) -> None:
    """Forget NAME and its login; its links work until they expire, its files until retention."""
    with _devices(data_dir) as devices:
        devices.remove(name)
    click.echo(f"removed: {name}")


@device.command("rotate-password")
@data_dir_option
@click.argument("name")
@friendly_errors
def device_rotate(data_dir: Path, name: str) -> None:
    """A new password for NAME (shown once); the old one stops working now."""
    with _devices(data_dir) as devices:
        password = devices.rotate_password(name)
    click.echo(f"password (shown once): {password}")


@relay.group()
def links() -> None:
    """The links in relayed mail."""


@links.command("list")
@data_dir_option
@click.option("--device", "device_name", default=None, help="Only this device's links.")
@click.option("--recipient", default=None, help="Only the links mailed to this address.")
@click.option("--message", "message_id", default=None, help="Only the links of this relayed message.")
@friendly_errors
def links_list(data_dir: Path, device_name: str | None, recipient: str | None, message_id: str | None) -> None:
    """Links, newest first: id, state, downloads, recipient, file, message."""
    from waypost.clock import utcnow

    with _links(data_dir) as found:
        rows = found.list(device=device_name, recipient=recipient, message_id=message_id)
    now = utcnow()
    for link in rows:
        click.echo(f"{link.id}  {link.state(now):8}  {link.downloads:3} dl  {link.recipient}  {link.filename}  "
                   f"device {link.device}  message {link.message_id}  expires {link.expires_at:%Y-%m-%d %H:%M}")
    if not rows:
        click.echo("no links")


@links.command("revoke")
@data_dir_option
@click.argument("token", required=False)
@click.option("--id", "link_id", default=None, help="The link id shown by `links list`.")
@click.option("--message", "message_id", default=None, help="Every link of this relayed message.")
@click.option("--recipient", default=None, help="Every link mailed to this address.")
@friendly_errors
def links_revoke(data_dir: Path, token: str | None, link_id: str | None, message_id: str | None,
                 recipient: str | None) -> None:
    """Withdraw links now (they answer 410): TOKEN (from the link), or one of --id, --message, --recipient."""
    with _links(data_dir) as found:
        try:
            count = found.revoke(token=token, link_id=link_id, message_id=message_id, recipient=recipient)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
    click.echo(f"revoked {count} link(s)")


@relay.command("purge")
@data_dir_option
@friendly_errors
def relay_purge(data_dir: Path) -> None:
    """Delete the stored files past their device's retention now (`waypost serve` does it hourly)."""
    with _links(data_dir) as found:
        count = found.purge()
    click.echo(f"deleted {count} file(s)")
