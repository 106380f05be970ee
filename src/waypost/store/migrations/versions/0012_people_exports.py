"""people: exports (a person's zip behind an expiring link) and erasure requests (issue 15)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("source_message_id", sa.String(length=32), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("blob_key", sa.String(length=255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
        sa.UniqueConstraint("source_message_id", name=op.f("uq_exports_source_message_id")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_exports_token_hash")),
    )
    op.create_index(op.f("ix_exports_address"), "exports", ["address"])
    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("source_message_id", sa.String(length=32), nullable=False),
        sa.Column("confirmation_message_id", sa.String(length=998), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_requests")),
        sa.UniqueConstraint("source_message_id", name=op.f("uq_erasure_requests_source_message_id")),
    )
    op.create_index(op.f("ix_erasure_requests_confirmation_message_id"), "erasure_requests",
                    ["confirmation_message_id"])


def downgrade() -> None:
    op.drop_table("erasure_requests")
    op.drop_table("exports")
