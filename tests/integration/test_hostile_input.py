"""Hostile and odd input gets a 4xx with the error contract, never a 500, and writes nothing
it should not: unpaired surrogates, NUL characters, odd cursors, odd webhook paths. Each test
runs on SQLite and PostgreSQL (which refuses NUL in text and invalid UTF-8 outright)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_api_errors import JSON_HEADERS, KENYA, assert_error, stored_count
from tidings.services import Service
from tidings.store import Store

SURROGATE = "\ud800"


def encoded(payload: Any) -> bytes:
    # json.dumps writes an unpaired surrogate as a \\ud800 escape: valid JSON text that decodes
    # to a string no database can store.
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"to": KENYA, "body": "hi", "metadata": {"note": SURROGATE}}, "metadata"),
        ({"to": KENYA, "body": "hi", "metadata": {SURROGATE: 1}}, "metadata"),
        ({"to": KENYA, "body": "hi", "metadata": {"deep": [{"x": "a" + SURROGATE}]}}, "metadata"),
        ({"to": KENYA, "body": "hi", "tags": ["ok", SURROGATE]}, "tags"),
        ({"to": KENYA, "body": "hi" + SURROGATE}, "body"),
        ({"to": KENYA, "body": "hi", "sender": SURROGATE}, "sender"),
        ({"to": KENYA, "body": "hi", "callback_url": "https://app.example.org/\x00"}, "callback_url"),
        ({"to": KENYA, "body": "hi", "callback_url": "https://app.example.org/" + SURROGATE}, "callback_url"),
    ],
)
async def test_unstorable_text_in_a_message_is_refused_and_nothing_stored(
    api: httpx.AsyncClient, store: Store, payload: dict[str, Any], field: str
) -> None:
    response = await api.post("/v1/messages", content=encoded(payload), headers=JSON_HEADERS)
    error = assert_error(response, 422)
    assert error.get("field", "").split(".")[0] == field
    assert await stored_count(store) == 0


@pytest.mark.parametrize("url", ["https://app.example.org/\x00", "https://app.example.org/" + SURROGATE])
async def test_unstorable_callback_settings_url_is_refused(api: httpx.AsyncClient, url: str) -> None:
    response = await api.put("/v1/callback-settings", content=encoded({"url": url}), headers=JSON_HEADERS)
    assert_error(response, 422, field="url")
    assert (await api.get("/v1/callback-settings")).json()["url"] is None


@pytest.mark.parametrize("note", ["on paper\x00", "on paper" + SURROGATE])
async def test_unstorable_opt_out_note_is_refused(api: httpx.AsyncClient, note: str) -> None:
    response = await api.post(
        "/v1/opt-outs", content=encoded({"number": KENYA, "note": note}), headers=JSON_HEADERS
    )
    assert_error(response, 422, field="note")
    assert (await api.get("/v1/opt-outs")).json()["data"] == []


@pytest.mark.parametrize(
    "at", ["2026-01-01T10:00:00+02:00", "2026-01-01T10:00:00Z", "9999-12-31T23:59:59-12:00"]
)
async def test_a_log_cursor_with_a_time_zone_is_read_or_refused_not_a_500(
    api: httpx.AsyncClient, at: str
) -> None:
    cursor = base64.urlsafe_b64encode(f"{at}|e1".encode()).decode().rstrip("=")
    response = await api.get("/v1/log", params={"cursor": cursor})
    if response.status_code != 200:
        assert_error(response, 400, "bad_request", "cursor")


@pytest.mark.parametrize("event", ["x" * 65, "status%00", "status%00x" * 10])
async def test_an_odd_webhook_event_name_is_refused_and_logged(
    api: httpx.AsyncClient, service: Service, event: str
) -> None:
    response = await api.post(
        f"/webhooks/fake/fake/{event}", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 404)
    [entry] = await service.store.webhooks.search()
    assert entry.response_status == 404 and not entry.processed
    assert len(entry.event) <= 64 and "\x00" not in entry.event


# -- searching messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q", ['"', "'", "*", "AND OR NOT", "body:", "subject:x", 'NEAR("a" "b", 2)', "a OR b*", "^a", "{body}: x"]
)
async def test_full_text_query_syntax_in_q_is_searched_as_words_not_obeyed(
    api: httpx.AsyncClient, q: str
) -> None:
    await api.post("/v1/messages", json={"to": KENYA, "body": "AND OR NOT body subject NEAR a b x"})

    response = await api.get("/v1/messages", params={"q": q})

    if response.status_code == 200:
        assert len(response.json()["data"]) <= 1
    else:
        assert_error(response, 422, "invalid_input", "q")


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"q": ""}, "invalid_input", "q"),
        ({"q": '"'}, "invalid_input", "q"),
        ({"q": "*"}, "invalid_input", "q"),
        ({"q": "'; DROP TABLE messages; --"}, None, None),
        ({"q": "\x00"}, "invalid_input", "q"),
        ({"q": " ".join(f"w{n}" for n in range(11))}, "invalid_input", "q"),
        ({"q": "a" * 201}, "validation_error", "q"),
        ({"q": "a" * 65}, "invalid_input", "q"),
        ({"status": "bogus"}, "validation_error", "status"),
        ({"status": ["sent", "bogus"]}, "validation_error", "status"),
        ({"to_prefix": "2547"}, "validation_error", "to_prefix"),
        ({"to_prefix": "+"}, "validation_error", "to_prefix"),
        ({"to_prefix": "+2547%"}, "validation_error", "to_prefix"),
        ({"channel": "fax"}, "validation_error", "channel"),
        ({"currency": "KESH"}, "validation_error", "currency"),
        ({"currency": "KES", "cost_min": "-1"}, "validation_error", "cost_min"),
        ({"currency": "KES", "cost_min": "1e3"}, "validation_error", "cost_min"),
        ({"currency": "KES", "cost_max": "0.0000001"}, "validation_error", "cost_max"),
        ({"currency": "KES", "cost_max": "NaN"}, "validation_error", "cost_max"),
        ({"cost_min": "0.5"}, "invalid_input", "cost_min"),
        ({"cost_max": "0.5"}, "invalid_input", "cost_max"),
        ({"currency": "KES", "cost_min": "2", "cost_max": "1"}, "invalid_input", "cost_max"),
        ({"tag": ["t"] * 11}, "validation_error", "tag"),
        ({"tag": ["ok", "a\x00b"]}, "invalid_input", "tag"),
    ],
)
async def test_a_bad_search_parameter_is_422_naming_it(
    api: httpx.AsyncClient, params: dict[str, Any], code: str | None, field: str | None
) -> None:
    response = await api.get("/v1/messages", params=params)

    if code is None:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, 422, code, field)


@pytest.mark.parametrize("raw", ["%ED%A0%80", "%FF%FE", "%00", "%C0%80", "%22%2A%22"])
async def test_q_that_is_not_text_is_422_naming_q(api: httpx.AsyncClient, raw: str) -> None:
    # Bytes that are not UTF-8 (a surrogate, overlong NUL) reach the app as replacement characters.
    assert_error(await api.get(f"/v1/messages?q={raw}"), 422, "invalid_input", "q")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Any text a client can put in a URL (encoded as UTF-8: an unpaired surrogate cannot be; the bytes
# of one arrive as the test above sends them).
@given(q=st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
async def test_any_text_in_q_is_answered_or_refused_with_422_never_a_500(
    api: httpx.AsyncClient, q: str
) -> None:
    response = await api.get("/v1/messages", params={"q": q})

    if response.status_code != 200:
        assert_error(response, 422, field="q")


# -- the fuzzer ------------------------------------------------------------------------------------

# Every Unicode category, unpaired surrogates and NUL included: what a client can put in JSON.
any_text = st.text(alphabet=st.characters(codec=None), max_size=30)
edge_text = st.one_of(
    any_text,
    st.sampled_from(["", " ", "\x00", SURROGATE, "\udfff", "\ufeff", "\u202e", "💬" * 40, "a" * 2000]),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        edge_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(edge_text, children, max_size=4)
    ),
    max_leaves=12,
)
fields = {
    "to": st.one_of(edge_text, st.sampled_from([KENYA, "+14155550123", "0712345678"])),
    "body": edge_text,
    "sender": st.one_of(st.none(), edge_text),
    "send_at": st.one_of(
        st.none(), edge_text, st.sampled_from(["2026-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00"])
    ),
    "provider": st.one_of(st.none(), edge_text, st.just("fake")),
    "tags": st.one_of(st.lists(edge_text, max_size=4), json_values),
    "metadata": st.one_of(st.dictionaries(edge_text, json_values, max_size=4), json_values),
    "callback_url": st.one_of(
        st.none(), edge_text, st.builds(lambda t: "https://app.example.org/" + t, edge_text)
    ),
    "ordered": st.one_of(st.none(), st.booleans(), edge_text),
}
payloads = st.fixed_dictionaries({}, optional=fields)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads)
async def test_the_accept_path_never_answers_500_to_any_json(
    api: httpx.AsyncClient, store: Store, payload: dict[str, Any]
) -> None:
    before = await stored_count(store)
    response = await api.post("/v1/messages", content=encoded(payload), headers=JSON_HEADERS)
    assert response.status_code in (202, 400, 413, 422), response.text
    if response.status_code != 202:
        assert_error(response, response.status_code)
    assert await stored_count(store) == before + (1 if response.status_code == 202 else 0)


async def test_refused_webhooks_cannot_fill_the_disk(api: httpx.AsyncClient, service: Service) -> None:
    # Unauthenticated posts, large and small: each is refused and logged with its size and hash,
    # its body cut to a small cap.
    large, unsigned = b"x" * 900_000, b'{"id": "FK1", "status": "delivered"}' + b" " * 50_000
    for body in (large, unsigned) * 5:
        response = await api.post(
            "/webhooks/fake/fake/status", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (403, 413)
    entries = await service.store.webhooks.search()
    assert len(entries) == 10
    for entry in entries:
        assert entry.state == "refused" and entry.verified is False
        assert len(entry.body) <= 1024
        assert entry.body_size in (len(large), len(unsigned))
