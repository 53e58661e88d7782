"""Every exception tidings raises, in one tree.

Each class has a stable ``code`` (the ``error.code`` of API answers) and an HTTP status, and its
docstring's first line is its default message. Errors from libraries underneath (aiohttp,
SQLAlchemy, asyncpg) are translated at the boundary that meets them, with ``raise … from exc``.

    TidingsError                     500 internal_error
    ├── ConfigError                  a setting is missing or wrong; start-up stops
    ├── InvalidInput                 422: a field of a request is not acceptable
    │   ├── ValidationFailed         missing, of the wrong type or out of range (the request model)
    │   ├── InvalidPhoneNumber
    │   ├── InvalidEmailAddress
    │   ├── InvalidAttachment
    │   ├── BodyTooLong
    │   ├── RecipientOptedOut
    │   ├── CallbackUrlNotAllowed
    │   ├── InvalidTemplate          a template does not compile or is refused by the sandbox
    │   ├── RenderFailed             a template could not be rendered for a recipient
    │   ├── BatchRefused             no recipient of a batch could be accepted
    │   └── TooManyRecipients        a batch has more recipients than allowed
    ├── BadRequest                   400: the request cannot be read (bad JSON, bad cursor)
    ├── Unauthorized                 401: missing, unknown or revoked API key
    ├── Forbidden                    403: the API key may not do this (its scopes)
    ├── RateLimited                  429: the API key sent more requests a second than it may
    ├── NotFound                     404
    ├── Conflict                     409
    │   ├── IdempotencyConflict
    │   ├── NotCancellable
    │   └── SignatureReused          a signed request's signature was already used
    ├── PayloadTooLarge              413
    ├── UnsupportedMediaType         415: a body in a format the operation does not read
    ├── DatabaseUnavailable          503: the database cannot be reached (retry after a moment)
    ├── WebhookRejected              400: a provider's webhook request was refused
    │   ├── WebhookUnauthorized      403: its signature (or token) does not verify
    │   ├── AddressNotAllowed        403: it comes from outside the provider's allowlist
    │   ├── WebhookUnknownEvent      404: the provider has no such webhook
    │   ├── WebhookTooLarge          413
    │   └── WebhookMediaType         415
    ├── GatewayProtocolError         400: not a request the Android gateway app sends
    └── ProviderError                a provider did not accept a message (raised by adapters)
        ├── TemporaryProviderError   429, 5xx, timeouts, connection errors: retried with back-off
        └── PermanentProviderError   refused for good: the message fails at once
"""

from __future__ import annotations

from typing import Any, ClassVar


class TidingsError(Exception):
    """Something went wrong in tidings."""

    code: str = "internal_error"
    http_status: int = 500
    retry_after: float | None = None
    """Seconds a client should wait before trying again (sent as ``Retry-After``), when it says."""

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

    def __init__(
        self, message: str | None = None, *, field: str | None = None, problems: list[str] | None = None
    ) -> None:
        super().__init__(message or "; ".join(problems or []) or None, field=field)
        self.problems = problems or [self.message]
        """Each problem on its own line: what ``tidings config check`` prints."""


class InvalidInput(TidingsError):
    """A field of the request is not acceptable."""

    code = "invalid_input"
    http_status = 422


class ValidationFailed(InvalidInput):
    """A field of the request is missing, of the wrong type or out of range."""

    code = "validation_error"


class InvalidPhoneNumber(InvalidInput):
    """The phone number is not a valid number."""

    code = "invalid_phone_number"


class InvalidEmailAddress(InvalidInput):
    """The email address is not a valid address."""

    code = "invalid_email_address"


class InvalidAttachment(InvalidInput):
    """An attachment is not acceptable (its content, its size, or how many there are)."""

    code = "invalid_attachment"


class BodyTooLong(InvalidInput):
    """The message body is longer than allowed."""

    code = "body_too_long"


class RecipientOptedOut(InvalidInput):
    """The recipient opted out of messages."""

    code = "recipient_opted_out"


class CallbackUrlNotAllowed(InvalidInput):
    """Callbacks may not go to this address."""

    code = "callback_url_not_allowed"


