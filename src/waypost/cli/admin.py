"""`waypost admin`: the operator console's login. Registered on the main group by
the ``waypost.cli`` package."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from waypost.cli.base import cli, data_dir_option, friendly_errors, settings_from


@cli.group()
def admin() -> None:
    """The operator console at /admin (see docs/console.md)."""


@admin.command("passwd")
@data_dir_option
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@friendly_errors
def admin_passwd(data_dir: Path, password_stdin: bool) -> None:
    """Set the console password (asked twice unless --password-stdin). Sessions made with the
    old password end at their next request."""
    from waypost.web.admin.password import write_password

    path = settings_from(data_dir).admin_password_file
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    write_password(path, password)
    click.echo(f"console password set ({path})")
