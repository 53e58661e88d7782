"""Searching messages in the store (``MessageStore.search``): the text index on each database,
every filter, and the cursor. Each test runs on SQLite (FTS5) and PostgreSQL (tsvector)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text, update

from tidings.clock import utcnow
from tidings.domain.content import EmailContent
from tidings.domain.messages import NewMessage
from tidings.domain.search import amount_micros, search_terms
from tidings.domain.status import Status
from tidings.errors import InvalidInput
from tidings.store import Store, search
from tidings.store.messages import MessageFilter, insert_many, new_row, search_query, sqlite_starts
from tidings.store.tables import messages

KENYA = "+254712345678"


async def add(
    store: Store,
    body: str,
    *,
    to: str = KENYA,
    subject: str | None = None,
    tags: tuple[str, ...] = (),
    status: Status | None = None,
    cost: str | None = None,
    currency: str | None = None,
) -> str:
    """Store one message (an email when it has a ``subject``) the way tidings does; its id.
    Each is newer than the one stored before it."""
    if subject is not None:
        new = NewMessage.email(
            to="amina@example.org",
            content=EmailContent(subject=subject, text=body),
            provider="fake",
            max_attempts=3,
            tags=list(tags),
        )
    else:
        new = NewMessage.sms(to=to, text=body, provider="fake", max_attempts=3, tags=list(tags))
    row = new_row(new, utcnow())
    async with store.transaction() as conn:
        [refused] = await insert_many(conn, [(row, new)])
        assert refused is None
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status.value
        if cost is not None:
            changes.update(cost_micros=amount_micros(cost, "cost"), currency=currency)
        if changes:
            await conn.execute(update(messages).where(messages.c.id == row["id"]).values(changes))
    return str(row["id"])


async def found(store: Store, q: str | None = None, **filters: Any) -> list[str]:
    """The ids ``search`` finds, newest first."""
    terms = search_terms(q) if q is not None else ()
    rows = await store.messages.search(MessageFilter(terms=terms, **filters), limit=500)
    return [r["id"] for r in rows]


async def check_text_index(store: Store) -> None:
    """On SQLite, FTS5's own check that its index agrees with the messages table."""
    if not store.is_postgres:
        async with store.transaction() as conn:
            await conn.execute(
                text("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
            )


# -- the text query ------------------------------------------------------------------------------


async def test_words_are_found_in_the_body_and_in_an_emails_subject(store: Store) -> None:
    sms = await add(store, "Your appointment is tomorrow at 9:00")
    email = await add(store, "Please find it attached.", subject="Invoice for March")

    assert await found(store, "appointment") == [sms]
    assert await found(store, "invoice") == [email]
    assert await found(store, "attached") == [email]
    assert await found(store, "dentist") == []


async def test_a_message_must_have_every_word_of_the_query(store: Store) -> None:
    both = await add(store, "Your appointment is tomorrow")
    await add(store, "Your appointment was cancelled")
    email = await add(store, "see you tomorrow", subject="Appointment")

    assert await found(store, "appointment tomorrow") == [email, both]
    assert await found(store, "appointment cancelled tomorrow") == []


async def test_case_and_accents_do_not_matter_either_way(store: Store) -> None:
    accented = await add(store, "Résultat disponible à Zürich")
    plain = await add(store, "Resultat disponible a Zurich")

    for q in ("resultat", "RÉSULTAT", "re\u0301sultat", "zurich ZÜRICH", "Disponible"):
        assert await found(store, q) == [plain, accented], q


async def test_other_scripts_are_found_case_insensitively(store: Store) -> None:
    russian = await add(store, "Привет, ваш приём завтра")
    greek = await add(store, "Καλημέρα σας")

    assert await found(store, "ПРИВЕТ") == [russian]
    assert await found(store, "приём завтра") == [russian]
    assert await found(store, "σας") == [greek]


async def test_punctuation_separates_words_as_in_the_query(store: Store) -> None:
    message = await add(store, "Write to amina@example.org or call +254-712 (desk: 12.5)")

    assert await found(store, "example") == [message]
    assert await found(store, "amina@example.org") == [message]
    assert await found(store, "254 712") == [message]
    assert await found(store, "desk 5") == [message]
    assert await found(store, "example.com") == []


async def test_query_syntax_in_the_text_is_read_as_words(store: Store) -> None:
    # FTS5 would read these as a phrase, operators, a prefix and a column filter.
    literal = await add(store, 'He said "near" and NOT body: or subject* AND more')
    await add(store, "near body subject")

    assert await found(store, 'said "near') == [literal]
    assert await found(store, "NOT body: more") == [literal]
    assert await found(store, "subject* AND") == [literal]
    assert await found(store, "NEAR(said more)") == [literal]


async def test_a_redacted_body_is_no_longer_found(store: Store) -> None:
    kept = await add(store, "lab result ready", status=Status.DELIVERED)
    redacted = await add(store, "lab result positive", status=Status.DELIVERED)
    async with store.transaction() as conn:
        await conn.execute(
            update(messages).where(messages.c.id == redacted).values(created_at=utcnow() - timedelta(days=90))
        )

    assert await store.retention.redact_messages(utcnow() - timedelta(days=30), now=utcnow(), batch=10) == 1

    assert await found(store, "result") == [kept]
    assert await found(store, "positive") == []
    await check_text_index(store)


async def test_a_deleted_message_is_not_found_nor_mistaken_for_the_next_one(store: Store) -> None:
    # SQLite gives a new row the rowid of the last one deleted: a stale index entry would point
    # at it.
    gone = await add(store, "alpha bravo")
    async with store.transaction() as conn:
        await conn.execute(delete(messages).where(messages.c.id == gone))
    newer = await add(store, "charlie delta")

    assert await found(store, "alpha") == []
    assert await found(store, "charlie") == [newer]
    await check_text_index(store)


async def test_changing_other_columns_leaves_the_text_index_right(store: Store) -> None:
    message = await add(store, "kesho asubuhi")
    async with store.transaction() as conn:
        await conn.execute(update(messages).where(messages.c.id == message).values(status="sent", attempts=1))

    assert await found(store, "asubuhi", statuses=(Status.SENT,)) == [message]
    await check_text_index(store)


async def test_sqlite_vacuum_keeps_the_rowids_the_text_index_refers_to(store: Store) -> None:
    if store.is_postgres:
        pytest.skip("SQLite only: PostgreSQL keeps the vector in the row")
    ids = [await add(store, f"word{n} common") for n in range(6)]
    async with store.transaction() as conn:
        await conn.execute(delete(messages).where(messages.c.id.in_(ids[:3])))
    async with store.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM")

    assert await found(store, "word4") == [ids[4]]
    assert await found(store, "common") == ids[:2:-1]
    await check_text_index(store)


async def test_the_cursor_pages_through_text_matches_without_gaps_or_repeats(store: Store) -> None:
    matching = []
    for n in range(11):
        await add(store, f"unrelated {n}")
        if n % 2 == 0:
            matching.append(await add(store, f"reminder number {n}"))
    expected = list(reversed(matching))

    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.messages.search(
            MessageFilter(terms=search_terms("reminder")), after_id=after, limit=2
        )
        if not page:
            break
        seen += [r["id"] for r in page]
        after = page[-1]["id"]

    assert seen == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.text(alphabet=st.characters(codec=None), max_size=60))
