"""`waypost inbox`: the mail kept for the operator (postmaster@, abuse@, the operator address on
mail_domain) and the notices the operator's digest carries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from waypost.cli.base import cli, data_dir_option, database_for, friendly_errors, settings_from

if TYPE_CHECKING:
    from waypost.apps.operator_inbox import OperatorInbox


@cli.group()
def inbox() -> None:
    """Mail for the operator: abuse reports, postmaster mail, questions to the contact address."""


@contextmanager
def _inbox(data_dir: Path) -> Iterator[OperatorInbox]:
    from waypost.apps.operator_inbox import OperatorInbox
    from waypost.store.blobs import LocalBlobStore

    database = database_for(data_dir)
    try:
        yield OperatorInbox(database, LocalBlobStore(settings_from(data_dir).blob_dir))
    finally:
        database.dispose()


@inbox.command("list")
@data_dir_option
@click.option("--limit", default=50, show_default=True)
@click.option("--verification", is_flag=True, help="Only verification mail: confirmation links to follow.")
@friendly_errors
def inbox_list(data_dir: Path, limit: int, verification: bool) -> None:
    """The kept mail, newest first; a verification mail with its link, which Waypost never follows."""
    with _inbox(data_dir) as kept:
        items = kept.list(limit=limit, verification_only=verification)
    for item in items:
        click.echo(f"{item.id}  {item.received_at:%Y-%m-%d %H:%M}Z  {item.mailbox:28} {item.sender}")
        click.echo(f"    {item.subject or '(no subject)'}")
        if item.verification_link:
            click.echo(f"    verification link: {item.verification_link}")
    if not items:
        click.echo("no verification mail" if verification else "the operator inbox is empty")


@inbox.command("show")
@data_dir_option
@click.argument("message_id")
@friendly_errors
def inbox_show(data_dir: Path, message_id: str) -> None:
    """One kept mail: who wrote, to which mailbox, and its text."""
    with _inbox(data_dir) as kept:
        found = kept.show(message_id)
    if found is None:
        raise click.ClickException(f"no mail {message_id} in the operator inbox (see `waypost inbox list`)")
    item = found.item
    click.echo(f"from:     {item.sender}\nto:       {item.mailbox}\nreceived: {item.received_at:%Y-%m-%d %H:%M:%S}Z")
    click.echo(f"subject:  {item.subject}\noutcome:  {item.outcome}\n")
    for link in found.links:
        click.echo(f"verification link (not followed; open it yourself if you asked for it): {link}")
    if found.message is None:
        click.echo("(the message itself is no longer kept, or could not be read)")
        return
    click.echo(found.message.text or "(no text part)")
    for attachment in found.message.attachments:
        click.echo(f"[attachment: {attachment.filename or 'unnamed'}, {attachment.content_type}, "
                   f"{len(attachment.data)} bytes]")


@inbox.command("notices")
@data_dir_option
@click.option("--days", default=7.0, show_default=True, help="How far back to look.")
@friendly_errors
def inbox_notices(data_dir: Path, days: float) -> None:
    """Complaints, abuse@ reports, removal requests without a token and new suppressions."""
    from waypost.reputation.digest import recent_notices

    database = database_for(data_dir)
    try:
        found = recent_notices(database, timedelta(days=days))
    finally:
        database.dispose()
    for notice in found:
        click.echo(f"{notice.at:%Y-%m-%d %H:%M}Z  {notice.kind:16} {notice.address}  {notice.detail}")
    if not found:
        click.echo(f"nothing in the last {days:g} days")
