"""What every request body shares, whichever transport brings it (REST, the CLI, gRPC): unknown
fields refused, text every database can store, times that are times."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

from tidings.errors import unstorable


def _storable(value: Any) -> None:
    if isinstance(value, str):
        reason = unstorable(value)
        if reason is not None:
            raise ValueError(reason)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _not_a_number(value: Any) -> Any:
    # pydantic reads a number, or the text of one, as seconds since 1970: `until=2025` would be
    # a moment on 1 January 1970.
    if (isinstance(value, int | float) and not isinstance(value, bool)) or (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())
    ):
        raise ValueError("must be an ISO 8601 time (2025-03-14T09:26:53Z), not a number")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_not_a_number)]
"""A time a client gives: ISO 8601, with an offset or in UTC without one; not a number."""

TIME_PARAMETER = "ISO 8601 (2025-03-14T09:26:53Z); no offset means UTC."


class RequestModel(BaseModel):
    """A request body: unknown fields are refused, and so is text no database can store (NUL,
    unpaired surrogates) anywhere in it."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _text_is_storable(cls, value: Any) -> Any:
        _storable(value)
        return value
