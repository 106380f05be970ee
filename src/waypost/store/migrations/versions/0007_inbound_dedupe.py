"""inbound de-duplication: one handled copy per (sender, Message-ID) within a window

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # CREATE only (see 0002: a SQLite table rebuild cascades into children). Mail processed
    # before this revision has no claim, so a copy of it arriving later is answered once more.
    op.create_table(
        "inbound_dedupe",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("inbound_id", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_inbound_dedupe")),
    )
    op.create_index(op.f("ix_inbound_dedupe_received_at"), "inbound_dedupe", ["received_at"])


def downgrade() -> None:
    op.drop_table("inbound_dedupe")
