"""SES receipt ingress: the SES message id of mail taken from SES, unique (one row per mail)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("inbound_messages")}
    if "ses_message_id" not in columns:  # the downgrade keeps it (dropping a column rebuilds a SQLite table)
        op.add_column("inbound_messages", sa.Column("ses_message_id", sa.String(length=255), nullable=True))
    # NULLs never collide: mail from SMTP has none
    op.create_index(op.f("ux_inbound_messages_ses_message_id"), "inbound_messages", ["ses_message_id"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ux_inbound_messages_ses_message_id"), table_name="inbound_messages")
