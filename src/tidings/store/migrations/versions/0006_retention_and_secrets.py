"""Retention and signing: a refused webhook's size and hash, redaction marks on messages and
inbound messages, and every API key's callback signing secret (with the previous one after a
rotation).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_log", sa.Column("body_size", sa.Integer(), server_default="0", nullable=False))
    op.add_column("webhook_log", sa.Column("body_sha256", sa.String(length=64), nullable=True))
    op.execute("UPDATE webhook_log SET body_size = length(body)")
    op.add_column("messages", sa.Column("redacted_at", sa.DateTime(), nullable=True))
    op.add_column("inbound_messages", sa.Column("redacted_at", sa.DateTime(), nullable=True))
    op.add_column("api_keys", sa.Column("previous_callback_secret", sa.String(length=64), nullable=True))
    op.add_column("api_keys", sa.Column("previous_secret_until", sa.DateTime(), nullable=True))
    # Every key signs its callbacks: give the keys that never set callback settings their secret.
    bind = op.get_bind()
    keys = sa.table("api_keys", sa.column("id", sa.String()), sa.column("callback_secret", sa.String()))
    for (key_id,) in bind.execute(sa.select(keys.c.id).where(keys.c.callback_secret.is_(None))).all():
        bind.execute(
            keys.update()
            .where(keys.c.id == key_id)
            .values(callback_secret="whsec_" + secrets.token_urlsafe(32))
        )


def downgrade() -> None:
    op.drop_column("api_keys", "previous_secret_until")
    op.drop_column("api_keys", "previous_callback_secret")
    op.drop_column("inbound_messages", "redacted_at")
    op.drop_column("messages", "redacted_at")
    op.drop_column("webhook_log", "body_sha256")
    op.drop_column("webhook_log", "body_size")
