"""inbound authentication verdicts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("inbound_messages")}
    if "auth" not in columns:  # the downgrade keeps it (dropping a column rebuilds a SQLite table)
        op.add_column("inbound_messages", sa.Column("auth", sa.JSON(), nullable=True))


def downgrade() -> None:
    pass  # the column stays; code of revision 0003 ignores it
