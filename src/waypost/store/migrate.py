"""Schema migrations (Alembic), run by `waypost db upgrade` and at service start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)


def _config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``. A database already there costs a quick check, and
    says nothing; an upgrade says once what it did (Alembic's own INFO lines are left out)."""
    before = current_revision(engine)
    target = head_revision() if revision == "head" else revision
    if before == target:
        return
    from alembic import command

    command.upgrade(_config(engine), revision)
    log.info("database schema upgraded from %s to %s", before or "empty", current_revision(engine))


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database (Alembic's version table), None for an empty one."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()
