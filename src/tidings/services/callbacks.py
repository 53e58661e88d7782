"""What client applications set and see of their callbacks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from tidings import ids
from tidings.clock import to_api, utcnow
from tidings.domain.destinations import networks, url_refusal
from tidings.errors import CallbackUrlNotAllowed, NotFound
from tidings.store import Store
from tidings.store.keys import new_callback_secret
from tidings.worker.wakeup import Waker


class CallbackService:
    def __init__(
        self, store: Store, waker: Waker, *, grace_seconds: float, allow_networks: Sequence[str] = ()
    ) -> None:
        self.store = store
        self.waker = waker
        self.grace = timedelta(seconds=grace_seconds)
        self.allowed = networks(allow_networks)

    def check_url(self, url: str | None, field: str) -> None:
        """Refuse a callback URL tidings may not post to (:class:`CallbackUrlNotAllowed`)."""
        if url is None:
            return
        reason = url_refusal(url, self.allowed)
        if reason is not None:
            raise CallbackUrlNotAllowed(
                f"{field}: callbacks may not go to {url.split('?')[0][:200]!r}: {reason} "
                "(an operator can allow it with callback_allow_networks)",
                field=field,
            )

    async def settings(self, api_key_id: str) -> dict[str, str | None]:
        """The key's default callback URL, the secret its callbacks are signed with, and until
        when the previous secret signs too (after a rotation)."""
        settings = await self.store.callbacks.key_settings(api_key_id)
        until = settings["previous_secret_until"]
        return {
            "url": settings["callback_url"],
            "secret": settings["callback_secret"],
            "previous_secret_until": to_api(until) if until is not None and until > utcnow() else None,
        }

    async def set_url(self, api_key_id: str, url: str | None) -> dict[str, str | None]:
        """Set (or with ``None`` clear) the key's default callback URL."""
        self.check_url(url, "url")
        await self.store.callbacks.set_key_url(api_key_id, url)
        return await self.settings(api_key_id)

    async def rotate_secret(self, api_key_id: str) -> dict[str, str | None]:
        """A new signing secret for the key; the old one signs too for the grace period, so that
        receivers can switch without losing a callback."""
        await self.store.callbacks.rotate_secret(
            api_key_id, new_callback_secret(), grace_until=utcnow() + self.grace
        )
        return await self.settings(api_key_id)

    async def list(
        self, *, status: str | None, message_id: str | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of callbacks, newest first, and the next page's cursor."""
        rows = await self.store.callbacks.search(
            status=status, message_id=message_id, before_id=cursor, limit=limit + 1
        )
        page = rows[:limit]
        return page, (page[-1]["id"] if len(rows) > limit else None)

    async def retry(self, callback_id: str) -> dict[str, Any]:
        """Queue a failed callback again with a fresh set of attempts."""
        row = await self.store.callbacks.retry(callback_id) if ids.is_id(callback_id) else None
        if row is None:
            raise NotFound(f"no callback {callback_id}")
        self.waker.notify()
        return row
