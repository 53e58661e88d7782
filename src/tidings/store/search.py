"""Full-text search over messages' body and subject, on each database's own engine.

SQLite has an external-content FTS5 table, ``messages_fts`` (tokenizer ``unicode61
remove_diacritics 2``), keyed by the rowid of ``messages`` and kept right by triggers; PostgreSQL a
generated ``tsvector`` column, ``search_vector`` (configuration ``simple``: no stemming or stop
words, messages are in many languages), with a GIN index. Both fold case and accents and cut words
at anything but letters and digits. Migration ``0011`` creates them; they are not in
``tables.py``, whose schema is the same on both databases, and :func:`declared` keeps them out
of the comparison of migrations with it.

Messages on SQLite must keep their rowids for the index to stay right: never rebuild the table
by copying rows (as Alembic's batch mode does) without running the FTS5 ``rebuild`` command after,
and recreate the triggers, which a dropped table takes with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    case,
    column,
    exists,
    func,
    literal_column,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.tables import messages

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

FTS_TABLE = "messages_fts"
VECTOR_COLUMN = "search_vector"
VECTOR_INDEX = "ix_messages_search"

_ONE_DATABASE_ONLY = {
    *(("table", None, f"{FTS_TABLE}{shadow}") for shadow in ("", "_data", "_idx", "_docsize", "_config")),
    ("column", "messages", VECTOR_COLUMN),
    ("index", "messages", VECTOR_INDEX),
}
"""(kind, table, name) of each: the FTS5 table with its shadow tables; the column and its index."""

_fts = table(FTS_TABLE, column("rowid"), column(FTS_TABLE))
_ROWID = literal_column("messages.rowid", Integer())
"""The rowid of a message on SQLite, which the text index refers to."""


def declared(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Whether ``tables.py`` declares the schema object ``name`` (of Alembic's ``type_``, in the
    table ``parent_names`` names): all do but the search index's, which exist on one database
    only. Alembic's ``include_name`` hook, for comparing the migrations with ``tables.py``."""
    parent = parent_names.get("table_name") if type_ in ("column", "index") else None
    return (type_, parent, name) not in _ONE_DATABASE_ONLY


def fts5_query(terms: Sequence[str]) -> str:
    """An FTS5 query that matches rows having every one of ``terms``: each a quoted string, so
    nothing in it is read as FTS5 syntax (operators, ``*``, ``column:``)."""
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


# -- how a search reaches its rows ------------------------------------------------------------------

SQLITE_FEW = 2_000
"""On SQLite, a filter whose index finds at most this many messages, out of id order (the text,
a number prefix, a provider, a creation window, a currency and cost), is where the search
starts: those rows are read, checked and sorted (a few milliseconds, tens if each asks the text
index)."""
SQLITE_LISTED = 100_000
"""On SQLite, a search that starts from another filter checks the text against the list of all
its matches when there are at most this many (0.35 µs a match to build), else row by row."""
SQLITE_WINDOW = 10_000
"""On SQLite, a walk through a common word checks each row against a list of this many of its
matches, the newest at or below where the walk starts (a few milliseconds to build)."""

Start = Literal["text", "to_prefix", "provider", "created", "cost"]
"""A filter whose index finds rows out of id order: where a SQLite search may start."""


@dataclass(frozen=True)
class Access:
    """How a search reaches its rows.

    PostgreSQL plans for itself, from the statistics it keeps (the text's included: see migration
    0011). SQLite keeps none and guesses: given a common word, or a provider's name, it reads every
    match and sorts them all (seconds over a million messages). So on SQLite
    :func:`sqlite_access` counts, up to :data:`SQLITE_FEW`, what the indexes that find rows out
    of id order hold for the search's filters, and picks: the fewest matches are read and sorted;
    if every such filter matches many, the search walks the messages newest first (through the
    primary key, or an index in id order: status, recipient, batch, tag), checks each row, and
    stops as soon as the page is full.
    """

    planned: bool = True
    """The database plans (PostgreSQL): the same statement whatever the counts."""
    start: Start | None = None
    """SQLite: the filter whose few matches the search starts from, or ``None`` for a walk."""
    window_from: int = 0
    """SQLite, with a text query not started from: the lowest rowid of the list of its matches
    each row is checked against. In a walk, a row below it (past the newest
    :data:`SQLITE_WINDOW` matches: the walk went far, or the row was stored long after its id
    was made) asks the text index itself, which costs a hundred times more."""
    ask: bool = False
    """SQLite, a search started from another filter than its text: each row asks the text index
    (the word is too common to list)."""


