"""Exceptions raised by tidings.

Every exception derives from :class:`TidingsError`. Each carries a stable ``code`` (used as the
``error.code`` of API responses) and an HTTP status. The docstring of each class is its default
message.

    TidingsError
    ├── ConfigError            a setting is missing or wrong; start-up stops
    ├── InvalidInput           422: a field of a request is not acceptable
    │   ├── InvalidPhoneNumber
    │   └── BodyTooLong
    ├── BadRequest             400: the request cannot be read (bad JSON, bad cursor)
    ├── Unauthorized           401: missing, unknown or revoked API key
    ├── NotFound               404
    ├── Conflict               409
    │   ├── IdempotencyConflict
    │   └── NotCancellable
    └── PayloadTooLarge        413
"""

from __future__ import annotations


class TidingsError(Exception):
    """Something went wrong in tidings."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.field = field
        super().__init__(self.message)

    def to_dict(self) -> dict[str, object]:
        """The JSON error body returned by the API."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class ConfigError(TidingsError):
    """A setting is missing or invalid."""

    code = "config_error"


class InvalidInput(TidingsError):
    """A field of the request is not acceptable."""

    code = "invalid_input"
    http_status = 422


class InvalidPhoneNumber(InvalidInput):
    """The phone number is not a valid number."""

    code = "invalid_phone_number"


class BodyTooLong(InvalidInput):
    """The message body is longer than allowed."""

    code = "body_too_long"


class RecipientOptedOut(InvalidInput):
    """The recipient opted out of messages."""

    code = "recipient_opted_out"


class BadRequest(TidingsError):
    """The request could not be read."""

    code = "bad_request"
    http_status = 400


class Unauthorized(TidingsError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""

    code = "unauthorized"
    http_status = 401


class NotFound(TidingsError):
    """No such resource."""

    code = "not_found"
    http_status = 404


class Conflict(TidingsError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409


class IdempotencyConflict(Conflict):
    """This Idempotency-Key was already used with a different request body."""

    code = "idempotency_conflict"


class NotCancellable(Conflict):
    """The message can no longer be cancelled."""

    code = "not_cancellable"


class PayloadTooLarge(TidingsError):
    """The request body is larger than allowed."""

    code = "payload_too_large"
    http_status = 413


def printable(value: str | None, field: str) -> str | None:
    """``value`` unchanged, or :class:`InvalidInput` when it holds a NUL (no database stores one)."""
    if value is not None and "\x00" in value:
        raise InvalidInput(f"{field} must not contain NUL characters", field=field)
    return value
