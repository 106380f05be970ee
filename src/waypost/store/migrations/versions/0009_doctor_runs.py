"""doctor runs: each `waypost doctor` result, for the drift alarm and the SES request

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "doctor_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("worst", sa.String(length=8), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_doctor_runs")),
    )
    op.create_index(op.f("ix_doctor_runs_at"), "doctor_runs", ["at"])


def downgrade() -> None:
    op.drop_table("doctor_runs")
