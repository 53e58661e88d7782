"""Email as a channel, through the API and the worker with the fake provider: addresses, content,
attachments, the text part, what the recipient did (opened, clicked, complained), suppression.

Every test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.live import eventually
from tidings.domain.content import EmailContent
from tidings.services import Service
from tidings.store.queue import Consumer

SENDER = "Kibera Clinic <noreply@clinic.example>"


def email(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "channel": "email",
        "to": "Amina@Example.ORG",
        "sender": SENDER,
        "subject": "Ujumbe wa kliniki: miadi yako 📅",
        "html": "<h1>Hello</h1><p>Your visit is <b>tomorrow</b>. <a href='https://clinic.example/v'>Details</a></p>",
    }
    payload.update(fields)
    return payload


async def send(api: httpx.AsyncClient, payload: dict[str, Any], expected: int = 202) -> dict[str, Any]:
    response = await api.post("/v1/messages", json=payload)
    assert response.status_code == expected, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def worker(service: Service) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(service.run_worker(stop))
    try:
        yield
    finally:
        stop.set()
        await running


async def status_of(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    message: dict[str, Any] = (await api.get(f"/v1/messages/{message_id}")).json()
    return message


async def test_an_email_is_stored_with_its_address_normalised_and_a_text_part_made_from_its_html(
    api: httpx.AsyncClient,
) -> None:
    message = await send(api, email(reply_to="desk@clinic.example", headers={"X-Campaign": "march"}))

    assert message["channel"] == "email"
    assert message["to"] == "Amina@example.org"
    assert message["sender"] == SENDER
    assert message["subject"] == "Ujumbe wa kliniki: miadi yako 📅"
    assert message["html"].startswith("<h1>Hello</h1>")
    assert message["body"] == "Hello\n\nYour visit is tomorrow. Details (https://clinic.example/v)"
    assert message["reply_to"] == "desk@clinic.example"
    assert message["headers"] == {"X-Campaign": "march"}
    assert message["segments"] is None and message["encoding"] is None
    assert message["provider"] == "fake"


async def test_the_worker_hands_the_whole_email_to_the_provider(
    service: Service, api: httpx.AsyncClient
) -> None:
    pdf = b"%PDF-1.4 tiny"
    message = await send(
        api,
        email(
            text="Plain words",
            attachments=[
                {
                    "filename": "visit.pdf",
                    "content_type": "application/pdf",
                    "content": base64.b64encode(pdf).decode(),
                }
            ],
        ),
    )

    async with service.store.transaction() as conn:
        from tidings.store import queue

        claimed = await queue.claim(conn, "fake", Consumer("test", 60), limit=10, now=message_now())
    assert [c.id for c in claimed] == [message["id"]]
    content = claimed[0].content
    assert isinstance(content, EmailContent)
    assert content.subject == "Ujumbe wa kliniki: miadi yako 📅"
    assert content.text == "Plain words"
    assert content.html is not None and "<b>tomorrow</b>" in content.html
    assert [(a.filename, a.content_type, a.data) for a in content.attachments] == [
        ("visit.pdf", "application/pdf", pdf)
    ]


def message_now() -> Any:
    from datetime import timedelta

    from tidings.clock import utcnow

    return utcnow() + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"to": "not-an-address"}, "invalid_email_address", "to"),
        ({"sender": "Clinic <nope>"}, "invalid_email_address", "sender"),
        ({"reply_to": "@x"}, "invalid_email_address", "reply_to"),
        ({"subject": None}, "invalid_input", "subject"),
        ({"subject": "two\nlines"}, "invalid_input", "subject"),
        ({"html": None}, "invalid_input", "html"),
        ({"body": "an SMS body"}, "invalid_input", "body"),
        ({"headers": {"Bcc": "everyone@example.org"}}, "invalid_input", "headers"),
        ({"headers": {"X-Evil": "a\r\nBcc: everyone@example.org"}}, "invalid_input", "headers"),
        ({"headers": {"Not A Name": "x"}}, "invalid_input", "headers"),
        (
            {"attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "content": "@@@"}]},
            "invalid_attachment",
            "attachments.0.content",
        ),
        (
            {"attachments": [{"filename": "../a.pdf", "content_type": "application/pdf", "content": ""}]},
            "invalid_attachment",
            "attachments.0.filename",
        ),
        (
            {"attachments": [{"filename": "a", "content_type": "pdf", "content": ""}]},
            "invalid_attachment",
            "attachments.0.content_type",
        ),
    ],
)
async def test_a_wrong_email_field_is_a_422_naming_it_and_nothing_is_stored(
    api: httpx.AsyncClient, service: Service, change: dict[str, Any], code: str, field: str
) -> None:
    response = await api.post("/v1/messages", json=email(**change))

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert await service.store.messages.count_by_status() == {}


async def test_email_fields_on_an_sms_are_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/messages", json={"to": "+254712345678", "body": "hi", "subject": "x"})

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "subject"


async def test_attachments_have_a_count_and_a_size_limit(api: httpx.AsyncClient, service: Service) -> None:
    many = [
        {"filename": f"f{i}.txt", "content_type": "text/plain", "content": base64.b64encode(b"x").decode()}
        for i in range(service.settings.max_attachments + 1)
    ]
    too_many = await api.post("/v1/messages", json=email(attachments=many))
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "invalid_attachment"


async def test_an_email_is_delivered_then_opened_and_clicked_without_its_status_changing(
    api: httpx.AsyncClient, worker: None
) -> None:
    message = await send(api, email(to="engaged@example.org"))

    done = await eventually(
        lambda: status_of(api, message["id"]),
        lambda m: m["clicked_at"] is not None,
        what="opened and clicked",
    )
    assert done["status"] == "delivered"
    assert done["opened_at"] is not None and done["opened_at"] <= done["clicked_at"]
    assert [e["type"] for e in done["events"]][-2:] == ["opened", "clicked"]
    assert all(not e["changed"] for e in done["events"][-2:])


async def test_a_complaint_suppresses_the_address_and_the_next_email_to_it_is_refused(
    api: httpx.AsyncClient, worker: None
) -> None:
    first = await send(api, email(to="complains@example.org"))
    await eventually(
        lambda: api.get("/v1/opt-outs"),
        lambda r: any(o["address"] == "complains@example.org" for o in r.json()["data"]),
        what="the address suppressed",
    )
    assert (await status_of(api, first["id"]))["status"] == "delivered"

    refused = await api.post("/v1/messages", json=email(to="complains@example.org"))
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "recipient_opted_out"
    # SMS to a number is another list.
    assert (await api.post("/v1/messages", json={"to": "+254712345678", "body": "hi"})).status_code == 202


async def test_a_bounce_fails_the_email_with_the_providers_reason(
    api: httpx.AsyncClient, worker: None
) -> None:
    message = await send(api, email(to="bounce@example.org"))

    failed = await eventually(
        lambda: status_of(api, message["id"]), lambda m: m["status"] == "failed", what="failed"
    )
    assert failed["error_code"] == "invalid_number"
    assert failed["failure_reason"] == "invalid_number"


# -- email batches -------------------------------------------------------------------------------


def email_batch(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "group_id": "invoices-2025-03",
        "channel": "email",
        "from": SENDER,
        "reply_to": "billing@clinic.example",
        "subject_template": "Invoice {{ number }} for {{ first_name }}",
        "inner_template": "# Hello {{ first_name }}\n\nYou owe **{{ amount }}**. Notes: {{ note }}",
        "outer_template": (
            "<html><body><div class=layout>{{ content }}</div><footer>{{ clinic }}</footer></body></html>"
        ),
        "context": {"clinic": "Kibera <Health> Centre", "note": "none"},
        "recipients": [
            {
                "to": "amina@example.org",
                "first_name": "Amina",
                "context": {"number": 1, "amount": "KES 1,200"},
            },
            {
                "to": "otieno@example.org",
                "first_name": "Otieno",
                "context": {"number": 2, "amount": "KES 300", "note": "<script>x</script>"},
            },
            {"to": "not-an-address", "first_name": "X", "context": {"number": 3, "amount": "0"}},
        ],
    }
    payload.update(fields)
    return payload


async def batch_messages(api: httpx.AsyncClient, batch_id: str) -> list[dict[str, Any]]:
    listed = (await api.get("/v1/messages", params={"batch": batch_id})).json()["data"]
    return sorted(listed, key=lambda m: str(m["id"]))


async def test_an_email_batch_renders_markdown_into_the_layout_for_each_recipient(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/batches", json=email_batch())
    assert response.status_code == 202, response.text
    answer = response.json()

    assert answer["accepted"] == 2
    assert [(r["index"], r["code"]) for r in answer["refused"]] == [(2, "invalid_email_address")]
    first, second = await batch_messages(api, answer["id"])
    assert first["subject"] == "Invoice 1 for Amina"
    assert first["sender"] == SENDER and first["reply_to"] == "billing@clinic.example"
    assert "<h1>Hello Amina</h1>" in first["html"]
    assert "<strong>KES 1,200</strong>" in first["html"]
    assert first["html"].startswith("<html><body><div class=layout>")
    # Context values are escaped in the HTML, in the body and in the layout alike.
    assert "&lt;script&gt;" in second["html"] and "<script>" not in second["html"]
    assert "<footer>Kibera &lt;Health&gt; Centre</footer>" in first["html"]
    # The text part is the body's, without the layout.
    assert first["body"] == "Hello Amina\n\nYou owe KES 1,200. Notes: none"
    # One-click unsubscribe, pointing at this message's signed link.
    headers = first["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith(f"<http://127.0.0.1:8000/unsubscribe/{first['id']}/")


async def test_an_email_batch_needs_its_subject_and_body_templates(api: httpx.AsyncClient) -> None:
    missing = await api.post("/v1/batches", json=email_batch(subject_template=None))
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "subject_template"
    sms_only = await api.post("/v1/batches", json={**email_batch(), "channel": "sms", "template": "x"})
    assert sms_only.status_code == 422
    assert sms_only.json()["error"]["field"] == "subject_template"


async def test_each_recipient_gets_a_pdf_of_their_own_made_from_the_html_template(
    api: httpx.AsyncClient, service: Service
) -> None:
    payload = email_batch(
        pdf_template=(
            "<h1>Invoice {{ number }}</h1><p>Patient: {{ first_name }}</p><p>Total: {{ amount }}</p>"
        ),
        pdf_filename="invoice.pdf",
    )
    answer = (await api.post("/v1/batches", json=payload)).json()
    first, second = await batch_messages(api, answer["id"])

    from pypdf import PdfReader

    from tidings.store.queue import attachments_of

    async with service.store.engine.connect() as conn:
        files = await attachments_of(conn, [first["id"], second["id"]])
    for message, number, name in ((first, 1, "Amina"), (second, 2, "Otieno")):
        (pdf,) = files[message["id"]]
        assert (pdf.filename, pdf.content_type) == ("invoice.pdf", "application/pdf")
        text = PdfReader(io.BytesIO(pdf.data)).pages[0].extract_text()
        assert f"Invoice {number}" in text and f"Patient: {name}" in text


# -- one-click unsubscribe -----------------------------------------------------------------------


async def test_the_one_click_link_suppresses_the_address_for_that_sender_only(
    api: httpx.AsyncClient, service: Service
) -> None:
    answer = (await api.post("/v1/batches", json=email_batch(send_at="2099-01-01T00:00:00Z"))).json()
    first, second = await batch_messages(api, answer["id"])
    link = first["headers"]["List-Unsubscribe"].strip("<>").removeprefix("http://127.0.0.1:8000")
    anonymous = httpx.AsyncClient(transport=api._transport, base_url="http://tidings.test")
    async with anonymous:
        page = await anonymous.get(link)
        assert page.status_code == 200 and "<button" in page.text
        assert (await status_of(api, first["id"]))["status"] == "scheduled"  # a GET changes nothing

        forged = await anonymous.post(link[:-4] + "AAAA", content="List-Unsubscribe=One-Click")
        assert forged.status_code == 403
        done = await anonymous.post(
            link,
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200, done.text
        assert done.json() == {"unsubscribed": "amina@example.org"}

    assert (await status_of(api, first["id"]))["status"] == "cancelled"
    assert (await status_of(api, second["id"]))["status"] == "scheduled"
    again = await api.post("/v1/messages", json=email(to="amina@example.org"))
    assert again.status_code == 422 and again.json()["error"]["code"] == "recipient_opted_out"
    other_sender = await api.post(
        "/v1/messages", json=email(to="amina@example.org", sender="news@other.example")
    )
    assert other_sender.status_code == 202


async def test_an_email_address_is_opted_out_and_back_in_through_the_api(api: httpx.AsyncClient) -> None:
    added = await api.post("/v1/opt-outs", json={"email": "Wanjiru@Example.ORG", "note": "asked by phone"})
    assert added.status_code == 201, added.text
    assert added.json() == {
        "channel": "email",
        "address": "Wanjiru@example.org",
        "number": None,
        "scope": "*",
        "created": True,
        "cancelled_messages": 0,
    }
    refused = await api.post("/v1/messages", json=email(to="wanjiru@example.org".replace("w", "W", 1)))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "recipient_opted_out"
    both = await api.post("/v1/opt-outs", json={"email": "a@example.org", "number": "+254712345678"})
    assert both.status_code == 422
    wrong = await api.post("/v1/opt-outs", json={"email": "nope"})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_email_address"

    removed = await api.delete("/v1/opt-outs/Wanjiru@example.org")
    assert removed.status_code == 204
    assert (await api.post("/v1/messages", json=email(to="Wanjiru@example.org"))).status_code == 202
