"""journey threads (reply token, thread Message-IDs) and raw_deleted_at

A reply token per journey and the Message-ID of every mail in its thread; when a raw
message was deleted after processing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _add_column(table: str, column: sa.Column) -> None:
    """Add unless present: the downgrade keeps the columns, so an upgrade after it finds them."""
    if column.name not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}:
        op.add_column(table, column)


def upgrade() -> None:
    # Only ADD COLUMN and CREATE INDEX here: anything that makes SQLite rebuild a table
    # (batch mode) drops the old one, and with foreign keys on that cascades into its
    # children: photos and journey_messages would be emptied.
    _add_column("inbound_messages", sa.Column("raw_deleted_at", sa.DateTime(timezone=True), nullable=True))
    _add_column("journeys", sa.Column("reply_token", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_journeys_reply_token"), "journeys", ["reply_token"], unique=True)
    op.create_table(
        "journey_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("journey_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("inbound_message_id", sa.String(length=32), nullable=True),
        sa.Column("message_id_header", sa.String(length=998), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["journey_id"], ["journeys.id"], name=op.f("fk_journey_messages_journey_id_journeys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbound_message_id"], ["inbound_messages.id"],
            name=op.f("fk_journey_messages_inbound_message_id_inbound_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_messages")),
        sa.UniqueConstraint("inbound_message_id", name=op.f("uq_journey_messages_inbound_message_id")),
    )
    op.create_index(op.f("ix_journey_messages_journey_id"), "journey_messages", ["journey_id"], unique=False)
    op.create_index("ix_journey_messages_message_id_header", "journey_messages", ["message_id_header"], unique=False)

    conn = op.get_bind()
    journeys = sa.table("journeys", sa.column("id"), sa.column("source_message_id"), sa.column("reply_token"),
                        sa.column("created_at"))
    inbound = sa.table("inbound_messages", sa.column("id"), sa.column("message_id_header"))
    outbound = sa.table("outbound_messages", sa.column("idempotency_key"), sa.column("message_id_header"))
    links = sa.table("journey_messages", sa.column("journey_id"), sa.column("direction"),
                     sa.column("inbound_message_id"), sa.column("message_id_header"), sa.column("created_at"))
    rows = conn.execute(
        sa.select(journeys.c.id, journeys.c.source_message_id, journeys.c.created_at, inbound.c.message_id_header)
        .select_from(journeys.outerjoin(inbound, inbound.c.id == journeys.c.source_message_id))
    ).all()
    for row in rows:
        token = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=").lower()  # as the app makes them
        conn.execute(journeys.update().where(journeys.c.id == row.id).values(reply_token=token))
        conn.execute(links.insert().values(journey_id=row.id, direction="in", inbound_message_id=row.source_message_id,
                                           message_id_header=row.message_id_header, created_at=row.created_at))
        reply = conn.execute(sa.select(outbound.c.message_id_header)
                             .where(outbound.c.idempotency_key == f"journeys-reply-{row.source_message_id}")).scalar()
        if reply:
            conn.execute(links.insert().values(journey_id=row.id, direction="out", inbound_message_id=None,
                                               message_id_header=reply, created_at=row.created_at))


def downgrade() -> None:
    # The two added columns stay: dropping a column makes SQLite rebuild the table, which
    # fails on (or cascades through) the foreign keys. Code of revision 0001 ignores them.
    op.drop_table("journey_messages")
    op.drop_index(op.f("ix_journeys_reply_token"), table_name="journeys")
