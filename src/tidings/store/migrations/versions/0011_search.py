"""Searching messages: full-text search over their body and subject, and an index on cost.

``ix_messages_cost`` (currency, cost_micros), partial: a message has no cost when it is stored.

Full text: SQLite: an external-content FTS5 table, ``messages_fts``, over ``messages`` (body, subject),
keyed by the messages' rowid, kept right by triggers on insert, delete and any update of body or
subject (retention's redaction blanks bodies). PostgreSQL: a generated ``tsvector`` column,
``search_vector``, with a GIN index, ``ix_messages_search``; ``tidings_search_text`` prepares text
for it (and for queries). Messages already stored are indexed here.

The full-text objects are not in ``tables.py``: they exist on one database each (see
``store/search.py``).

Upgrading a large messages table takes a while, during which nothing can be written: on
PostgreSQL, adding a stored generated column rewrites the table under an exclusive lock (55 s for
a million messages, measured); on SQLite, indexing the stored messages holds the write lock (11 s
for a million). Stop the workers first.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Letters lose their accents (decomposed, then the combining marks dropped) and ASCII punctuation
# separates words, so that PostgreSQL's parser cuts text as SQLite's unicode61 tokenizer does
# (amina@example.org is three words, not one email token). normalize() needs a UTF8 database.
_POSTGRES = [
    r"""
    CREATE FUNCTION tidings_search_text(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $fn$
        SELECT regexp_replace(
            regexp_replace(
                normalize(value, NFD),
                '[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]', '', 'g'
            ),
            '[!-/:-@[-`{-~]', ' ', 'g'
        )
    $fn$
    """,
    """
    ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, tidings_search_text(coalesce(subject, '') || ' ' || body))
    ) STORED
    """,
    "CREATE INDEX ix_messages_search ON messages USING gin (search_vector)",
    # With the default statistics PostgreSQL knows about 150 words and takes any other to be in
    # 0.5 % of messages, so a search for a rare word walks the whole table in id order looking for
    # it (0.8 s over a million messages). With this sample it knows about 4,000 and takes the
    # others to be in 0.006 %, and a rare word is looked up in the GIN index (5 ms). ANALYZE of a
    # million messages takes 7 s instead of 0.7 s.
    "ALTER TABLE messages ALTER COLUMN search_vector SET STATISTICS 1000",
]

_SQLITE = [
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        body, subject, content='messages', content_rowid='rowid',
        tokenize='unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, body, subject) VALUES (new.rowid, new.body, new.subject);
    END
    """,
    """
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body, subject)
        VALUES ('delete', old.rowid, old.body, old.subject);
    END
    """,
    """
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF body, subject ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, body, subject)
        VALUES ('delete', old.rowid, old.body, old.subject);
        INSERT INTO messages_fts (rowid, body, subject) VALUES (new.rowid, new.body, new.subject);
    END
    """,
    # The messages already stored.
    "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _POSTGRES if dialect == "postgresql" else _SQLITE:
        op.execute(statement)
    # Searching by cost; partial, as no message has a cost when it is stored.
    op.create_index(
        "ix_messages_cost",
        "messages",
        ["currency", "cost_micros"],
        postgresql_where=sa.text("currency IS NOT NULL"),
        sqlite_where=sa.text("currency IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_cost", table_name="messages")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_messages_search")
        op.execute("ALTER TABLE messages DROP COLUMN search_vector")
        op.execute("DROP FUNCTION tidings_search_text(text)")
        return
    for trigger in ("messages_fts_update", "messages_fts_delete", "messages_fts_insert"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE messages_fts")
