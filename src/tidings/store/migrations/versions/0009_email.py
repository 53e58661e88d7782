"""Email content on messages (subject, HTML part, reply-to, headers, opened and clicked times),
attachments, and the installation's own secrets (the unsubscribe links' signing key).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("subject", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("html", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("reply_to", sa.String(length=320), nullable=True))
    op.add_column("messages", sa.Column("headers", sa.JSON(), nullable=True))
    op.add_column("messages", sa.Column("opened_at", sa.DateTime(), nullable=True))
    op.add_column("messages", sa.Column("clicked_at", sa.DateTime(), nullable=True))
    op.create_table(
        "message_attachments",
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=127), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_message_attachments_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "position", name="pk_message_attachments"),
    )
    secrets_table = op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_secrets"),
    )
    op.bulk_insert(secrets_table, [{"name": "unsubscribe", "value": secrets.token_urlsafe(48)}])


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_table("message_attachments")
    for column in ("clicked_at", "opened_at", "headers", "reply_to", "html", "subject"):
        op.drop_column("messages", column)