class InvalidTemplate(InvalidInput):
    """The template does not compile."""

    code = "invalid_template"


class RenderFailed(InvalidInput):
    """The template could not be rendered for this recipient."""

    code = "render_failed"


class BatchRefused(InvalidInput):
    """No recipient of the batch could be accepted; nothing was stored."""

    code = "batch_refused"


class TooManyRecipients(InvalidInput):
    """The batch has more recipients than allowed."""

    code = "too_many_recipients"


class BadRequest(TidingsError):
    """The request could not be read."""

    code = "bad_request"
    http_status = 400


class Unauthorized(TidingsError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""

    code = "unauthorized"
    http_status = 401


class Forbidden(TidingsError):
    """This API key may not do that."""

    code = "insufficient_scope"
    http_status = 403


class RateLimited(TidingsError):
    """Too many requests from this API key: slow down."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


class SignatureReused(Conflict):
    """This request signature was already used; sign each request anew."""

    code = "signature_reused"


class PayloadTooLarge(TidingsError):
    """The request body is larger than allowed."""

    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(TidingsError):
    """The request body's Content-Type is not one this operation reads."""

    code = "unsupported_media_type"
    http_status = 415


class DatabaseUnavailable(TidingsError):
    """The database cannot be reached right now; nothing was stored. Retry in a moment."""

    code = "database_unavailable"
    http_status = 503
    retry_after = 1


class WebhookRejected(TidingsError):
    """The webhook could not be accepted."""

    code = "webhook_rejected"
    http_status = 400


class WebhookUnauthorized(WebhookRejected):
    """The webhook's signature does not verify."""

    code = "invalid_signature"
    http_status = 403


class AddressNotAllowed(WebhookRejected):
    """The request does not come from an address this provider's webhooks may come from."""

    code = "address_not_allowed"
    http_status = 403


class WebhookUnknownEvent(WebhookRejected):
    """This provider has no such webhook."""

    code = "not_found"
    http_status = 404


class WebhookTooLarge(WebhookRejected):
    """The webhook body is larger than this provider's limit."""

    code = "payload_too_large"
    http_status = 413


class WebhookMediaType(WebhookRejected):
    """The webhook's content type is not the one this provider sends."""

    code = "unsupported_media_type"
    http_status = 415


class GatewayProtocolError(TidingsError):
    """The request is not one the gateway app sends."""

    code = "bad_request"
    http_status = 400


class ProviderError(TidingsError):
    """The provider did not accept the message.

    ``code`` is the provider's own error code (``21211``, ``SVC0004``, ``http_503``…), ``raw``
    its answer, ``retry_after`` the seconds it asked us to wait, if it said.
    """

    temporary: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        raw: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        # Instances carry the provider's code; the class's is the fallback.
        self.code = code if code is not None else type(self).code
        self.raw = raw or {}
        self.retry_after = retry_after


class TemporaryProviderError(ProviderError):
    """Try again later."""

    code = "provider_unavailable"
    temporary = True


class PermanentProviderError(ProviderError):
    """Do not try again."""

    code = "provider_refused"


def unstorable(value: str) -> str | None:
    """Why no database could store ``value`` as text, or ``None`` when it can: a NUL character
    (PostgreSQL refuses it) or an unpaired surrogate (not UTF-8 at all)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds an unpaired surrogate)"
    return None


def printable(value: str | None, field: str) -> str | None:
    """``value`` unchanged, or :class:`InvalidInput` naming ``field`` when no database could store
    it (see :func:`unstorable`)."""
    if value is not None:
        reason = unstorable(value)
        if reason is not None:
            raise InvalidInput(f"{field} {reason}", field=field)
    return value


def printable_json(value: object, field: str) -> None:
    """:func:`printable` for every key and string inside a JSON value."""
    if isinstance(value, str):
        printable(value, field)
    elif isinstance(value, dict):
        for key, item in value.items():
            printable(str(key), field)
            printable_json(item, field)
    elif isinstance(value, list):
        for item in value:
            printable_json(item, field)
