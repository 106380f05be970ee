"""device relay (issue 22): devices, their attachment links, and the submission login per message

``relay_devices`` holds each device's settings (its password stays in the submission users
file; ``sender`` is the From address it mails its mailbox with from outside trusted networks,
as through SES); ``relay_links`` one row per (relayed message, recipient, attachment), the token
kept only as a SHA-256; ``inbound_messages.auth_user`` the login that sent a message over the
submission port, which is how the relay knows the device.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("inbound_messages")}
    if "auth_user" not in columns:  # the downgrade keeps it (dropping a column rebuilds a SQLite table)
        op.add_column("inbound_messages", sa.Column("auth_user", sa.String(length=64), nullable=True))
    op.create_table(
        "relay_devices",
        sa.Column("name", sa.String(length=48), nullable=False),
        sa.Column("owner", sa.String(length=320), nullable=False),
        sa.Column("allow", sa.JSON(), nullable=False),
        sa.Column("default_to", sa.JSON(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("link_days", sa.Integer(), nullable=False),
        sa.Column("max_mb", sa.Integer(), nullable=False),
        sa.Column("submission_user", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(length=255), nullable=True),
        sa.Column("sender", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_relay_devices")),
        sa.UniqueConstraint("submission_user", name=op.f("uq_relay_devices_submission_user")),
    )
    op.create_table(
        "relay_links",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=48), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("blob_key", sa.String(length=255), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purge_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("downloads", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_relay_links_token_hash")),
    )
    for column in ("device", "message_id", "recipient", "purge_after"):
        op.create_index(op.f(f"ix_relay_links_{column}"), "relay_links", [column])


def downgrade() -> None:
    for column in ("device", "message_id", "recipient", "purge_after"):
        op.drop_index(op.f(f"ix_relay_links_{column}"), table_name="relay_links")
    op.drop_table("relay_links")
    op.drop_table("relay_devices")
