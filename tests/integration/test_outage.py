"""The database goes away and comes back: clients get ``503`` with the error body and
``Retry-After`` (never a reset connection), nothing acknowledged is lost, and workers in other
processes are woken by LISTEN again once it is back."""

from __future__ import annotations

import asyncio
import time

from tests.live import live_service
from tests.pg_cluster import Cluster
from tidings.services import Service

PERSON = "+254712345678"


async def test_an_outage_answers_503_and_service_resumes_when_the_database_is_back(
    own_postgres: Cluster,
) -> None:
    async with live_service(own_postgres.url, worker=False) as live:
        before = await live.send(to=PERSON, body="before")
        await asyncio.to_thread(own_postgres.stop, "immediate")
        # The same keep-alive client, request after request: every answer is the error contract.
        for request in (
            live.client.post("/v1/messages", json={"to": PERSON, "body": "during"}),
            live.client.get(f"/v1/messages/{before['id']}"),
            live.client.get("/v1/messages"),
        ):
            response = await request
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "database_unavailable"
        assert (await live.client.get("/healthz")).status_code == 503
        await asyncio.to_thread(own_postgres.start)
        deadline = time.monotonic() + 20
        while True:
            response = await live.client.post("/v1/messages", json={"to": PERSON, "body": "after"})
            if response.status_code == 202 or time.monotonic() > deadline:
                break
            assert response.status_code == 503
            await asyncio.sleep(0.2)
        assert response.status_code == 202, response.text
        listed = (await live.client.get("/v1/messages")).json()["data"]
        assert sorted(m["body"] for m in listed) == ["after", "before"]


async def test_a_worker_listens_again_after_the_database_restarts(own_postgres: Cluster) -> None:
    # Polling is slow here (30 s): only NOTIFY can wake the worker in time.
    async with live_service(own_postgres.url, worker=False, poll_interval=30) as live:
        worker = Service(live.service.settings)
        await worker.start(listen=True)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run_worker(stop))
        try:
            first = await live.send(to=PERSON, body="one")
            await live.wait_for(first["id"], "delivered", timeout=10)
            await asyncio.to_thread(own_postgres.restart)
            # Once the API can write again, a new message must still wake the worker.
            deadline = time.monotonic() + 20
            while True:
                response = await live.client.post("/v1/messages", json={"to": PERSON, "body": "two"})
                if response.status_code == 202 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert response.status_code == 202, response.text
            await live.wait_for(response.json()["id"], "delivered", timeout=10)
        finally:
            stop.set()
            await running
            await worker.close()
