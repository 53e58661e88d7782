"""Statistics about what was sent, for the API, the CLI and the alert rules: one range check, one
shape of answer (the definitions themselves are in ``store/stats.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import phonenumbers

from tidings.clock import to_api, utcnow
from tidings.domain.costs import format_micros
from tidings.errors import InvalidInput
from tidings.store import Store
from tidings.store import stats as aggregates
from tidings.store.stats import GROUP_KEYS, PERCENTILES, Group, StatsFilter


def _rate(value: float | None) -> float | None:
    return round(value, 6) if value is not None else None


def _key_json(key: dict[str, Any]) -> dict[str, Any]:
    out = dict(key)
    if "country" in out:
        code = out.pop("country")
        region = phonenumbers.region_code_for_country_code(int(code)) if code and code.isdigit() else None
        out["country"] = region if region not in (None, "ZZ") else None
        out["calling_code"] = f"+{code}" if code else None
    return out


def _times(found: dict[int, float]) -> dict[str, float | None]:
    return {f"p{p}": found.get(p) for p in PERCENTILES}


def group_json(group: Group) -> dict[str, Any]:
    """A group's figures as the API gives them."""
    totals = group.totals
    return {
        "key": _key_json(group.key),
        "total": totals.total,
        "counts": dict(sorted(group.counts.items())),
        "delivered": totals.delivered,
        "failed": totals.failed,
        "cancelled": totals.cancelled,
        "pending": totals.pending,
        "delivery_rate": _rate(totals.delivery_rate),
        "failure_rate": _rate(totals.failure_rate),
        "segments": group.segments,
        "cost": {currency: format_micros(micros) for currency, micros in sorted(group.costs.items())},
        "seconds_to_sent": _times(group.to_sent),
        "seconds_to_delivered": _times(group.to_delivered),
    }


class StatsService:
    def __init__(self, store: Store, max_days: float) -> None:
        self.store = store
        self.max_days = max_days

    def check_range(self, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
        """``[since, until)`` as asked (``until`` defaults to now); a 422 naming the field for a
        range that is open, inverted or longer than ``stats_max_days``."""
        if since is None:
            raise InvalidInput("since is required: statistics cover a bounded time range", field="since")
        until = until or utcnow()
        if since >= until:
            raise InvalidInput("until must be after since", field="until")
        if until - since > timedelta(days=self.max_days):
            raise InvalidInput(
                f"the range is longer than {self.max_days:g} days (setting stats_max_days)", field="since"
            )
        return since, until

    @staticmethod
    def check_by(by: Sequence[str]) -> list[str]:
        """The group keys, each once, in order; a 422 naming ``by`` for an unknown one."""
        keys: list[str] = []
        for part in (p.strip() for item in by for p in item.split(",")):
            if not part:
                continue
            if part not in GROUP_KEYS:
                known = ", ".join(GROUP_KEYS)
                raise InvalidInput(f"cannot group by {part!r}; use any of {known}", field="by")
            if part not in keys:
                keys.append(part)
        if "day" in keys and "hour" in keys:
            raise InvalidInput("group by day or by hour, not both", field="by")
        return keys

    async def messages(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        by: Sequence[str] = (),
        provider: str | None = None,
        channel: str | None = None,
        batch: str | None = None,
        times: bool = True,
    ) -> dict[str, Any]:
        """The figures of the messages accepted in the range, in total and per group; without
        ``times``, no percentiles of time to sent and to delivered (``None``), which costs less."""
        start, end = self.check_range(since, until)
        keys = self.check_by(by)
        filters = StatsFilter(start, end, provider=provider, channel=channel, batch=batch)
        async with self.store.engine.connect() as conn:
            total, groups = await aggregates.summarize(conn, filters, keys, times=times)
        return {
            "since": to_api(start),
            "until": to_api(end),
            "by": keys,
            "totals": {k: v for k, v in group_json(total).items() if k != "key"},
            "groups": [group_json(g) for g in groups],
        }

    async def webhooks(self, *, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        """Webhook processing per provider and event in the range."""
        start, end = self.check_range(since, until)
        async with self.store.engine.connect() as conn:
            groups = await aggregates.webhooks(conn, start, end)
        return {
            "since": to_api(start),
            "until": to_api(end),
            "data": [vars(g) for g in groups],
        }
