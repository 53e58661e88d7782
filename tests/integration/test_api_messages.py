"""The messages API as a client uses it: send, read back, list, page, cancel, idempotency.

Every test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from sqlalchemy import update

from tidings import ids
from tidings.store import Store
from tidings.store.messages import MessageFilter
from tidings.store.tables import messages

KENYA = "+254712345678"
KENYA_SPACED = "+254 712 345 678"
US = "+14155550123"


async def send(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """POST a message and return the accepted message, checking it was a 202."""
    payload = {"to": KENYA, "body": "hello", **fields}
    response = await client.post("/v1/messages", json=payload)
    assert response.status_code == 202, response.text
    message: dict[str, Any] = response.json()
    return message


async def stored_count(store: Store) -> int:
    return len(await store.messages.search(MessageFilter(), limit=1000))


def iso(value: datetime) -> str:
    return value.isoformat()


# -- sending -------------------------------------------------------------------------------------


async def test_send_answers_202_with_a_pending_message_whose_number_is_normalised_to_e164(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/messages", json={"to": "+254 (712) 345-678", "body": "Hello there"})

    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()
    assert ids.is_id(message["id"])
    assert message["status"] == "pending"
    assert message["to"] == KENYA
    assert message["body"] == "Hello there"
    assert message["channel"] == "sms"
    assert message["provider"] == "fake"
    assert message["segments"] == 1
    assert message["encoding"] == "GSM-7"
    assert message["attempts"] == 0
    assert message["send_at"] is None
    assert message["created_at"].endswith("Z")
    assert message["tags"] == []
    assert message["metadata"] == {}
    for hidden in ("api_key_id", "idempotency_key", "request_hash", "lease_owner", "lease_expires_at"):
        assert hidden not in message


async def test_send_counts_a_161_character_gsm_text_as_two_gsm7_segments(client: httpx.AsyncClient) -> None:
    message = await send(client, body="a" * 161)

    assert message["segments"] == 2
    assert message["encoding"] == "GSM-7"


async def test_send_encodes_a_text_with_an_emoji_as_ucs2(client: httpx.AsyncClient) -> None:
    message = await send(client, body="See you soon 👋")

    assert message["encoding"] == "UCS-2"
    assert message["segments"] == 1


async def test_send_commits_the_message_before_answering(client: httpx.AsyncClient, store: Store) -> None:
    message = await send(client, body="stored?", tags=["promo", "promo", "eu"], metadata={"order": 42})

    # ``store`` has its own engine: it only sees what the API committed.
    row = await store.messages.get(message["id"])
    assert row is not None
    assert row["status"] == "pending"
    assert row["to"] == KENYA
    assert row["body"] == "stored?"
    assert row["tags"] == ["promo", "eu"]
    assert row["metadata"] == {"order": 42}
    assert row["api_key_id"] is not None
    events = await store.messages.events(message["id"])
    assert [e["type"] for e in events] == ["accepted"]


async def test_get_message_returns_it_with_its_accepted_event(client: httpx.AsyncClient) -> None:
    sent = await send(client, sender="Tidings", tags=["welcome"])

    response = await client.get(f"/v1/messages/{sent['id']}")

    assert response.status_code == 200
    message = response.json()
    assert {k: v for k, v in message.items() if k != "events"} == sent
    assert message["sender"] == "Tidings"
    assert len(message["events"]) == 1
    event = message["events"][0]
    assert event["type"] == "accepted"
    assert event["status"] == "pending"
    assert event["source"] == "api"
    assert event["changed"] is True
    assert event["occurred_at"].endswith("Z")


# -- scheduling ----------------------------------------------------------------------------------


async def test_send_at_in_the_future_makes_the_message_scheduled(client: httpx.AsyncClient) -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)

    message = await send(client, send_at=iso(when))

    assert message["status"] == "scheduled"
    assert message["send_at"] == when.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    got = (await client.get(f"/v1/messages/{message['id']}")).json()
    assert got["status"] == "scheduled"
    assert got["events"][0]["status"] == "scheduled"


async def test_send_at_in_the_past_makes_the_message_pending(client: httpx.AsyncClient) -> None:
    when = datetime.now(UTC) - timedelta(minutes=5)

    message = await send(client, send_at=iso(when))

    assert message["status"] == "pending"


async def test_send_at_with_an_offset_is_converted_to_utc(client: httpx.AsyncClient) -> None:
    message = await send(client, send_at="2099-06-01T12:00:00+03:00")

    assert message["status"] == "scheduled"
    assert message["send_at"] == "2099-06-01T09:00:00.000Z"


async def test_send_at_without_an_offset_is_read_as_utc(client: httpx.AsyncClient) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None, microsecond=0)
    past = (datetime.now(UTC) - timedelta(minutes=10)).replace(tzinfo=None, microsecond=0)

    later = await send(client, send_at=future.isoformat())
    earlier = await send(client, send_at=past.isoformat())

    assert later["status"] == "scheduled"
    assert later["send_at"] == future.isoformat(timespec="milliseconds") + "Z"
    assert earlier["status"] == "pending"
    assert earlier["send_at"] == past.isoformat(timespec="milliseconds") + "Z"


# -- idempotency ---------------------------------------------------------------------------------


async def test_same_idempotency_key_and_body_returns_the_first_message_with_200_and_stores_one(
    client: httpx.AsyncClient, store: Store
) -> None:
    payload = {"to": KENYA, "body": "only once", "tags": ["a"]}
    headers = {"Idempotency-Key": "order-1234"}

    first = await client.post("/v1/messages", json=payload, headers=headers)
    again = await client.post("/v1/messages", json=payload, headers=headers)

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json() == first.json()
    assert await stored_count(store) == 1


async def test_idempotency_key_replay_ignores_the_order_of_json_fields(
    client: httpx.AsyncClient, store: Store
) -> None:
    headers = {"Idempotency-Key": "k-order", "Content-Type": "application/json"}
    first = await client.post(
        "/v1/messages", content=b'{"to": "+254712345678", "body": "hi"}', headers=headers
    )
    again = await client.post(
        "/v1/messages", content=b'{"body": "hi", "to": "+254712345678"}', headers=headers
    )

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert await stored_count(store) == 1


async def test_same_idempotency_key_with_a_different_body_is_a_409_conflict(
    client: httpx.AsyncClient, store: Store
) -> None:
    headers = {"Idempotency-Key": "order-1234"}
    first = await client.post("/v1/messages", json={"to": KENYA, "body": "one"}, headers=headers)

    other = await client.post("/v1/messages", json={"to": KENYA, "body": "two"}, headers=headers)

    assert first.status_code == 202
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert other.json()["error"]["message"]
    assert await stored_count(store) == 1
    row = await store.messages.get(first.json()["id"])
    assert row is not None and row["body"] == "one"


async def test_same_idempotency_key_from_another_api_key_is_a_separate_message(
    client: httpx.AsyncClient, store: Store
) -> None:
    _other_key, other_secret = await store.keys.create("other client")
    payload = {"to": KENYA, "body": "same words"}
    headers = {"Idempotency-Key": "shared-key"}

    mine = await client.post("/v1/messages", json=payload, headers=headers)
    theirs = await client.post(
        "/v1/messages",
        json=payload,
        headers={**headers, "Authorization": f"Bearer {other_secret}"},
    )

    assert mine.status_code == 202
    assert theirs.status_code == 202
    assert theirs.json()["id"] != mine.json()["id"]
    assert await stored_count(store) == 2


async def test_concurrent_requests_with_one_idempotency_key_store_one_message(
    client: httpx.AsyncClient, store: Store
) -> None:
    payload = {"to": KENYA, "body": "raced"}
    headers = {"Idempotency-Key": "raced-key"}

    results = await asyncio.gather(
        *(client.post("/v1/messages", json=payload, headers=headers) for _ in range(5)),
        return_exceptions=True,
    )

    responses = [r for r in results if isinstance(r, httpx.Response)]
    assert len(responses) == 5, results
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await stored_count(store) == 1


# -- listing -------------------------------------------------------------------------------------


async def list_ids(
    client: httpx.AsyncClient, params: list[tuple[str, str]] | None = None, **named: Any
) -> list[str]:
    """The ids ``GET /v1/messages`` lists; ``params`` for a parameter given more than once."""
    response = await client.get("/v1/messages", params=params if params is not None else named)
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["data"]]


async def test_list_filters_by_status(client: httpx.AsyncClient) -> None:
    pending = await send(client)
    scheduled = await send(client, send_at="2099-01-01T00:00:00Z")
    cancelled = await send(client)
    assert (await client.post(f"/v1/messages/{cancelled['id']}/cancel")).status_code == 200

    assert await list_ids(client, status="scheduled") == [scheduled["id"]]
    assert await list_ids(client, status="pending") == [pending["id"]]
    assert await list_ids(client, status="cancelled") == [cancelled["id"]]
    assert await list_ids(client, status="delivered") == []


async def test_list_filters_by_recipient_written_in_any_equivalent_format(client: httpx.AsyncClient) -> None:
    kenya = await send(client, to=KENYA)
    await send(client, to=US)

    assert await list_ids(client, to=KENYA_SPACED) == [kenya["id"]]
    assert await list_ids(client, to="tel:+254-712-345-678") == [kenya["id"]]
    assert await list_ids(client, to=KENYA) == [kenya["id"]]


async def test_list_filters_by_tag(client: httpx.AsyncClient) -> None:
    both = await send(client, tags=["promo", "eu"])
    promo = await send(client, tags=["promo"])
    await send(client)

    assert await list_ids(client, tag="eu") == [both["id"]]
    assert sorted(await list_ids(client, tag="promo")) == sorted([both["id"], promo["id"]])
    assert await list_ids(client, tag="nothing") == []


async def test_list_filters_by_creation_time_window(client: httpx.AsyncClient) -> None:
    before = await send(client, body="before")
    await asyncio.sleep(0.02)
    boundary = datetime.now(UTC)
    await asyncio.sleep(0.02)
    after = await send(client, body="after")
    # The same instant written in another time zone.
    boundary_nairobi = iso(boundary.astimezone(timezone(timedelta(hours=3))))

    assert await list_ids(client, created_after=iso(boundary)) == [after["id"]]
    assert await list_ids(client, created_before=iso(boundary)) == [before["id"]]
    assert await list_ids(client, created_after=boundary_nairobi) == [after["id"]]
    assert await list_ids(client, created_before=boundary_nairobi) == [before["id"]]
    assert await list_ids(
        client,
        created_after=iso(boundary - timedelta(hours=1)),
        created_before=iso(boundary + timedelta(hours=1)),
    ) == [after["id"], before["id"]]


async def test_list_pages_newest_first_through_cursors_without_gaps_or_duplicates(
    client: httpx.AsyncClient,
) -> None:
    created = []
    for n in range(7):
        created.append((await send(client, body=f"message {n}"))["id"])
        await asyncio.sleep(0.003)  # distinct milliseconds, so id order is creation order
    newest_first = list(reversed(created))

    pages: list[list[dict[str, Any]]] = []
    cursors: list[str | None] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        response = await client.get("/v1/messages", params=params)
        assert response.status_code == 200
        page = response.json()
        pages.append(page["data"])
        cursors.append(page["next_cursor"])
        if page["next_cursor"] is None:
            break
        params = {"limit": 3, "cursor": page["next_cursor"]}
        assert len(pages) < 10, "pagination does not end"

    assert [len(p) for p in pages] == [3, 3, 1]
    assert cursors[-1] is None
    assert all(c is not None for c in cursors[:-1])
    listed = [m["id"] for page in pages for m in page]
    assert listed == newest_first
    assert len(set(listed)) == 7
    assert [m["body"] for m in pages[0]] == ["message 6", "message 5", "message 4"]


async def test_list_last_page_of_exact_size_has_no_next_cursor(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await send(client)

    response = await client.get("/v1/messages", params={"limit": 3})

    assert response.status_code == 200
    assert len(response.json()["data"]) == 3
    assert response.json()["next_cursor"] is None


# -- searching -----------------------------------------------------------------------------------


async def test_list_finds_messages_by_words_of_their_text(client: httpx.AsyncClient) -> None:
    resultat = await send(client, body="Votre résultat est disponible")
    await send(client, body="Your appointment is tomorrow")

    assert await list_ids(client, q="RESULTAT disponible") == [resultat["id"]]
    assert await list_ids(client, q="résultat tomorrow") == []


async def test_list_takes_several_statuses_and_still_one(client: httpx.AsyncClient) -> None:
    pending = await send(client, body="reminder one")
    scheduled = await send(client, body="reminder two", send_at="2099-01-01T00:00:00Z")
    cancelled = await send(client, body="reminder three")
    assert (await client.post(f"/v1/messages/{cancelled['id']}/cancel")).status_code == 200

    both = await list_ids(client, params=[("status", "pending"), ("status", "scheduled")])
    assert both == [scheduled["id"], pending["id"]]
    assert await list_ids(client, status="cancelled") == [cancelled["id"]]
    text_and_status = [("q", "reminder"), ("status", "cancelled"), ("status", "pending")]
    assert await list_ids(client, params=text_and_status) == [cancelled["id"], pending["id"]]


async def test_list_requires_every_tag_given(client: httpx.AsyncClient) -> None:
    both = await send(client, tags=["promo", "eu"])
    await send(client, tags=["promo"])
    await send(client, tags=["eu"])

    assert await list_ids(client, params=[("tag", "promo"), ("tag", "eu")]) == [both["id"]]


async def test_list_filters_by_number_prefix_and_channel(client: httpx.AsyncClient) -> None:
    kenya = await send(client, to=KENYA)
    await send(client, to=US)
    email_fields = {"channel": "email", "to": "amina@example.org", "subject": "Hi", "text": "hello"}
    response = await client.post("/v1/messages", json=email_fields)
    assert response.status_code == 202, response.text
    email = response.json()

    assert await list_ids(client, to_prefix="+2547") == [kenya["id"]]
    assert await list_ids(client, to_prefix="+254", channel="sms") == [kenya["id"]]
    assert await list_ids(client, channel="email") == [email["id"]]


async def test_list_filters_by_cost_and_shows_it_as_an_exact_decimal(
    client: httpx.AsyncClient, store: Store
) -> None:
    cheap = await send(client, body="a")
    dear = await send(client, body="b")
    unpriced = await send(client, body="c")
    async with store.transaction() as conn:
        for message, micros in ((cheap, 7500), (dear, 120_000)):
            await conn.execute(
                update(messages)
                .where(messages.c.id == message["id"])
                .values(cost_micros=micros, currency="KES")
            )

    response = await client.get("/v1/messages", params={"currency": "kes", "cost_max": "0.0075"})

    assert response.status_code == 200, response.text
    [row] = response.json()["data"]
    assert (row["id"], row["cost"], row["currency"]) == (cheap["id"], "0.0075", "KES")
    assert "cost_micros" not in row
    assert await list_ids(client, currency="KES", cost_min="0.0075", cost_max="0.12") == [
        dear["id"],
        cheap["id"],
    ]
    assert await list_ids(client, currency="KES", cost_min="0.120001") == []
    assert (await client.get(f"/v1/messages/{unpriced['id']}")).json()["cost"] is None


async def test_list_pages_through_a_text_search_with_the_cursor(client: httpx.AsyncClient) -> None:
    matching = []
    for n in range(5):
        await send(client, body=f"other {n}")
        matching.append((await send(client, body=f"kesho asubuhi {n}"))["id"])
        await asyncio.sleep(0.003)

    listed: list[str] = []
    params: dict[str, Any] = {"q": "asubuhi", "limit": 2}
    for _ in range(5):
        page = (await client.get("/v1/messages", params=params)).json()
        listed += [m["id"] for m in page["data"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert listed == list(reversed(matching))


# -- cancelling ----------------------------------------------------------------------------------


async def test_cancel_a_pending_message_answers_200_cancelled_and_records_an_event(
    client: httpx.AsyncClient, store: Store
) -> None:
    message = await send(client)

    response = await client.post(f"/v1/messages/{message['id']}/cancel")

    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["id"] == message["id"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] is not None and cancelled["cancelled_at"].endswith("Z")
    assert cancelled["next_attempt_at"] is None
    got = (await client.get(f"/v1/messages/{message['id']}")).json()
    assert got["status"] == "cancelled"
    assert [e["type"] for e in got["events"]] == ["accepted", "cancelled"]
    assert got["events"][-1]["status"] == "cancelled"
    row = await store.messages.get(message["id"])
    assert row is not None and row["status"] == "cancelled"


async def test_cancel_a_scheduled_message_succeeds(client: httpx.AsyncClient) -> None:
    message = await send(client, send_at="2099-01-01T00:00:00Z")

    response = await client.post(f"/v1/messages/{message['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


async def test_cancel_a_message_already_sending_is_409_not_cancellable_and_changes_nothing(
    client: httpx.AsyncClient, store: Store
) -> None:
    message = await send(client)
    claimed = await store.queue.claim("fake", worker="w", limit=10, lease_seconds=60)
    assert [c.id for c in claimed] == [message["id"]]

    response = await client.post(f"/v1/messages/{message['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_cancellable"
    assert "sending" in response.json()["error"]["message"]
    got = (await client.get(f"/v1/messages/{message['id']}")).json()
    assert got["status"] == "sending"
    assert got["cancelled_at"] is None
    assert "cancelled" not in [e["type"] for e in got["events"]]


async def test_cancel_twice_is_409_not_cancellable(client: httpx.AsyncClient) -> None:
    message = await send(client)
    assert (await client.post(f"/v1/messages/{message['id']}/cancel")).status_code == 200

    again = await client.post(f"/v1/messages/{message['id']}/cancel")

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "not_cancellable"


async def test_cancel_an_unknown_message_is_404_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v1/messages/{ids.new_id()}/cancel")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