async def test_any_text_query_is_refused_or_answered_never_an_error(store: Store, q: str) -> None:
    try:
        terms = search_terms(q)
    except InvalidInput as exc:
        assert exc.field == "q"
        return
    rows = await store.messages.search(MessageFilter(terms=terms), limit=5)
    assert isinstance(rows, list)


# -- the other filters ---------------------------------------------------------------------------


async def test_tags_are_all_required(store: Store) -> None:
    a = await add(store, "one", tags=("a",))
    ab = await add(store, "two", tags=("a", "b"))
    await add(store, "three", tags=("b",))
    abc = await add(store, "four", tags=("a", "b", "c"))

    assert await found(store, tags=("a", "b")) == [abc, ab]
    assert await found(store, tags=("a",)) == [abc, ab, a]
    assert await found(store, tags=("c", "a", "b")) == [abc]
    assert await found(store, tags=("a", "z")) == []


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("+2547", ["+254722000000", "+254712345678"]),
        ("+25471", ["+254712345678"]),
        ("+2549", ["+254990000000"]),
        ("+25", ["+255712000000", "+254990000000", "+254722000000", "+254712345678"]),
        ("+9", ["+99912345678"]),
        ("+999", ["+99912345678"]),
        ("+3", []),
    ],
)
async def test_a_number_prefix_finds_exactly_the_numbers_starting_with_it(
    store: Store, prefix: str, expected: list[str]
) -> None:
    for number in ("+254712345678", "+254722000000", "+254990000000", "+255712000000", "+99912345678"):
        await add(store, "hello", to=number)
    await add(store, "an email", subject="+2547 in a subject")

    rows = await store.messages.search(MessageFilter(to_prefix=prefix))

    assert [r["to"] for r in rows] == expected


