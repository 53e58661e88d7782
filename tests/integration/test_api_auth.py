"""The API-key cache, at its default time to live: what a request costs and how long a revoked key
keeps working. Time is a clock the test moves, so nothing waits for the cache to expire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import make_settings
from tidings.api.app import create_app
from tidings.config import Settings
from tidings.errors import Unauthorized
from tidings.services import Service
from tidings.services.keys import KeyChecker
from tidings.store import Store
from tidings.store.keys import ApiKey, KeyStore

DEFAULT_TTL: float = Settings.model_fields["api_key_cache_seconds"].default


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountedKeys:
    """The real key store, counting the lookups the checker makes in it."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self.lookups = 0

    async def verify(self, secret: str) -> ApiKey | None:
        self.lookups += 1
        return await self.keys.verify(secret)


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counted(store: Store) -> CountedKeys:
    return CountedKeys(store.keys)


@pytest.fixture
def checker(counted: CountedKeys, clock: Clock) -> KeyChecker:
    """A checker built as the API builds it, with the default time to live."""
    return KeyChecker(counted, DEFAULT_TTL, clock=clock)  # type: ignore[arg-type]


async def test_a_key_is_looked_up_once_per_time_to_live(
    store: Store, checker: KeyChecker, counted: CountedKeys, clock: Clock
) -> None:
    assert DEFAULT_TTL > 0, "these tests are about the cache the default turns on"
    key, secret = await store.keys.create("app")
    for _ in range(5):
        assert (await checker.check(bearer(secret))).id == key.id
        clock.advance(DEFAULT_TTL / 10)
    assert counted.lookups == 1
    clock.advance(DEFAULT_TTL)
    assert (await checker.check(bearer(secret))).id == key.id
    assert counted.lookups == 2


async def test_a_revoked_key_works_from_the_cache_until_its_time_to_live_is_over(
    store: Store, checker: KeyChecker, counted: CountedKeys, clock: Clock
) -> None:
    key, secret = await store.keys.create("app")
    assert (await checker.check(bearer(secret))).id == key.id
    assert await store.keys.revoke("app") is not None

    clock.advance(DEFAULT_TTL - 0.01)
    assert (await checker.check(bearer(secret))).id == key.id
    assert counted.lookups == 1

    clock.advance(0.02)
    with pytest.raises(Unauthorized):
        await checker.check(bearer(secret))
    # Refused once, refused from then on: the refusal is not cached, the store is asked each time.
    with pytest.raises(Unauthorized):
        await checker.check(bearer(secret))
    assert counted.lookups == 3


async def test_an_unknown_key_is_never_cached(checker: KeyChecker, counted: CountedKeys) -> None:
    for lookups in range(1, 4):
        with pytest.raises(Unauthorized):
            await checker.check(bearer("tdg_not-a-key-anybody-was-given"))
        assert counted.lookups == lookups


@pytest.fixture
async def api(store: Store, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API over a service whose settings keep the default key cache."""
    settings = make_settings(database_url, api_key_cache_seconds=DEFAULT_TTL)
    service = Service(settings, store=Store.connect(database_url))
    await service.start()
    try:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://tidings.test") as client:
            yield client
    finally:
        await service.close()


async def test_the_api_keeps_accepting_a_just_revoked_key_and_refuses_an_unknown_one(
    store: Store, api: httpx.AsyncClient
) -> None:
    _key, secret = await store.keys.create("app")
    assert (await api.get("/v1/messages", headers={"Authorization": bearer(secret)})).status_code == 200
    await store.keys.revoke("app")
    # Well within the time to live: the key is still in the API's cache.
    assert (await api.get("/v1/messages", headers={"Authorization": bearer(secret)})).status_code == 200

    unknown = {"Authorization": bearer("tdg_not-a-key-anybody-was-given")}
    for _ in range(2):
        refused = await api.get("/v1/messages", headers=unknown)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
