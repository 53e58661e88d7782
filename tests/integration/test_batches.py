"""Batches as a client uses them: one request, many recipients, in JSON or MessagePack; refusals
by index; whole-or-nothing; idempotent by group id; progress and cancellation; signed requests.

Every test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from tests.conftest import make_settings
from tests.live import eventually
from tidings import ids, signatures
from tidings.api.app import create_app
from tidings.domain.batches import BatchIn, RecipientIn
from tidings.domain.templates import compile_template
from tidings.errors import NotFound
from tidings.services import Service
from tidings.store import Store
from tidings.store.batches import BatchFilter
from tidings.store.messages import MessageFilter
from tidings.store.tables import batches, messages

KENYA = "+254712345678"
NUMBERS = [f"+2547123456{i:02d}" for i in range(100)]
TEMPLATE = "Hello {{ first_name }}, your visit at {{ clinic }} is on {{ day }}."


def batch(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "group_id": "reminders-1",
        "template": TEMPLATE,
        "context": {"clinic": "Kibera", "day": "Friday"},
        "recipients": [
            {"to": NUMBERS[0], "first_name": "Amina"},
            {"to": NUMBERS[1], "first_name": "Otieno", "context": {"day": "Saturday"}},
            {"to": NUMBERS[2], "first_name": "Wanjiru", "tags": ["p-3"], "metadata": {"patient": 3}},
        ],
    }
    payload.update(fields)
    return payload


async def post(api: httpx.AsyncClient, payload: dict[str, Any], expected: int = 202) -> dict[str, Any]:
    response = await api.post("/v1/batches", json=payload)
    assert response.status_code == expected, response.text
    body: dict[str, Any] = response.json()
    return body


async def batch_messages(api: httpx.AsyncClient, batch_id: str) -> list[dict[str, Any]]:
    response = await api.get("/v1/messages", params={"batch": batch_id, "limit": 500})
    assert response.status_code == 200, response.text
    return sorted(response.json()["data"], key=lambda m: str(m["id"]))


async def counts(store: Store) -> tuple[int, int]:
    """Messages and batches stored."""
    async with store.engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
        kept = (await conn.execute(select(func.count()).select_from(batches))).scalar_one()
    return int(stored), int(kept)


# -- accepting -----------------------------------------------------------------------------------


async def test_each_recipient_becomes_a_message_rendered_with_the_shared_context_and_its_own(
    api: httpx.AsyncClient,
) -> None:
    answer = await post(api, batch(tags=["reminders"], metadata={"clinic": 42}, sender="CLINIC"))

    assert answer["accepted"] == 3
    assert answer["total"] == 3
    assert answer["refused"] == []
    assert answer["group_id"] == "reminders-1"
    sent = await batch_messages(api, answer["id"])
    assert [m["body"] for m in sent] == [
        "Hello Amina, your visit at Kibera is on Friday.",
        "Hello Otieno, your visit at Kibera is on Saturday.",
        "Hello Wanjiru, your visit at Kibera is on Friday.",
    ]
    assert [m["to"] for m in sent] == NUMBERS[:3]
    assert {m["batch_id"] for m in sent} == {answer["id"]}
    assert all(m["status"] == "pending" and m["sender"] == "CLINIC" for m in sent)
    assert sent[0]["tags"] == ["reminders"]
    assert sent[2]["tags"] == ["reminders", "p-3"]
    assert sent[0]["metadata"] == {"clinic": 42}
    assert sent[2]["metadata"] == {"clinic": 42, "patient": 3}
    assert sent[0]["template_id"] is None
    # Each is an ordinary message: its history starts with being accepted.
    history = (await api.get(f"/v1/messages/{sent[0]['id']}")).json()["events"]
    assert [e["type"] for e in history] == ["accepted"]


async def test_a_template_sees_to_first_and_last_name_and_a_recipient_can_be_scheduled_later(
    api: httpx.AsyncClient,
) -> None:
    payload = batch(
        template="{{ first_name }} {{ last_name }} <{{ to }}>",
        recipients=[
            {"to": "+254 712 345 600", "first_name": "Amina", "last_name": "Mohamed"},
            {
                "to": NUMBERS[1],
                "first_name": "Otieno",
                "last_name": "Odhiambo",
                "send_at": "2099-01-01T08:00:00Z",
            },
        ],
    )
    answer = await post(api, payload)

    sent = await batch_messages(api, answer["id"])
    assert [m["body"] for m in sent] == ["Amina Mohamed <+254712345600>", f"Otieno Odhiambo <{NUMBERS[1]}>"]
    assert [m["status"] for m in sent] == ["pending", "scheduled"]
    assert sent[1]["send_at"] == "2099-01-01T08:00:00.000Z"


async def test_recipients_that_cannot_be_accepted_are_listed_by_index_with_a_single_sends_code(
    api: httpx.AsyncClient, service: Service
) -> None:
    opted = await api.post("/v1/opt-outs", json={"number": NUMBERS[3]})
    assert opted.status_code == 201, opted.text
    payload = batch(
        template="{{ greeting }} {{ first_name }}",
        context={"greeting": "Hi"},
        recipients=[
            {"to": NUMBERS[0], "first_name": "Amina"},
            {"to": "12345", "first_name": "Bad number"},
            {"to": NUMBERS[2]},
            {"to": NUMBERS[3], "first_name": "Opted out"},
            {"to": NUMBERS[4], "first_name": "x" * 200, "context": {"greeting": "y" * 1500}},
            {"to": NUMBERS[5], "first_name": "Otieno"},
        ],
    )
    answer = await post(api, payload)

    assert answer["accepted"] == 2
    assert [(r["index"], r["code"]) for r in answer["refused"]] == [
        (1, "invalid_phone_number"),
        (2, "render_failed"),
        (3, "recipient_opted_out"),
        (4, "body_too_long"),
    ]
    assert "first_name" in answer["refused"][1]["message"]
    sent = await batch_messages(api, answer["id"])
    assert [m["to"] for m in sent] == [NUMBERS[0], NUMBERS[5]]


async def test_a_batch_whose_every_recipient_is_refused_is_a_422_that_writes_nothing_nor_burns_its_id(
    api: httpx.AsyncClient, service: Service
) -> None:
    refused = await api.post("/v1/batches", json=batch(recipients=[{"to": "nope"}, {"to": NUMBERS[0]}]))

    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "batch_refused"
    assert "recipient 0: invalid_phone_number" in error["message"]
    assert "recipient 1: render_failed" in error["message"]
    assert await counts(service.store) == (0, 0)
    # The group id is free for the corrected batch.
    answer = await post(api, batch())
    assert answer["accepted"] == 3


async def test_a_template_that_does_not_compile_is_a_422_naming_it_and_nothing_is_written(
    api: httpx.AsyncClient, service: Service
) -> None:
    response = await api.post("/v1/batches", json=batch(template="Hello {{ first_name "))

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_template"
    assert response.json()["error"]["field"] == "template"
    assert await counts(service.store) == (0, 0)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"template": None}, "invalid_input", "template"),
        ({"template_id": "01J9ZKX4N6P8R0T2V4X6Z8B0D2"}, "invalid_input", "template"),
        ({"recipients": []}, "validation_error", "recipients"),
        ({"recipients": [{"to": KENYA, "unknown": 1}]}, "validation_error", "recipients.0.unknown"),
        ({"provider": "nowhere"}, "invalid_input", "provider"),
        ({"callback_url": "http://169.254.169.254/latest"}, "callback_url_not_allowed", "callback_url"),
        ({"channel": "email"}, "invalid_input", "subject_template"),
        ({"tags": [""]}, "invalid_input", "tags"),
        ({"send_at": 0}, "validation_error", "send_at"),
    ],
)
async def test_a_wrong_shared_field_is_a_422_naming_it(
    api: httpx.AsyncClient, service: Service, change: dict[str, Any], code: str, field: str
) -> None:
    response = await api.post("/v1/batches", json=batch(**change))

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert await counts(service.store) == (0, 0)


async def test_messagepack_and_json_carry_the_same_batch(api: httpx.AsyncClient) -> None:
    payload = batch()
    response = await api.post(
        "/v1/batches", content=msgpack.packb(payload), headers={"Content-Type": "application/msgpack"}
    )
    assert response.status_code == 202, response.text
    first = response.json()

    # The same batch in JSON is a repeat of it.
    again = await post(api, payload, expected=200)
    assert again == first
    sent = await batch_messages(api, first["id"])
    assert sent[1]["body"] == "Hello Otieno, your visit at Kibera is on Saturday."


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "bad_request"),
        (b"\xc1", "application/msgpack", 400, "bad_request"),
        (msgpack.packb([1, 2]), "application/msgpack", 400, "bad_request"),
        (b"[]", "application/json", 400, "bad_request"),
        (b"group_id=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (msgpack.packb({"group_id": b"\x00bytes"}), "application/msgpack", 422, "validation_error"),
    ],
)
async def test_a_body_that_cannot_be_read_is_refused_with_its_code(
    api: httpx.AsyncClient, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = await api.post("/v1/batches", content=content, headers={"Content-Type": content_type})

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# -- idempotency ---------------------------------------------------------------------------------


async def test_the_same_batch_again_answers_200_with_the_first_result_and_sends_nothing_twice(
    api: httpx.AsyncClient, service: Service
) -> None:
    payload = batch(recipients=[*batch()["recipients"], {"to": "bad"}])
    first = await post(api, payload)
    # Keys in another order are the same batch.
    again = await post(api, dict(reversed(list(payload.items()))), expected=200)

    assert again == first
    assert again["refused"][0]["code"] == "invalid_phone_number"
    assert await counts(service.store) == (3, 1)


async def test_another_batch_under_a_used_group_id_is_a_409_but_another_key_may_use_it(
    api: httpx.AsyncClient, service: Service
) -> None:
    await post(api, batch())
    conflict = await api.post("/v1/batches", json=batch(context={"clinic": "Other", "day": "Monday"}))
    assert conflict.status_code == 409
    assert conflict.json()["error"] == {
        "code": "idempotency_conflict",
        "message": "group_id 'reminders-1' was used for a different batch",
        "field": "group_id",
    }

    _key, other = await service.store.keys.create("other application")
    response = await api.post("/v1/batches", json=batch(), headers={"Authorization": f"Bearer {other}"})
    assert response.status_code == 202
    assert await counts(service.store) == (6, 2)


async def test_two_identical_batches_at_once_store_one(api: httpx.AsyncClient, service: Service) -> None:
    answers = await asyncio.gather(*(api.post("/v1/batches", json=batch()) for _ in range(4)))

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 202]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await counts(service.store) == (3, 1)


# -- limits --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def client_with(database_url: str, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Service]]:
    service = Service(make_settings(database_url, **settings), store=Store.connect(database_url))
    await service.start()
    _key, secret = await service.store.keys.create("limits")
    transport = httpx.ASGITransport(app=create_app(service), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tidings.test", headers={"Authorization": f"Bearer {secret}"}
        ) as client:
            yield client, service
    finally:
        await service.close()


async def test_recipients_and_bytes_have_configurable_limits(store: Store, database_url: str) -> None:
    async with client_with(database_url, max_batch_recipients=2, max_batch_bytes=4096) as (api, service):
        too_many = await api.post("/v1/batches", json=batch())
        assert too_many.status_code == 422
        assert too_many.json()["error"]["code"] == "too_many_recipients"

        too_large = await api.post("/v1/batches", json=batch(context={"filler": "x" * 5000}))
        assert too_large.status_code == 413
        assert too_large.json()["error"]["code"] == "payload_too_large"
        assert await counts(service.store) == (0, 0)


async def test_a_batch_may_be_larger_than_other_requests(store: Store, database_url: str) -> None:
    async with client_with(database_url, max_request_bytes=2048) as (api, _service):
        large = batch(
            template="{{ first_name }}",
            recipients=[{"to": n, "first_name": f"Recipient {i}"} for i, n in enumerate(NUMBERS)],
        )
        assert len(orjson.dumps(large)) > 2048
        answer = await post(api, large)
        assert answer["accepted"] == 100
        single = await api.post("/v1/messages", json={"to": KENYA, "body": "x" * 3000})
        assert single.status_code == 413


# -- atomicity -----------------------------------------------------------------------------------


async def _fail_inserts_to(store: Store, number: str) -> None:
    """A trigger that makes the database refuse a message to ``number``: an error in the middle
    of a batch's transaction, after earlier chunks were written."""
    async with store.engine.begin() as conn:
        if store.is_postgres:
            await conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.\"to\" = '{number}' THEN RAISE EXCEPTION 'disk on fire'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON messages "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_one()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON messages "
                    f"WHEN NEW.\"to\" = '{number}' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                )
            )


