"""The API-key cache stays bounded however many different keys are used."""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.services.keys import MAX_CACHED_KEYS, KeyChecker
from tidings.store.keys import ApiKey


class EveryKeyValid:
    """A key store in which every secret is a valid key; counts the lookups made in it."""

    def __init__(self) -> None:
        self.lookups = 0

    async def verify(self, secret: str) -> ApiKey | None:
        self.lookups += 1
        return ApiKey(
            id=secret,
            name=secret,
            prefix=secret[:10],
            created_at=datetime.now(UTC),
            last_used_at=None,
            revoked_at=None,
        )


async def test_the_cache_keeps_at_most_its_limit_of_keys() -> None:
    keys = EveryKeyValid()
    checker = KeyChecker(keys, ttl=3600, clock=lambda: 0.0)  # type: ignore[arg-type]
    secrets = [f"tdg_{n:08d}" for n in range(2 * MAX_CACHED_KEYS + 7)]
    for secret in secrets:
        await checker.check(f"Bearer {secret}")
    assert keys.lookups == len(secrets)

    # Nothing has expired, so a second round is served from the cache as far as it reaches: only
    # keys cached when the round began can be hits (keys cached during it are not asked for again).
    keys.lookups = 0
    for secret in secrets:
        await checker.check(f"Bearer {secret}")
    assert keys.lookups >= len(secrets) - MAX_CACHED_KEYS

    # The cache still works after it has been full.
    keys.lookups = 0
    await checker.check(f"Bearer {secrets[0]}")
    await checker.check(f"Bearer {secrets[0]}")
    assert keys.lookups <= 1
