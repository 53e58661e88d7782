"""The dashboard's lists: the webhook log's entries that were not processed ("failed only"),
and inbound messages by the number they were sent to, each newest first through an index.

The partial index holds only the entries not processed, so it stays small; a webhook's entry is
in it from its arrival until it is processed.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_log_unprocessed",
        "webhook_log",
        ["id"],
        postgresql_where=sa.text("processed IS false"),
        sqlite_where=sa.text("processed IS 0"),
    )
    op.create_index("ix_inbound_messages_to", "inbound_messages", ["to", "id"])


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_to", table_name="inbound_messages")
    op.drop_index("ix_webhook_log_unprocessed", table_name="webhook_log")
