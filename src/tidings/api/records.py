"""Inbound messages, opt-outs, the message log and callbacks: the API beside messages."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from tidings import ids
from tidings.api.auth import Authenticated
from tidings.clock import to_api, utc_field
from tidings.domain.phone import normalize_e164
from tidings.errors import BadRequest, NotFound, printable
from tidings.service import Service
from tidings.store.log import Kind, LogFilter
from tidings.store.optouts import ALL_SENDERS

URL_PATTERN = r"^https?://[^\s]+$"


class OptOutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=64)
    sender: str | None = Field(
        default=None, max_length=64, description="Only from this sender (default: all)."
    )
    note: str | None = Field(default=None, max_length=1000)


class CallbackSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        max_length=2048, pattern=URL_PATTERN, description="Where callbacks go; null: none."
    )


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _times(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: (to_api(v) if k in names else v) for k, v in row.items()}


def _cursor(at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = raw.split("|", 1)
        return datetime.fromisoformat(at), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this API gave out", field="cursor") from exc


def add_record_routes(app: FastAPI, service: Service) -> None:
    region = service.settings.default_region

    @app.get("/v1/inbound", tags=["inbound"])
    async def list_inbound(
        _key: Authenticated,
        sender: Annotated[str | None, Query(alias="from", max_length=64)] = None,
        to: Annotated[str | None, Query(max_length=64)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """Inbound SMS from every provider, newest first; pass ``next_cursor`` back as ``cursor``."""
        if cursor is not None and not ids.is_id(cursor):
            raise BadRequest("cursor is not one this API gave out", field="cursor")
        rows = await service.store.inbound.search(
            sender=printable(sender, "from"),
            to=printable(to, "to"),
            since=utc_field(since, "since"),
            until=utc_field(until, "until"),
            after_id=cursor,
            limit=limit + 1,
        )
        page = rows[:limit]
        data = [_times(r, "sent_at", "received_at") for r in page]
        return _json({"data": data, "next_cursor": page[-1]["id"] if len(rows) > limit else None})

    @app.get("/v1/opt-outs", tags=["opt-outs"])
    async def list_opt_outs(
        _key: Authenticated,
        number: Annotated[str | None, Query(max_length=64)] = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """Numbers that opted out, newest first."""
        if cursor is not None and not ids.is_id(cursor):
            raise BadRequest("cursor is not one this API gave out", field="cursor")
        wanted = normalize_e164(number, region) if number else None
        rows = await service.store.opt_outs.search(number=wanted, after_id=cursor, limit=limit + 1)
        page = rows[:limit]
        return _json(
            {
                "data": [_times(r, "created_at") for r in page],
                "next_cursor": page[-1]["id"] if len(rows) > limit else None,
            }
        )

    @app.post("/v1/opt-outs", tags=["opt-outs"])
    async def add_opt_out(payload: OptOutIn, _key: Authenticated) -> Response:
        """Opt a number out (e.g. a patient who asked on paper): its waiting messages are
        cancelled and new ones refused. 201 when added, 200 when it was already there."""
        number = normalize_e164(payload.number, region)
        scope = printable(payload.sender, "sender") or ALL_SENDERS
        created, cancelled = await service.store.opt_outs.add(number, scope, note=payload.note)
        return _json(
            {"number": number, "scope": scope, "created": created, "cancelled_messages": cancelled},
            201 if created else 200,
        )

    @app.delete("/v1/opt-outs/{number}", tags=["opt-outs"])
    async def remove_opt_out(
        number: Annotated[str, Path(max_length=64)],
        _key: Authenticated,
        sender: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        """Opt a number back in (for one sender, or for all)."""
        normalized = normalize_e164(number, region)
        removed = await service.store.opt_outs.remove(normalized, printable(sender, "sender"))
        if not removed:
            raise NotFound(f"{normalized} has not opted out")
        return Response(status_code=204)

    @app.get("/v1/log", tags=["log"])
    async def message_log(
        _key: Authenticated,
        kind: Kind | None = None,
        number: Annotated[str | None, Query(max_length=64)] = None,
        message_id: Annotated[str | None, Query(max_length=64)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """Everything that crossed the wire, newest first: ``OUTBOUND`` (send attempts and the
        provider's answer), ``INBOUND`` and ``STATUS_UPDATE`` (receipts with their raw status)."""
        filters = LogFilter(
            kind=kind,
            number=normalize_e164(number, region) if number else None,
            message_id=printable(message_id, "message_id"),
            since=utc_field(since, "since"),
            until=utc_field(until, "until"),
        )
        before = _read_cursor(cursor) if cursor else None
        rows = await service.store.log.search(filters, before=before, limit=limit + 1)
        page = rows[:limit]
        next_cursor = _cursor(page[-1]["at"], page[-1]["id"]) if len(rows) > limit else None
        return _json({"data": [_times(r, "at") for r in page], "next_cursor": next_cursor})

    @app.get("/v1/callbacks", tags=["callbacks"])
    async def list_callbacks(
        _key: Authenticated,
        status: Annotated[str | None, Query(pattern="^(pending|delivering|delivered|failed)$")] = None,
        message_id: Annotated[str | None, Query(max_length=64)] = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Response:
        """Callbacks, newest first: what was sent where, and whether it arrived."""
        if cursor is not None and not ids.is_id(cursor):
            raise BadRequest("cursor is not one this API gave out", field="cursor")
        rows = await service.store.callbacks.search(
            status=status, message_id=printable(message_id, "message_id"), before_id=cursor, limit=limit + 1
        )
        page = rows[:limit]
        times = ("next_attempt_at", "lease_expires_at", "created_at", "updated_at", "delivered_at")
        return _json(
            {
                "data": [_times(r, *times) for r in page],
                "next_cursor": page[-1]["id"] if len(rows) > limit else None,
            }
        )

    @app.post("/v1/callbacks/{callback_id}/retry", tags=["callbacks"])
    async def retry_callback(
        callback_id: Annotated[str, Path(max_length=64)], _key: Authenticated
    ) -> Response:
        """Queue a failed callback again, with a fresh set of attempts."""
        if not ids.is_id(callback_id):
            raise NotFound(f"no callback {callback_id}")
        row = await service.store.callbacks.retry(callback_id)
        service.waker.notify()
        return _json(
            _times(row, "next_attempt_at", "lease_expires_at", "created_at", "updated_at", "delivered_at")
        )

    @app.get("/v1/callback-settings", tags=["callbacks"])
    async def get_callback_settings(key: Authenticated) -> Response:
        """This API key's default callback URL and the secret its callbacks are signed with."""
        url, secret = await service.store.callbacks.key_settings(key.id)
        return _json({"url": url, "secret": secret})

    @app.put("/v1/callback-settings", tags=["callbacks"])
    async def set_callback_settings(payload: CallbackSettingsIn, key: Authenticated) -> Response:
        """Set (or with ``null`` clear) this key's default callback URL; a signing secret is made
        the first time and kept."""
        await service.store.callbacks.set_key_url(key.id, payload.url, "whsec_" + secrets.token_urlsafe(32))
        url, secret = await service.store.callbacks.key_settings(key.id)
        return _json({"url": url, "secret": secret})
