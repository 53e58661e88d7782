"""Batches (one request, many recipients), stored templates with their versions, and the
signatures of signed requests already used.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("owner", sa.String(length=26), nullable=False),
        sa.Column("group_id", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("template_id", sa.String(length=26), nullable=True),
        sa.Column("template_version", sa.Integer(), nullable=True),
        sa.Column("shared", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("refused", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    op.create_index("ix_batches_group", "batches", ["owner", "group_id"], unique=True)
    op.create_index("ix_batches_created_at", "batches", ["created_at"])
    op.create_table(
        "batch_tags",
        sa.Column("batch_id", sa.String(length=26), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name="fk_batch_tags_batch_id_batches", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("batch_id", "tag", name="pk_batch_tags"),
    )
    op.create_index("ix_batch_tags_tag", "batch_tags", ["tag", "batch_id"])
    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sa.UniqueConstraint("name", name="uq_templates_name"),
    )
    op.create_table(
        "template_versions",
        sa.Column("template_id", sa.String(length=26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("outer", sa.Text(), nullable=True),
        sa.Column("inner", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("template_id", "version", name="pk_template_versions"),
    )
    op.create_table(
        "used_signatures",
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.String(length=26), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("signature", name="pk_used_signatures"),
    )
    op.create_index("ix_used_signatures_expires_at", "used_signatures", ["expires_at"])
    op.add_column("messages", sa.Column("batch_id", sa.String(length=26), nullable=True))
    op.add_column("messages", sa.Column("template_id", sa.String(length=26), nullable=True))
    op.add_column("messages", sa.Column("template_version", sa.Integer(), nullable=True))
    op.create_index("ix_messages_batch", "messages", ["batch_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_batch", table_name="messages")
    op.drop_column("messages", "template_version")
    op.drop_column("messages", "template_id")
    op.drop_column("messages", "batch_id")
    op.drop_index("ix_used_signatures_expires_at", table_name="used_signatures")
    op.drop_table("used_signatures")
    op.drop_table("template_versions")
    op.drop_table("templates")
    op.drop_index("ix_batch_tags_tag", table_name="batch_tags")
    op.drop_table("batch_tags")
    op.drop_index("ix_batches_created_at", table_name="batches")
    op.drop_index("ix_batches_group", table_name="batches")
    op.drop_table("batches")
