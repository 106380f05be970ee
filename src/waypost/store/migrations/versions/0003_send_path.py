"""send path: suppression list, sending pauses, rate windows, per-minute send counts, handoff times

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _add_column(table: str, column: sa.Column) -> None:
    """Add unless present: the downgrade keeps the columns, so an upgrade after it finds them."""
    if column.name not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}:
        op.add_column(table, column)


def upgrade() -> None:
    # ADD COLUMN and CREATE only (see 0002: a SQLite table rebuild cascades into children).
    _add_column("outbound_messages", sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True))
    _add_column("outbound_messages", sa.Column("handoff_at", sa.DateTime(timezone=True), nullable=True))
    _add_column("outbound_messages", sa.Column("window_at", sa.DateTime(timezone=True), nullable=True))
    _add_column("outbound_messages",
                sa.Column("unconfirmed", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index(op.f("ix_outbound_messages_window_at"), "outbound_messages", ["window_at"], unique=False)
    op.create_table(
        "send_minutes",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("minute", name=op.f("pk_send_minutes")),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("address", name=op.f("uq_suppressions_address")),
    )
    op.create_table(
        "sending_pauses",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("paused_by", sa.String(length=64), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_sending_pauses")),
    )
    op.create_table(
        "send_locks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_send_locks")),
    )
    op.bulk_insert(sa.table("send_locks", sa.column("name")), [{"name": "send"}])


def downgrade() -> None:
    # The added columns stay (dropping a column rebuilds the table on SQLite); 0002 code ignores them.
    op.drop_table("send_locks")
    op.drop_table("send_minutes")
    op.drop_table("sending_pauses")
    op.drop_table("suppressions")
    op.drop_index(op.f("ix_outbound_messages_window_at"), table_name="outbound_messages")
