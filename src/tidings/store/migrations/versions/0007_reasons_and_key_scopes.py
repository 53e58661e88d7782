"""Normalised failure reasons on messages and events; API key scopes, rate limits and test keys.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("failure_reason", sa.String(length=32), nullable=True))
    op.add_column("message_events", sa.Column("failure_reason", sa.String(length=32), nullable=True))
    op.add_column(
        "api_keys",
        sa.Column("scopes", sa.String(length=64), server_default="send read admin", nullable=False),
    )
    op.add_column("api_keys", sa.Column("rate_limit", sa.Float(), nullable=True))
    op.add_column("api_keys", sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column("api_keys", "test")
    op.drop_column("api_keys", "rate_limit")
    op.drop_column("api_keys", "scopes")
    op.drop_column("message_events", "failure_reason")
    op.drop_column("messages", "failure_reason")
