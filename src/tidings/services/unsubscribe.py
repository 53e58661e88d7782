"""One-click unsubscribe (RFC 8058) for the email tidings sends in bulk.

Every email of a batch carries ``List-Unsubscribe: <https://…/unsubscribe/{id}/{signature}>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; mailbox providers show an "Unsubscribe"
button that POSTs to that URL. The signature is an HMAC of the message id with the installation's
own secret, so a link cannot be made for a message it does not name. A valid POST puts the
address on the suppression list for that message's sender (the opt-out list of the email
channel), cancels what still waits for it, and is logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from dataclasses import dataclass

from tidings import ids
from tidings.clock import utcnow
from tidings.domain.content import Channel
from tidings.errors import NotFound, WebhookUnauthorized
from tidings.store import Store, optouts
from tidings.store import messages as message_rows

log = logging.getLogger(__name__)

SECRET_NAME = "unsubscribe"
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class UnsubscribeLinks:
    base_url: str
    secret: str

    def signature(self, message_id: str) -> str:
        digest = hmac.new(self.secret.encode(), message_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def url(self, message_id: str) -> str:
        return f"{self.base_url}/unsubscribe/{message_id}/{self.signature(message_id)}"

    def headers(self, message_id: str) -> dict[str, str]:
        """The headers of one email: where to unsubscribe, and that one POST does it."""
        return {"List-Unsubscribe": f"<{self.url(message_id)}>", "List-Unsubscribe-Post": ONE_CLICK}

    def valid(self, message_id: str, signature: str) -> bool:
        return signature.isascii() and hmac.compare_digest(self.signature(message_id), signature)


class UnsubscribeService:
    def __init__(self, store: Store, base_url: str) -> None:
        self.store = store
        self.base_url = base_url.rstrip("/")
        self._links: UnsubscribeLinks | None = None

    async def links(self) -> UnsubscribeLinks:
        if self._links is None:
            self._links = UnsubscribeLinks(self.base_url, await self.store.secrets.get(SECRET_NAME))
        return self._links

    async def unsubscribe(self, message_id: str, signature: str, *, peer: str | None = None) -> str:
        """Suppress the address of ``message_id`` for its sender; returns the address.
        :class:`WebhookUnauthorized` for a signature that is not ours, :class:`NotFound` for a
        message that is not (or no longer) there."""
        links = await self.links()
        if not ids.is_id(message_id) or not links.valid(message_id, signature):
            log.warning(
                "unsubscribe link with a wrong signature refused",
                extra={"action": "unsubscribe", "message_id": message_id[:64], "client": peer},
            )
            raise WebhookUnauthorized("this unsubscribe link is not valid")
        row = await self.store.messages.get(message_id)
        if row is None or row["channel"] != Channel.EMAIL.value:
            raise NotFound("this unsubscribe link is for no message here")
        scope = row["sender"] or message_rows.ALL_SENDERS
        now = utcnow()
        async with self.store.transaction() as conn:
            added, cancelled = await optouts.suppress(
                conn,
                Channel.EMAIL.value,
                row["to"],
                scope,
                source="unsubscribe",
                cancel_source="unsubscribe",
                reason="the recipient unsubscribed",
                note=message_id,
                now=now,
            )
        log.info(
            "%s unsubscribed from %s (one-click link of message %s)",
            row["to"],
            scope,
            message_id,
            extra={
                "action": "unsubscribe",
                "message_id": message_id,
                "new": added,
                "cancelled": len(cancelled),
                "client": peer,
            },
        )
        return str(row["to"])
