"""Tracking: webhook log, inbound messages, routes and failover, per-recipient order, polling.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("route", sa.JSON(), nullable=True))
    op.add_column(
        "messages", sa.Column("provider_failures", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("messages", sa.Column("ordered", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("messages", sa.Column("polled_at", sa.DateTime(), nullable=True))
    op.add_column("messages", sa.Column("polls", sa.Integer(), server_default="0", nullable=False))
    op.create_index(
        "ix_messages_awaiting_receipt",
        "messages",
        ["provider", "sent_at"],
        postgresql_where=sa.text("status = 'sent'"),
        sqlite_where=sa.text("status = 'sent'"),
    )
    op.create_table(
        "webhook_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("remote_ip", sa.String(length=64), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=True),
        sa.Column("processed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=26), nullable=True),
        sa.Column("reports", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unmatched", sa.Integer(), server_default="0", nullable=False),
        sa.Column("inbound", sa.Integer(), server_default="0", nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_log")),
    )
    op.create_index("ix_webhook_log_provider", "webhook_log", ["provider", "id"])
    op.create_index("ix_webhook_log_message_id", "webhook_log", ["message_id"])
    op.create_index("ix_webhook_log_received_at", "webhook_log", ["received_at"])
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.Column("from", sa.String(length=64), nullable=False),
        sa.Column("to", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("webhook_log_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
    )
    op.create_index(
        "ix_inbound_messages_provider_message",
        "inbound_messages",
        ["provider", "provider_message_id"],
        unique=True,
    )
    op.create_index("ix_inbound_messages_from", "inbound_messages", ["from", "id"])
    op.create_index("ix_inbound_messages_received_at", "inbound_messages", ["received_at"])


def downgrade() -> None:
    op.drop_table("inbound_messages")
    op.drop_table("webhook_log")
    op.drop_index("ix_messages_awaiting_receipt", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        for column in ("polls", "polled_at", "ordered", "provider_failures", "route"):
            batch.drop_column(column)
