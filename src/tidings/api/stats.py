"""``/v1/stats``: what was sent, delivered and failed, what it cost and how long it took, over a
time range and grouped; ``/v1/stats/webhooks``: how webhook processing went."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from tidings.api.auth import Reader
from tidings.api.common import AUTHENTICATED, PARAMETERS, ServiceDep, errors, json_response
from tidings.api.schemas import StatsOut, WebhookStatsOut
from tidings.clock import utc_field
from tidings.domain.content import Channel
from tidings.domain.requests import TIME_PARAMETER, Timestamp
from tidings.errors import InvalidInput, printable
from tidings.store.stats import GROUP_KEYS

router = APIRouter(tags=["stats"])

_BY = f"Group by any of {', '.join(GROUP_KEYS)}: repeat the parameter or separate with commas."
_SINCE = f"Start of the range (required). {TIME_PARAMETER}"
_UNTIL = f"End of the range, excluded (default: now). {TIME_PARAMETER}"


@router.get(
    "/v1/stats",
    operation_id="getStats",
    response_model=StatsOut,
    responses=errors(*AUTHENTICATED, *PARAMETERS, InvalidInput),
)
async def stats(
    _key: Reader,
    service: ServiceDep,
    since: Annotated[Timestamp | None, Query(description=_SINCE)] = None,
    until: Annotated[Timestamp | None, Query(description=_UNTIL)] = None,
    by: Annotated[list[str], Query(max_length=len(GROUP_KEYS), description=_BY)] = [],  # noqa: B006
    provider: Annotated[str | None, Query(max_length=64)] = None,
    channel: Channel | None = None,
    batch: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Counts by status, delivery and failure rate, pending, segments, cost, and the median and
    95th percentile time from acceptance to sent and to delivered, for the messages accepted in
    the range: in total, and per group of the ``by`` keys."""
    figures = await service.stats.messages(
        since=utc_field(since, "since"),
        until=utc_field(until, "until"),
        by=[printable(b, "by") or "" for b in by],
        provider=printable(provider, "provider"),
        channel=channel.value if channel else None,
        batch=printable(batch, "batch"),
    )
    return json_response(figures)


@router.get(
    "/v1/stats/webhooks",
    operation_id="getWebhookStats",
    response_model=WebhookStatsOut,
    responses=errors(*AUTHENTICATED, *PARAMETERS, InvalidInput),
)
async def webhook_stats(
    _key: Reader,
    service: ServiceDep,
    since: Annotated[Timestamp | None, Query(description=_SINCE)] = None,
    until: Annotated[Timestamp | None, Query(description=_UNTIL)] = None,
) -> Response:
    """Per provider and event: webhooks received, processed, rejected, failed and unfinished, and
    the mean and 95th percentile processing time (seed 002's webhook performance query)."""
    figures = await service.stats.webhooks(since=utc_field(since, "since"), until=utc_field(until, "until"))
    return json_response(figures)
