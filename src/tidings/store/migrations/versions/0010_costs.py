"""What each message cost: an exact amount in millionths of its currency, and the currency.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("cost_micros", sa.BigInteger(), nullable=True))
    op.add_column("messages", sa.Column("currency", sa.String(length=3), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "currency")
    op.drop_column("messages", "cost_micros")