POSTGRES = Access()


async def sqlite_access(
    conn: AsyncConnection,
    starts: Mapping[Start, Select[Any]],
    terms: Sequence[str],
    after_id: str | None = None,
) -> Access:
    """How a SQLite search reaches its rows: ``starts`` are the queries of its filters' matches
    that come out of id order (see :func:`text_matches`), ``terms`` its text, ``after_id`` its
    cursor. A few milliseconds of capped counts."""
    # The text is counted further only when another filter may start the search: how to check
    # the text on its rows depends on it.
    text_cap = SQLITE_LISTED if len(starts) > 1 else SQLITE_FEW
    found = {
        name: await _count(conn, query.limit((text_cap if name == "text" else SQLITE_FEW) + 1))
        for name, query in starts.items()
    }
    fewest = min(found, key=lambda name: found[name], default=None)
    if fewest is not None and found[fewest] <= SQLITE_FEW:
        if fewest == "text" or not terms:
            return Access(planned=False, start=fewest)
        return Access(planned=False, start=fewest, ask=found["text"] > SQLITE_LISTED)
    if not terms:
        return Access(planned=False)
    # Rowids follow the order messages were stored in, which is their ids' order but for a
    # message stored a moment after its id was made: where the walk starts in rowids is where the
    # first message it meets is.
    below = [_match(terms)]
    if after_id is not None:
        start = select(_ROWID).where(messages.c.id < after_id).order_by(messages.c.id.desc())
        below.append(_fts.c.rowid <= ((await conn.execute(start.limit(1))).scalar_one_or_none() or 0))
    newest = select(_fts.c.rowid).where(*below).order_by(_fts.c.rowid.desc())
    edge = (await conn.execute(newest.offset(SQLITE_WINDOW).limit(1))).scalar_one_or_none()
    return Access(planned=False, window_from=int(edge or 0))


async def _count(conn: AsyncConnection, capped: Select[Any]) -> int:
    return int((await conn.execute(select(func.count()).select_from(capped.subquery()))).scalar_one())


def _match(terms: Sequence[str]) -> ColumnElement[bool]:
    return _fts.c[FTS_TABLE].match(fts5_query(terms))


def text_matches(terms: Sequence[str]) -> Select[Any]:
    """SQLite: the rowids of the messages whose text has every one of ``terms``."""
    return select(_fts.c.rowid).where(_match(terms))


def matches(dialect: str, terms: Sequence[str], access: Access) -> ColumnElement[bool]:
    """The condition on ``messages`` that its body or subject has every one of ``terms``, in the
    form ``access`` says."""
    if dialect == "postgresql":
        # The words as a literal, not a parameter: a prepared statement's generic plan would
        # assume one selectivity for every word, rare or common. They are letters, digits and
        # marks only (domain.search), and quoted by SQLAlchemy all the same.
        words = bindparam("search_words", " ".join(terms), type_=String(), literal_execute=True)
        query = func.plainto_tsquery(literal_column("'simple'::regconfig"), func.tidings_search_text(words))
        return literal_column(f"messages.{VECTOR_COLUMN}").bool_op("@@")(query)
    if access.start == "text":
        return _ROWID.in_(text_matches(terms).scalar_subquery())
    asked = exists().where(_match(terms), _fts.c.rowid == _ROWID)
    if access.ask:
        return asked
    listed = text_matches(terms).where(_fts.c.rowid >= access.window_from).scalar_subquery()
    # Unary plus: a check of each row walked, not an index to start from.
    listed_match = literal_column("+messages.rowid").in_(listed)
    if access.window_from <= 0:
        return listed_match
    in_window: ColumnElement[bool] = case((_ROWID >= access.window_from, listed_match), else_=asked)
    return in_window
