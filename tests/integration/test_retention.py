"""Retention: old webhook-log rows and finished callbacks go, old bodies and texts are redacted,
in bounded batches, and nothing still in the queue is touched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from tests.live import Live, live_service
from tidings.domain.reports import InboundMessage
from tidings.store.tables import callbacks, inbound_messages, message_attachments, messages, webhook_log

PERSON = "+254712345678"
LONG_AGO = datetime(2020, 1, 1)


async def age(live: Live, table: Any, column: str, ids: list[Any], when: datetime = LONG_AGO) -> None:
    async with live.service.store.transaction() as conn:
        await conn.execute(update(table).where(table.c.id.in_(ids)).values({column: when}))


async def fill(live: Live) -> dict[str, Any]:
    """Old and new rows of every kind retention looks at."""
    old_done = [(await live.send(to=PERSON, body=f"secret {n}", metadata={"patient": n})) for n in range(5)]
    for message in old_done:
        await live.service.store.messages.cancel(message["id"], reason="test")
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    old_waiting = await live.send(to=PERSON, body="still waiting", send_at=later)
    new_done = await live.send(to=PERSON, body="recent", send_at=later)
    await live.service.store.messages.cancel(new_done["id"], reason="test")
    await age(live, messages, "created_at", [m["id"] for m in [*old_done, old_waiting]])
    # Inbound texts and webhook-log rows, through the API as a provider would post them.
    for n in range(3):
        await live.service.inbound.receive("fake", [_inbound(f"in-{n}", f"my reply {n}")])
    inbound = await live.service.store.inbound.search()
    await age(live, inbound_messages, "received_at", [r["id"] for r in inbound[:2]])
    for _ in range(4):
        await live.client.post(
            "/webhooks/fake/fake/status", content=b"{}", headers={"Content-Type": "text/plain"}
        )
    logged = await live.service.store.webhooks.search()
    await age(live, webhook_log, "received_at", [e.id for e in logged[:3]])
    cbs = await live.service.store.callbacks.search()
    async with live.service.store.transaction() as conn:
        await conn.execute(update(callbacks).values(status="delivered", updated_at=LONG_AGO))
    return {"old_done": old_done, "old_waiting": old_waiting, "new_done": new_done, "callbacks": len(cbs)}


def _inbound(provider_id: str, body: str) -> InboundMessage:
    return InboundMessage(sender=PERSON, body=body, provider_message_id=provider_id, raw={"Body": body})


RETAINING = {
    "message_body_retention_days": 30,
    "inbound_retention_days": 30,
    "webhook_log_retention_days": 30,
    "callback_retention_days": 30,
    "prune_batch": 2,
}


async def test_retention_prunes_and_redacts_what_is_old_and_nothing_else(database_url: str) -> None:
    async with live_service(database_url, worker=False, **RETAINING) as live:
        await live.client.put("/v1/callback-settings", json={"url": "https://app.example.org/hook"})
        rows = await fill(live)
        done = await live.service.retention.run_once()
        assert done["messages_redacted"] == 5
        assert done["inbound_redacted"] == 2
        assert done["webhook_log_deleted"] == 3
        assert done["callbacks_deleted"] == rows["callbacks"]

        for message in rows["old_done"]:
            redacted = await live.message(message["id"])
            assert redacted["body"] == "" and redacted["metadata"] == {} and redacted["redacted_at"]
            assert redacted["status"] == "cancelled"  # the record of what happened stays
            assert all(e["detail"] == {} for e in redacted["events"])
        waiting = await live.message(rows["old_waiting"]["id"])
        assert waiting["body"] == "still waiting" and waiting["redacted_at"] is None
        assert (await live.message(rows["new_done"]["id"]))["body"] == "recent"
        texts = sorted(r["body"] for r in await live.service.store.inbound.search())
        assert texts == ["", "", "my reply 0"]  # the newest two were aged (newest first)
        assert len(await live.service.store.webhooks.search()) == 1
        # A second round finds nothing more to do.
        assert not any((await live.service.retention.run_once()).values())


async def test_without_retention_settings_bodies_are_kept(database_url: str) -> None:
    async with live_service(database_url, worker=False) as live:
        sent = await live.send(to=PERSON, body="keep me")
        await live.service.store.messages.cancel(sent["id"], reason="test")
        await age(live, messages, "created_at", [sent["id"]])
        done = await live.service.retention.run_once()
        assert "messages_redacted" not in done
        assert (await live.message(sent["id"]))["body"] == "keep me"


async def test_a_webhook_cut_before_it_was_finished_shows_as_interrupted(database_url: str) -> None:
    async with live_service(database_url, worker=False) as live:
        entry_id = await live.service.store.webhooks.record(
            provider="fake",
            kind="fake",
            event="status",
            url="http://tidings.test/webhooks/fake/fake/status",
            headers={},
            body=b"{}",
            remote_ip="127.0.0.1",
        )
        ten_minutes_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10)
        await age(live, webhook_log, "received_at", [entry_id], ten_minutes_ago)
        assert (await live.service.store.webhooks.search())[0].error is None
        await live.service.retention.run_once()
        [entry] = await live.service.store.webhooks.search(failed=True)
        assert entry.id == entry_id and entry.state == "interrupted" and entry.error


async def test_tidings_prune_runs_retention_by_hand(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'prune.db'}"
    async with live_service(database_url, worker=False) as live:
        sent = await live.send(to=PERSON, body="old text")
        await live.service.store.messages.cancel(sent["id"], reason="test")
        await age(live, messages, "created_at", [sent["id"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env |= {"TIDINGS_DATABASE_URL": database_url, "TIDINGS_MESSAGE_BODY_RETENTION_DAYS": "30"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tidings", "prune"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "messages redacted: 1" in done.stdout
    async with live_service(database_url, worker=False, empty=False) as live:
        assert (await live.message(sent["id"]))["body"] == ""


async def test_an_old_emails_text_html_subject_headers_and_files_are_all_removed(database_url: str) -> None:
    async with live_service(database_url, worker=False, **RETAINING) as live:
        sent = await live.send(
            channel="email",
            to="amina@example.org",
            subject="Your results from the Kibera clinic",
            html="<p>Your HIV test result is ready.</p>",
            headers={"X-Patient": "P-1042"},
            attachments=[
                {
                    "filename": "result.txt",
                    "content_type": "text/plain",
                    "content": "UmVzdWx0OiBuZWdhdGl2ZQ==",
                }
            ],
        )
        await live.service.store.messages.cancel(sent["id"], reason="test")
        await age(live, messages, "created_at", [sent["id"]])
        assert (await live.service.retention.run_once())["messages_redacted"] == 1

        redacted = await live.message(sent["id"])
        assert (redacted["body"], redacted["html"], redacted["subject"], redacted["headers"]) == (
            "",
            None,
            None,
            None,
        )
        async with live.service.store.engine.connect() as conn:
            files = (
                await conn.execute(
                    select(message_attachments).where(message_attachments.c.message_id == sent["id"])
                )
            ).all()
        assert files == []
        found = await live.client.get("/v1/messages", params={"q": "Kibera clinic"})
        assert found.status_code == 200 and found.json()["data"] == []
        assert redacted["to"] == "amina@example.org" and redacted["status"] == "cancelled"
