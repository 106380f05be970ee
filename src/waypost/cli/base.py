"""The `waypost` group and what its commands share: the data directory option, settings,
errors shown as one line, and the two ways to reach the service (the whole runtime, or the
database alone)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from waypost import DEFAULT_DATA_DIR, __version__
from waypost.errors import ConfigError, WaypostError

if TYPE_CHECKING:  # the settings module (pydantic) loads only in commands that read settings
    from waypost.config import Settings
    from waypost.pipeline.allowlist import Allowlist
    from waypost.runtime import Runtime
    from waypost.transactions import Database

def data_dir_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="WAYPOST_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        show_default=True,
        help="Directory holding waypost.toml, the SQLite database, blobs and the outbox.",
    )(command)


def settings_from(data_dir: Path, **overrides: Any) -> Settings:
    from waypost.config import load_settings

    try:
        return load_settings(data_dir, **overrides)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


def reachable_operator(settings: Settings) -> None:
    """Refuse to start a service whose operator contact leads nowhere (config.check_operator_reachable)."""
    from waypost.config import check_operator_reachable

    try:
        check_operator_reachable(settings)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except WaypostError as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def runtime_for(data_dir: Path, **overrides: Any) -> Runtime:
    from waypost import runtime

    return runtime.build(settings_from(data_dir, **overrides))


def database_for(data_dir: Path) -> Database:
    """The database alone, migrated: for commands that only read or write rows, without
    loading the whole service (the journey engine, the senders, the web face)."""
    from waypost.store import migrate
    from waypost.store.db import create_engine

    settings = settings_from(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url)
    migrate.upgrade(engine)
    return engine


def allowlist_for(data_dir: Path) -> Allowlist:
    from waypost.pipeline.allowlist import Allowlist

    return Allowlist(database_for(data_dir))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="waypost")
@click.option("--log-level", default="INFO", show_default=True, envvar="WAYPOST_LOG_LEVEL",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, envvar="WAYPOST_LOG_FORMAT",
              type=click.Choice(["text", "json"]), help="json: one JSON object per line (structlog).")
def cli(log_level: str, log_format: str) -> None:
    """Waypost: email photos in, a journey on a map back."""
    from waypost import logs

    logs.configure(log_level, log_format)
