"""Which messages may go to an address on the suppression list: the confirmation of an opt-out,
and nothing else. The claim (a worker's, or a phone's poll) reads the list again, so a message
accepted while its recipient's opt-out was being stored is not sent; the confirmation is.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "messages",
        sa.Column("exempt_from_opt_out", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("exempt_from_opt_out")