async def _drop_trigger(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER refuse_one" + (" ON messages" if store.is_postgres else "")))
        if store.is_postgres:
            await conn.execute(text("DROP FUNCTION refuse_one()"))


async def test_a_database_error_in_the_middle_of_a_batch_leaves_no_message_and_no_batch(
    api: httpx.AsyncClient, service: Service
) -> None:
    recipients = [{"to": f"+2547{i:08d}", "first_name": "P"} for i in range(5000)]
    last = "+254700004999"
    await _fail_inserts_to(service.store, last)
    try:
        response = await api.post(
            "/v1/batches", json=batch(template="{{ first_name }}", recipients=recipients)
        )
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        assert await counts(service.store) == (0, 0)
    finally:
        await _drop_trigger(service.store)
    # Nothing was burnt: the batch goes through once the database takes it.
    answer = await post(api, batch(template="{{ first_name }}", recipients=recipients))
    assert answer["accepted"] == 5000
    assert await counts(service.store) == (5000, 1)


# -- groups --------------------------------------------------------------------------------------


async def test_a_batch_tells_how_it_is_getting_on_until_every_message_is_final(
    api: httpx.AsyncClient, service: Service
) -> None:
    payload = batch(
        recipients=[
            {"to": NUMBERS[0], "first_name": "A"},
            {"to": NUMBERS[1], "first_name": "B"},
            # The fake provider refuses this number for good.
            {"to": "+12025550101", "first_name": "C"},
            {"to": "nope", "first_name": "D"},
        ],
        tags=["reminders"],
    )
    answer = await post(api, payload)
    before = (await api.get(f"/v1/batches/{answer['id']}")).json()
    assert before["counts"] == {"pending": 3}
    assert before["progress"] == {
        "final": 0,
        "total": 3,
        "ratio": 0.0,
        "delivery_rate": None,
        "failure_rate": None,
    }
    assert before["shared"]["template"] == TEMPLATE
    assert before["shared"]["tags"] == ["reminders"]
    assert before["segments"] == 3
    assert before["cost"] is None
    assert before["refused"][0]["index"] == 3

    stop = asyncio.Event()
    worker = asyncio.create_task(service.run_worker(stop))
    try:

        async def read() -> dict[str, Any]:
            response: dict[str, Any] = (await api.get(f"/v1/batches/{answer['id']}")).json()
            return response

        done = await eventually(read, lambda b: b["progress"]["final"] == 3, what="every message final")
    finally:
        stop.set()
        await worker
    assert done["counts"] == {"delivered": 2, "failed": 1}
    assert done["progress"] == {
        "final": 3,
        "total": 3,
        "ratio": 1.0,
        "delivery_rate": pytest.approx(0.6667),
        "failure_rate": pytest.approx(0.3333),
    }
    assert done["first_activity"] <= done["last_activity"]


async def test_cancelling_a_batch_cancels_its_waiting_messages_only(api: httpx.AsyncClient) -> None:
    first = await post(api, batch(send_at="2099-01-01T00:00:00Z"))
    other = await post(api, batch(group_id="other"))

    cancelled = await api.post(f"/v1/batches/{first['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["cancelled"] == 3
    assert cancelled.json()["counts"] == {"cancelled": 3}
    assert cancelled.json()["cancelled_at"] is not None
    assert {m["status"] for m in await batch_messages(api, first["id"])} == {"cancelled"}
    assert {m["status"] for m in await batch_messages(api, other["id"])} == {"pending"}

    again = await api.post(f"/v1/batches/{first['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "not_cancellable"
    missing = await api.post("/v1/batches/01J9ZM0A1B2C3D4E5F6G7H8J9K/cancel")
    assert missing.status_code == 404


async def test_batches_are_listed_newest_first_by_tag_a_page_at_a_time(api: httpx.AsyncClient) -> None:
    made = [
        await post(api, batch(group_id=f"g{i}", tags=["even" if i % 2 == 0 else "odd"])) for i in range(5)
    ]

    first = (await api.get("/v1/batches", params={"limit": 2})).json()
    assert [b["id"] for b in first["data"]] == [made[4]["id"], made[3]["id"]]
    rest = (await api.get("/v1/batches", params={"limit": 10, "cursor": first["next_cursor"]})).json()
    assert [b["id"] for b in rest["data"]] == [made[2]["id"], made[1]["id"], made[0]["id"]]
    assert rest["next_cursor"] is None
    even = (await api.get("/v1/batches", params={"tag": "even"})).json()
    assert [b["group_id"] for b in even["data"]] == ["g4", "g2", "g0"]
    assert even["data"][0]["refused_count"] == 0


async def test_a_page_of_batches_reads_the_progress_of_those_within_a_bound_of_messages(
    api: httpx.AsyncClient, service: Service
) -> None:
    five = await post(
        api, batch(group_id="five", recipients=[{"to": n, "first_name": "A"} for n in NUMBERS[:5]])
    )
    three = await post(api, batch(group_id="three", send_at="2099-01-01T00:00:00Z"))
    rows, _ = await service.batches.list(BatchFilter())
    assert [r["id"] for r in rows] == [three["id"], five["id"]]

    # Newest first: the three-message batch fits in four, the five-message one no longer does.
    bounded = await service.batches.with_progress(rows, most_messages=4)
    assert bounded[0]["counts"] == {"scheduled": 3} and bounded[0]["segments"] == 3
    assert "counts" not in bounded[1]
    # Each as the batch's own page reads it.
    for row in await service.batches.with_progress(rows, most_messages=8):
        alone = await service.batches.get(row["id"])
        assert {k: row[k] for k in alone} == alone


async def test_a_batchs_cost_is_summed_by_currency(api: httpx.AsyncClient, service: Service) -> None:
    answer = await post(api, batch(recipients=[{"to": n, "first_name": "A"} for n in NUMBERS[:4]]))
    ids_in_order = sorted(m["id"] for m in await batch_messages(api, answer["id"]))
    assert (await service.batches.get(answer["id"]))["costs"] == {}

    async def charge(prices: list[tuple[int, str] | None]) -> dict[str, Any]:
        async with service.store.transaction() as conn:
            for message_id, price in zip(ids_in_order, prices, strict=True):
                micros, currency = price if price is not None else (None, None)
                await conn.execute(
                    messages.update()
                    .where(messages.c.id == message_id)
                    .values(cost_micros=micros, currency=currency)
                )
        return await service.batches.get(answer["id"])

    one = await charge([(7_900, "USD"), (7_900, "USD"), None, None])
    assert (one["costs"], one["cost_micros"], one["currency"]) == ({"USD": 15_800}, 15_800, "USD")
    several = await charge([(7_900, "USD"), (1_000, "KES"), (25_000, "XOF"), (1_000, "KES")])
    assert several["costs"] == {"USD": 7_900, "KES": 2_000, "XOF": 25_000}
    assert (several["cost_micros"], several["currency"]) == (None, None)
    [listed] = await service.batches.with_progress([several], most_messages=10)
    assert listed["costs"] == several["costs"]


async def test_a_batchs_failures_are_grouped_by_error_code_the_commonest_first(
    api: httpx.AsyncClient, service: Service
) -> None:
    # The fake provider refuses the first number for good; a receipt fails the second.
    numbers = ["+12025550101", "+12025550104", "+12025550101", NUMBERS[0]]
    answer = await post(api, batch(recipients=[{"to": n, "first_name": "A"} for n in numbers]))
    assert await service.batches.failures(answer["id"]) == []
    stop = asyncio.Event()
    worker = asyncio.create_task(service.run_worker(stop))
    try:

        async def read() -> dict[str, Any]:
            return await service.batches.get(answer["id"])

        await eventually(read, lambda b: sum(b["counts"].get(s, 0) for s in ("failed", "delivered")) == 4)
    finally:
        stop.set()
        await worker
    failures = await service.batches.failures(answer["id"])
    assert [(f["error_code"], f["failure_reason"], f["count"]) for f in failures] == [
        ("invalid_number", "invalid_number", 2),
        ("undeliverable", "unreachable", 1),
    ]
    assert failures[0]["example"] == "The destination number is not reachable."
    assert await service.batches.failures(answer["id"], limit=1) == failures[:1]
    with pytest.raises(NotFound):
        await service.batches.failures("not-a-batch")


# -- signed batches ------------------------------------------------------------------------------


async def _signing(service: Service) -> tuple[str, str]:
    key, _secret = await service.store.keys.create("signer")
    settings = await service.store.callbacks.key_settings(key.id)
    return key.id, str(settings["callback_secret"])


async def test_a_batch_signed_with_a_keys_signing_secret_needs_no_bearer_key(
    service: Service, database_url: str
) -> None:
    key_id, secret = await _signing(service)
    body = orjson.dumps(batch())
    transport = httpx.ASGITransport(app=create_app(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:

        async def send(content: bytes, signature: str, key: str = key_id) -> httpx.Response:
            headers = {"Tidings-Key": key, "Tidings-Signature": signature, "Content-Type": "application/json"}
            return await client.post("/v1/batches", content=content, headers=headers)

        signature = signatures.sign(body, secret)
        accepted = await send(body, signature)
        assert accepted.status_code == 202, accepted.text

        replayed = await send(body, signature)
        assert replayed.status_code == 409
        assert replayed.json()["error"]["code"] == "signature_reused"

        stale = await send(body, signatures.sign(body, secret, timestamp=int(time.time()) - 3600))
        assert stale.status_code == 401
        forged = await send(body, signatures.sign(body, "not the secret"))
        assert forged.status_code == 401
        tampered = await send(body.replace(b"Kibera", b"Kiberb"), signatures.sign(body, secret))
        assert tampered.status_code == 401
        unknown = await send(body, signatures.sign(body, secret), key="01J9ZM0A1B2C3D4E5F6G7H8J9K")
        assert unknown.status_code == 401
        unsigned = await client.post(
            "/v1/batches", content=body, headers={"Content-Type": "application/json"}
        )
        assert unsigned.status_code == 401

    assert await counts(service.store) == (3, 1)


# -- stored templates ----------------------------------------------------------------------------


async def test_a_batch_naming_a_stored_template_records_its_id_and_version(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/templates", json={"name": "reminder", "body": "v1 {{ first_name }}"})
    assert created.status_code == 201, created.text
    template = created.json()
    assert template["version"] == 1
    updated = await api.put(
        f"/v1/templates/{template['id']}", json={"name": "reminder", "body": "v2 {{ first_name }}"}
    )
    assert updated.json()["version"] == 2

    answer = await post(api, batch(template=None, template_id=template["id"]))
    sent = await batch_messages(api, answer["id"])
    assert sent[0]["body"] == "v2 Amina"
    assert {(m["template_id"], m["template_version"]) for m in sent} == {(template["id"], 2)}
    assert (await api.get(f"/v1/batches/{answer['id']}")).json()["template_version"] == 2

    old = await api.get(f"/v1/templates/{template['id']}", params={"version": 1})
    assert old.json()["body"] == "v1 {{ first_name }}"
    assert old.json()["latest_version"] == 2

    assert (await api.delete(f"/v1/templates/{template['id']}")).status_code == 204
    gone = await api.post(
        "/v1/batches", json=batch(group_id="later", template=None, template_id=template["id"])
    )
    assert gone.status_code == 422
    assert gone.json()["error"]["field"] == "template_id"


async def test_stored_templates_must_compile_and_have_free_names(api: httpx.AsyncClient) -> None:
    broken = await api.post("/v1/templates", json={"name": "broken", "body": "{% for %}"})
    assert broken.status_code == 422
    assert broken.json()["error"] == {
        "code": "invalid_template",
        "message": broken.json()["error"]["message"],
        "field": "body",
    }
    assert (await api.post("/v1/templates", json={"name": "one", "body": "x"})).status_code == 201
    taken = await api.post("/v1/templates", json={"name": "one", "body": "y"})
    assert taken.status_code == 409
    assert taken.json()["error"]["field"] == "name"
    no_body = await api.post("/v1/templates", json={"name": "two"})
    assert no_body.status_code == 422
    listed = (await api.get("/v1/templates")).json()
    assert [t["name"] for t in listed["data"]] == ["one"]
    assert (await api.get("/v1/templates/01J9ZKX4N6P8R0T2V4X6Z8B0D2")).status_code == 404


# -- rendering -----------------------------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30
)
_VALUE = st.one_of(_TEXT, st.integers(-(10**6), 10**6), st.booleans())
_KEYS = st.sampled_from(["a", "b", "c"])


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    shared=st.dictionaries(_KEYS, _VALUE),
    own=st.lists(st.dictionaries(_KEYS, _VALUE), min_size=1, max_size=5),
    names=st.lists(st.one_of(st.none(), _TEXT), min_size=5, max_size=5),
)
async def test_each_recipient_gets_what_rendering_its_merged_context_directly_gives(
    service: Service, shared: dict[str, Any], own: list[dict[str, Any]], names: list[str | None]
) -> None:
    source = "{{ a|default('-') }}|{{ b|default('-') }}|{{ c|default('-') }}|{{ first_name|default('?') }}"
    source += "|{{ to }}"
    recipients = [
        RecipientIn(to=NUMBERS[i], context=context, first_name=names[i]) for i, context in enumerate(own)
    ]
    spec = BatchIn(group_id=ids.new_id(), template=source, context=shared, recipients=recipients)

    row, created = await service.batches.submit(spec)

    assert created
    template = compile_template(source)
    expected = []
    for recipient in recipients:
        context = {**shared, **recipient.context, "to": recipient.to}
        if recipient.first_name is not None:
            context["first_name"] = recipient.first_name
        expected.append(template.render(context))
    stored = await service.store.messages.search(MessageFilter(batch=row["id"]), limit=10)
    assert [m["body"] for m in sorted(stored, key=lambda m: str(m["id"]))] == expected