async def test_statuses_are_any_of(store: Store) -> None:
    sent = await add(store, "a", status=Status.SENT)
    failed = await add(store, "b", status=Status.FAILED)
    await add(store, "c", status=Status.DELIVERED)
    pending = await add(store, "d")

    assert await found(store, statuses=(Status.FAILED, Status.SENT)) == [failed, sent]
    assert await found(store, statuses=(Status.PENDING,)) == [pending]


async def test_the_channel_filter(store: Store) -> None:
    sms = await add(store, "text")
    email = await add(store, "mail", subject="Subject")

    assert await found(store, channel="sms") == [sms]
    assert await found(store, channel="email") == [email]


async def test_a_cost_range_is_exact_and_inclusive_at_both_ends_in_its_currency(store: Store) -> None:
    below = await add(store, "a", cost="0.007499", currency="KES")
    low = await add(store, "b", cost="0.0075", currency="KES")
    inside = await add(store, "c", cost="0.0076", currency="KES")
    high = await add(store, "d", cost="0.01", currency="KES")
    above = await add(store, "e", cost="0.010001", currency="KES")
    await add(store, "f", cost="0.008", currency="USD")
    await add(store, "g")
    window = {"cost_min": amount_micros("0.0075", "x"), "cost_max": amount_micros("0.01", "x")}

    assert await found(store, currency="KES", **window) == [high, inside, low]
    assert await found(store, currency="KES", cost_min=window["cost_max"]) == [above, high]
    assert await found(store, currency="KES", cost_max=window["cost_min"]) == [low, below]
    assert len(await found(store, currency="USD")) == 1


def test_a_cost_bound_without_its_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="currency"):
        MessageFilter(cost_min=1)


async def test_filters_combine(store: Store) -> None:
    wanted = await add(store, "clinic reminder", tags=("anc",), status=Status.DELIVERED, to="+254712000001")
    await add(store, "clinic reminder", tags=("anc",), status=Status.FAILED, to="+254712000002")
    await add(store, "clinic reminder", status=Status.DELIVERED, to="+254712000003")
    await add(store, "clinic reminder", tags=("anc",), status=Status.DELIVERED, to="+255712000004")
    await add(store, "clinic closed", tags=("anc",), status=Status.DELIVERED, to="+254712000005")

    assert await found(store, "reminder", statuses=(Status.DELIVERED,), tags=("anc",), to_prefix="+2547") == [
        wanted
    ]


# -- how SQLite reaches the rows -----------------------------------------------------------------

SQLITE_ACCESSES = [
    search.Access(planned=False, start=start, window_from=window_from, ask=ask)
    for start in (None, "text", "to_prefix", "created", "cost")
    # All rows in the list of matches; the older half asking the index; every row asking it.
    for window_from in (0, 12, 1000)
    for ask in (False, True)
]


async def sqlite_access(store: Store, q: str | None = None, **filters: Any) -> search.Access:
    wanted = MessageFilter(terms=search_terms(q) if q else (), **filters)
    async with store.engine.connect() as conn:
        return await search.sqlite_access(conn, sqlite_starts(wanted), wanted.terms)


