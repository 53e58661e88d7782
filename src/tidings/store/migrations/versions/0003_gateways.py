"""Android gateways: last poll and counts per phone.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateways",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("first_poll_at", sa.DateTime(), nullable=False),
        sa.Column("last_poll_at", sa.DateTime(), nullable=False),
        sa.Column("last_address", sa.String(length=64), nullable=True),
        sa.Column("polls", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("inbound_received", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updates_received", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("messages_handed_over", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gateways")),
    )


def downgrade() -> None:
    op.drop_table("gateways")
