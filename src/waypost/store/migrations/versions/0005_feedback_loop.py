"""feedback loop: applied feedback events, transient-bounce scores, suppression and pause audit
logs, alarm states, unreadable feedback; outbound rows findable by the provider's message id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    # CREATE only (see 0002: a SQLite table rebuild cascades into children).
    op.create_index(op.f("ix_outbound_messages_provider_message_id"), "outbound_messages",
                    ["provider_message_id"], unique=False)
    op.create_index(op.f("ix_outbound_messages_message_id_header"), "outbound_messages",
                    ["message_id_header"], unique=False)
    op.create_index(op.f("ix_inbound_messages_from_address"), "inbound_messages", ["from_address"], unique=False)
    op.create_index("ix_outbound_messages_state_window_at", "outbound_messages", ["state", "window_at", "stream"])
    op.create_table(
        "feedback_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("outbound_id", sa.Integer(), nullable=True),
        sa.Column("stream", sa.String(length=32), nullable=True),
        sa.Column("bounce_type", sa.String(length=16), nullable=True),
        sa.Column("bounce_subtype", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("feedback_type", sa.String(length=32), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("counts_as", sa.String(length=16), nullable=True),
        sa.Column("occurred_at", _AT, nullable=True),
        sa.Column("received_at", _AT, nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_feedback_events_dedupe_key")),
    )
    op.create_index("ix_feedback_events_counts_as_received_at", "feedback_events",
                    ["counts_as", "received_at", "stream"])
    op.create_index("ix_feedback_events_outcome_received_at", "feedback_events", ["outcome", "received_at"])
    op.create_index(op.f("ix_feedback_events_recipient"), "feedback_events", ["recipient"])
    op.create_index(op.f("ix_feedback_events_outbound_id"), "feedback_events", ["outbound_id"])
    op.create_table(
        "bounce_scores",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("bounces", sa.JSON(), nullable=False),
        sa.Column("last_at", _AT, nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_bounce_scores")),
    )
    op.create_table(
        "suppression_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _AT, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression_log")),
    )
    op.create_index(op.f("ix_suppression_log_at"), "suppression_log", ["at"])
    op.create_index(op.f("ix_suppression_log_address"), "suppression_log", ["address"])
    op.create_table(
        "pause_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _AT, nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pause_log")),
    )
    op.create_table(
        "alarm_states",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("since", _AT, nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("mailed_at", _AT, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_alarm_states")),
    )
    op.create_table(
        "feedback_unreadable",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("received_at", _AT, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_unreadable")),
    )


def downgrade() -> None:
    for table in ("feedback_unreadable", "alarm_states", "pause_log", "suppression_log", "bounce_scores",
                  "feedback_events"):
        op.drop_table(table)
    op.drop_index(op.f("ix_outbound_messages_provider_message_id"), table_name="outbound_messages")
    op.drop_index(op.f("ix_outbound_messages_message_id_header"), table_name="outbound_messages")
    op.drop_index(op.f("ix_inbound_messages_from_address"), table_name="inbound_messages")
    op.drop_index("ix_outbound_messages_state_window_at", table_name="outbound_messages")
