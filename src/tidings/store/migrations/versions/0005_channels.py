"""Channels: addresses that are not phone numbers, SMS-only columns optional, suppressions per
channel, and a provider's further ids for a message.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# SQLite rebuilds a table to change a column; its partial indexes are dropped first and made again
# afterwards, exactly as declared, rather than trusting their reflection.
_PARTIAL = {
    "ix_messages_due": (["provider", "next_attempt_at"], "status = 'pending'"),
    "ix_messages_scheduled": (["send_at"], "status = 'scheduled'"),
    "ix_messages_leased": (["lease_expires_at"], "status = 'sending'"),
    "ix_messages_awaiting_receipt": (["provider", "sent_at"], "status = 'sent'"),
}


def _messages_columns(address: int, sms_required: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for name in _PARTIAL:
            op.drop_index(name, table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("to", type_=sa.String(length=address), existing_nullable=False)
        batch.alter_column("sender", type_=sa.String(length=address), existing_nullable=True)
        batch.alter_column("segments", nullable=not sms_required, existing_type=sa.Integer())
        batch.alter_column("encoding", nullable=not sms_required, existing_type=sa.String(length=8))
    if sqlite:
        for name, (columns, where) in _PARTIAL.items():
            op.create_index(name, "messages", columns, sqlite_where=sa.text(where))


def upgrade() -> None:
    _messages_columns(320, sms_required=False)

    op.drop_index("ix_opt_outs_number_scope", table_name="opt_outs")
    with op.batch_alter_table("opt_outs") as batch:
        batch.add_column(sa.Column("channel", sa.String(length=16), server_default="sms", nullable=False))
        batch.alter_column(
            "number",
            new_column_name="address",
            type_=sa.String(length=320),
            existing_type=sa.String(length=64),
            existing_nullable=False,
        )
        batch.alter_column("scope", type_=sa.String(length=320), existing_type=sa.String(length=64))
    op.create_index(
        "ix_opt_outs_channel_address_scope", "opt_outs", ["channel", "address", "scope"], unique=True
    )

    op.create_table(
        "message_provider_ids",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_message_id", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_provider_ids_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("provider", "provider_message_id", name=op.f("pk_message_provider_ids")),
    )
    op.create_index("ix_message_provider_ids_message_id", "message_provider_ids", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_message_provider_ids_message_id", table_name="message_provider_ids")
    op.drop_table("message_provider_ids")
    op.drop_index("ix_opt_outs_channel_address_scope", table_name="opt_outs")
    with op.batch_alter_table("opt_outs") as batch:
        batch.alter_column("address", new_column_name="number", type_=sa.String(length=64))
        batch.alter_column("scope", type_=sa.String(length=64))
        batch.drop_column("channel")
    op.create_index("ix_opt_outs_number_scope", "opt_outs", ["number", "scope"], unique=True)
    _messages_columns(64, sms_required=True)
