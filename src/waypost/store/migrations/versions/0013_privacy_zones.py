"""privacy zones: places a person keeps off every public output of their journeys (issue 15)

A zone is a circle (centre, radius in metres) per person, keyed by their address without its
+tag, set by the person (`hide home` in a journey's thread) or by the operator
(`waypost person zone add`). Retention of the other stores needs no schema change.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_zones",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("radius_m", sa.Float(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_zones")),
    )
    op.create_index(op.f("ix_privacy_zones_address"), "privacy_zones", ["address"])


def downgrade() -> None:
    op.drop_index(op.f("ix_privacy_zones_address"), table_name="privacy_zones")
    op.drop_table("privacy_zones")