async def test_sqlite_counts_decide_where_a_search_starts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.is_postgres:
        pytest.skip("SQLite only: PostgreSQL plans from its own statistics")
    monkeypatch.setattr(search, "SQLITE_FEW", 2)
    monkeypatch.setattr(search, "SQLITE_LISTED", 4)
    monkeypatch.setattr(search, "SQLITE_WINDOW", 2)
    ids = []
    for n in range(6):
        words = ["common", *(["rare"] if n < 1 else [])]
        ids.append(await add(store, " ".join(words), to=f"+25471234567{n}" if n < 2 else f"+25571234567{n}"))
    async with store.engine.connect() as conn:
        rowids = {str(r.id): int(r.rowid) for r in await conn.execute(text("SELECT id, rowid FROM messages"))}

    assert (await sqlite_access(store, "rare")).start == "text"
    assert (await sqlite_access(store, "rare", to_prefix="+2547")).start == "text"
    assert (await sqlite_access(store, to_prefix="+2547")).start == "to_prefix"
    assert (await sqlite_access(store, provider="nobody")).start == "provider"
    assert (await sqlite_access(store, currency="KES", cost_min=1)).start == "cost"
    assert (await sqlite_access(store, to_prefix="+255", provider="fake")).start is None
    # Started from the number range, the common word is asked row by row: too many to list.
    assert (await sqlite_access(store, "common", to_prefix="+2547")).ask
    monkeypatch.setattr(search, "SQLITE_LISTED", 6)
    assert not (await sqlite_access(store, "common", to_prefix="+2547")).ask

    # A walk through the common word lists its two newest matches and the one below: rows 6 to 4.
    walk = await sqlite_access(store, "common")
    assert (walk.start, walk.window_from) == (None, rowids[ids[3]])
    async with store.engine.connect() as conn:
        starts = sqlite_starts(MessageFilter(terms=("common",)))
        # From the second page on, the list starts below where the walk does.
        paged = await search.sqlite_access(conn, starts, ("common",), after_id=ids[4])
        assert paged.window_from == rowids[ids[1]]
        assert (await search.sqlite_access(conn, starts, ("common",), after_id=ids[1])).window_from == 0


@pytest.mark.parametrize(
    ("q", "filters"),
    [
        ("reminder", {}),
        ("reminder clinic", {"statuses": (Status.DELIVERED, Status.FAILED)}),
        ("reminder", {"to_prefix": "+2547"}),
        ("reminder", {"tags": ("anc",)}),
        (None, {"tags": ("anc", "vip")}),
        (None, {"to_prefix": "+2547", "tags": ("anc",)}),
        ("clinic", {"tags": ("vip",), "to_prefix": "+255"}),
        ("payment", {"provider": "fake", "created_after": datetime(2000, 1, 1)}),
        (None, {"statuses": (Status.FAILED,), "created_before": datetime(2100, 1, 1)}),
        (None, {"tags": ("vip",), "statuses": (Status.DELIVERED, Status.SENT)}),
        ("payment", {"to": "+255712340000", "tags": ("vip",)}),
    ],
)
async def test_every_way_sqlite_can_reach_the_rows_finds_the_same_pages(
    store: Store, q: str | None, filters: dict[str, Any]
) -> None:
    if store.is_postgres:
        pytest.skip("SQLite only: one statement on PostgreSQL")
    stored: list[tuple[str, set[str], str, set[str], Status]] = []
    for n in range(24):
        words = {"reminder"} if n % 2 else {"payment"}
        if n % 3 == 0:
            words.add("clinic")
        to = ("+25471234" if n % 4 else "+25571234") + f"{n:04d}"
        tags = {"anc"} if n % 3 else {"vip"}
        if n % 5 == 0:
            tags |= {"anc", "vip"}
        status = (Status.DELIVERED, Status.FAILED, Status.SENT)[n % 3]
        message = await add(store, " ".join(sorted(words)), to=to, tags=tuple(sorted(tags)), status=status)
        stored.append((message, words, to, tags, status))
    wanted = MessageFilter(terms=search_terms(q) if q else (), **filters)
    expected = [
        message
        for message, words, to, tags, status in reversed(stored)
        if set(wanted.terms) <= words
        and set(wanted.tags) <= tags
        and (not wanted.statuses or status in wanted.statuses)
        and (wanted.to_prefix is None or to.startswith(wanted.to_prefix))
        and (wanted.to is None or to == wanted.to)
    ]
    assert expected, "the case must find something"

    for access in SQLITE_ACCESSES:
        pages: list[str] = []
        after: str | None = None
        while True:
            query = search_query("sqlite", wanted, access=access, after_id=after, limit=3)
            async with store.engine.connect() as conn:
                page = [str(r.id) for r in await conn.execute(query)]
            pages += page
            if len(page) < 3:
                break
            after = page[-1]
        assert pages == expected, access
