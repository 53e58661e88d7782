"""Time: the database stores naive UTC; the API speaks ISO 8601 with an offset."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the database stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_db(value: datetime) -> datetime:
    """An aware or naive-UTC datetime as naive UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def to_api(value: datetime | None) -> str | None:
    """A stored naive-UTC datetime as ISO 8601 with a ``Z``."""
    if value is None:
        return None
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def utc_field(value: datetime | None, field: str) -> datetime | None:
    """A client-given time as naive UTC; 422 naming ``field`` when it cannot be one."""
    if value is None:
        return None
    try:
        return to_db(value)
    except OverflowError as exc:
        from tidings.errors import InvalidInput

        raise InvalidInput(f"{field} is out of range once converted to UTC", field=field) from exc
