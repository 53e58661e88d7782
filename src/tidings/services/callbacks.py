"""What client applications set and see of their callbacks."""

from __future__ import annotations

import secrets
from typing import Any

from tidings import ids
from tidings.errors import NotFound
from tidings.store import Store
from tidings.worker.wakeup import Waker

SECRET_PREFIX = "whsec_"


class CallbackService:
    def __init__(self, store: Store, waker: Waker) -> None:
        self.store = store
        self.waker = waker

    async def settings(self, api_key_id: str) -> dict[str, str | None]:
        """The key's default callback URL and the secret its callbacks are signed with."""
        url, secret = await self.store.callbacks.key_settings(api_key_id)
        return {"url": url, "secret": secret}

    async def set_url(self, api_key_id: str, url: str | None) -> dict[str, str | None]:
        """Set (or with ``None`` clear) the key's default callback URL; a signing secret is made
        the first time and kept."""
        await self.store.callbacks.set_key_url(api_key_id, url, SECRET_PREFIX + secrets.token_urlsafe(32))
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
