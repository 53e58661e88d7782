"""Errors as gRPC statuses: the code by the REST status it stands for, and in the details a
``google.rpc.ErrorInfo`` whose ``reason`` is the REST API's stable error code (``domain``
``tidings``; ``metadata["field"]`` names the field at fault), with a ``google.rpc.RetryInfo``
when the client should wait before trying again."""

from __future__ import annotations

import logging
import math
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from pydantic import ValidationError

from tidings.api.app import validation_failure
from tidings.errors import DatabaseUnavailable, IdempotencyConflict, TidingsError
from tidings.store.db import unreachable

log = logging.getLogger(__name__)

DOMAIN = "tidings"

BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
BY_ERROR_CODE = {IdempotencyConflict.code: grpc.StatusCode.ALREADY_EXISTS}
"""Where the REST status is too coarse (409 is also a message that can no longer be cancelled)."""


def as_error(exc: BaseException) -> TidingsError:
    """The error contract's error for anything a handler raised (logged when unexpected)."""
    if isinstance(exc, TidingsError):
        return exc
    if isinstance(exc, ValidationError):
        return validation_failure(exc.errors(include_url=False, include_context=False))
    if unreachable(exc):
        log.warning("database unreachable: %s", exc, extra={"action": "grpc"})
        return DatabaseUnavailable()
    log.error("unexpected error answering a gRPC call", exc_info=exc, extra={"action": "grpc"})
    return TidingsError("internal error; the call may be retried")


def status_code(error: TidingsError) -> grpc.StatusCode:
    return BY_ERROR_CODE.get(error.code) or BY_HTTP_STATUS.get(error.http_status, grpc.StatusCode.INTERNAL)


def to_status(error: TidingsError) -> grpc.Status:
    """The status a call ends with for ``error``, its details included."""
    code = status_code(error)
    info = error_details_pb2.ErrorInfo(reason=error.code, domain=DOMAIN)
    if error.field:
        info.metadata["field"] = error.field
    details = [any_pb2.Any()]
    details[0].Pack(info)
    if error.retry_after is not None:
        wait = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=max(1, math.ceil(error.retry_after)))
        )
        details.append(any_pb2.Any())
        details[1].Pack(wait)
    number = code.value[0]
    assert code_pb2.Code.Name(number)  # the same numbering as google.rpc.Code
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=number, message=error.message, details=details)
    )
    return status


def error_info(status: Any) -> Any:
    """The ErrorInfo of a status's details (for clients), if there is one."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
