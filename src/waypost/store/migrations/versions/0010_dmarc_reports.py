"""DMARC and TLS reports: aggregate (rua), failure (ruf) and SMTP TLS (RFC 8460) reports

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dmarc_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("org_name", sa.String(length=255), nullable=True),
        sa.Column("report_id", sa.String(length=255), nullable=True),
        sa.Column("policy_domain", sa.String(length=255), nullable=True),
        sa.Column("date_begin", sa.DateTime(timezone=True), nullable=True),
        sa.Column("date_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("malformed", sa.Boolean(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dmarc_reports")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_dmarc_reports_dedupe_key")),
    )
    op.create_index(op.f("ix_dmarc_reports_received_at"), "dmarc_reports", ["received_at"])
    op.create_table(
        "dmarc_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_pk", sa.Integer(), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("dkim", sa.String(length=16), nullable=False),
        sa.Column("spf", sa.String(length=16), nullable=False),
        sa.Column("header_from", sa.String(length=255), nullable=True),
        sa.Column("auth", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_pk"],
            ["dmarc_reports.id"],
            name=op.f("fk_dmarc_records_report_pk_dmarc_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dmarc_records")),
    )
    op.create_index(op.f("ix_dmarc_records_report_pk"), "dmarc_records", ["report_pk"])
    op.create_table(
        "tls_report_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_pk", sa.Integer(), nullable=False),
        sa.Column("policy_domain", sa.String(length=255), nullable=False),
        sa.Column("policy_type", sa.String(length=16), nullable=False),
        sa.Column("success_count", sa.Integer(), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_pk"],
            ["dmarc_reports.id"],
            name=op.f("fk_tls_report_policies_report_pk_dmarc_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tls_report_policies")),
    )
    op.create_index(
        op.f("ix_tls_report_policies_report_pk"), "tls_report_policies", ["report_pk"]
    )


def downgrade() -> None:
    op.drop_table("tls_report_policies")
    op.drop_table("dmarc_records")
    op.drop_table("dmarc_reports")
