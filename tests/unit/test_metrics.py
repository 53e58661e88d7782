"""What ``GET /metrics`` costs and shows, without a database: the figures are read once for many
scrapes, a database that does not answer leaves the counted metrics served, and label values stay
few whatever providers say."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tidings import metrics
from tidings.metrics import MAX_CODES_PER_PROVIDER, BatchProgress, Exposition, Figures

FIGURES = Figures(
    queue={"scheduled": 0, "pending": 3, "sending": 1, "sent": 2},
    oldest_pending={"fake": 12.5},
    gateway_last_poll={"phone": 4.0},
    batches=[BatchProgress(id="01BATCH", total=4, unfinished=1)],
    open_alerts=None,
)


class Database:
    """Answers with :data:`FIGURES` (or fails), once ``go`` is set; counts the reads."""

    def __init__(self, *, fails: bool = False) -> None:
        self.reads = 0
        self.fails = fails
        self.go = asyncio.Event()

    async def read(self) -> Figures:
        self.reads += 1
        await self.go.wait()
        if self.fails:
            raise ConnectionRefusedError("the database is down")
        return FIGURES


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


async def test_concurrent_scrapes_share_one_read_of_the_database() -> None:
    database = Database()
    clock = Clock()
    exposition = Exposition(database.read, ttl=1.0, clock=clock)

    scrapes = [asyncio.ensure_future(exposition.render()) for _ in range(5)]
    await asyncio.sleep(0)
    database.go.set()
    texts = await asyncio.gather(*scrapes)

    assert database.reads == 1
    # The same figures in every answer (the process's own CPU and memory move between renders).
    ours = [{k: v for k, v in samples(t).items() if k[0].startswith("tidings_")} for t in texts]
    assert all(figures == ours[0] for figures in ours) and ours[0]
    clock.now += 0.5
    await exposition.render()
    assert database.reads == 1
    clock.now += 0.6
    await exposition.render()
    assert database.reads == 2


async def test_the_figures_are_gauges_labelled_by_what_they_count() -> None:
    database = Database()
    database.go.set()

    found = samples(await Exposition(database.read).render())

    assert found["tidings_database_up", ()] == 1
    assert found["tidings_queue_messages", (("status", "pending"),)] == 3
    assert found["tidings_oldest_pending_seconds", (("provider", "fake"),)] == 12.5
    assert found["tidings_gateway_last_poll_age_seconds", (("gateway", "phone"),)] == 4
    assert found["tidings_batch_progress_ratio", (("batch", "01BATCH"),)] == 0.75
    assert found["tidings_batch_unfinished_messages", (("batch", "01BATCH"),)] == 1
    # No alerts table: nothing said about alerts, rather than a misleading zero.
    assert not [name for name, _labels in found if name == "tidings_open_alerts"]


async def test_a_database_that_does_not_answer_leaves_the_counted_metrics_served() -> None:
    database = Database(fails=True)
    database.go.set()
    metrics.accepted("unit-down", "sms")

    found = samples(await Exposition(database.read).render())

    assert found["tidings_database_up", ()] == 0
    assert found["tidings_messages_accepted_total", (("channel", "sms"), ("provider", "unit-down"))] == 1
    assert not [name for name, _labels in found if name == "tidings_queue_messages"]


async def test_error_codes_stay_few_whatever_a_provider_answers() -> None:
    database = Database()
    database.go.set()
    provider = "unit-codes"
    metrics.provider_error(provider, "21211")
    metrics.provider_error(provider, "Invalid 'To' number: +1202 is not a valid phone number, says Twilio")
    metrics.provider_error(provider, None)
    for n in range(MAX_CODES_PER_PROVIDER + 5):
        metrics.provider_error(provider, f"code_{n}")

    found = samples(await Exposition(database.read).render())

    codes = {
        dict(labels)["code"]: value
        for (name, labels), value in found.items()
        if name == "tidings_provider_errors_total" and ("provider", provider) in labels
    }
    assert codes["21211"] == 1
    assert codes["none"] == 1
    # The sentence, and the codes past the limit (21211 took one place).
    assert codes["other"] == 1 + 6
    assert len(codes) == MAX_CODES_PER_PROVIDER + 2
