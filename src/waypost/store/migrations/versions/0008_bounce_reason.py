"""bounce reasons: each recorded feedback event keeps the reason its recipient failed for

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _add_column(table: str, column: sa.Column) -> None:
    """Add unless present: the downgrade keeps the column, so an upgrade after it finds it."""
    if column.name not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}:
        op.add_column(table, column)


def upgrade() -> None:
    # ADD COLUMN only (see 0002: a SQLite table rebuild cascades into children). Events recorded
    # before this revision keep NULL: their reason was never worked out, and the raw notice is
    # kept, so `waypost feedback explain` can still tell it.
    _add_column("feedback_events", sa.Column("reason", sa.String(length=24), nullable=True))


def downgrade() -> None:
    # The added column stays (dropping a column rebuilds the table on SQLite); older code ignores it.
    pass
