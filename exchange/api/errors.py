"""One place that turns every failure into problem+json: domain refusals, the framework's own
errors (404, 405, 422), database trouble (503, retry), and bugs (500, with nothing inside shown).

The handlers here run inside routing. On /v1/ the gateway (exchange.api.gateway) also answers
whatever escapes them, and whatever fails before routing (authentication's database work), with
`failure_response`, so that even a bug's 500 is signed and carries the request id."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from core.errors import DomainError
from exchange.api.problems import problem_response
from exchange.api.validation import fields_from_errors, names_only_impossible_ids
from exchange.idempotency import RefusalReplayed

log = structlog.get_logger("exchange.api")

CODE_BY_HTTP_STATUS = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
}

TRANSIENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
    # 53xxx: too many connections, out of memory or disk; 57xxx: a statement cancelled by its
    # timeout, a server shutting down or starting up; 08xxx: a connection lost.
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresConnectionError,
    # The pool's side: a connection refused, reset or timed out (ConnectionError and the rest).
    OSError,
    TimeoutError,
)
"""Failures a retry can outlive: answered 503 with Retry-After, never 500."""


def _extras(error: DomainError) -> dict[str, Any]:
    extras = dict(error.extra)
    if "field" in extras and "fields" not in extras:
        extras["fields"] = {str(extras.pop("field")): "invalid"}
    return extras


async def on_domain_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, DomainError)
    # A key's first refusal again (ADR 0013): the same problem, flagged as a replay.
    replayed = {"Idempotency-Replayed": "true"} if isinstance(error, RefusalReplayed) else None
    return problem_response(error.code, error.detail, headers=replayed, **_extras(error))


async def on_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    if names_only_impossible_ids(error.errors()):
        # Ids are opaque to a client (PROTOCOL.md), so an id the exchange cannot have issued is
        # not malformed: nothing exists under it. Refused here, before any database lookup.
        return problem_response("not_found", "no such resource")
    return problem_response(
        "validation_error",
        "the request is malformed; see fields",
        fields=fields_from_errors(error.errors()),
    )


async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    # Any other client error the framework raises (400: a body that is not JSON, or not UTF-8)
    # is a malformed request; only a server-side failure may ever answer 5xx.
    fallback = "validation_error" if 400 <= error.status_code < 500 else "internal_error"
    code = CODE_BY_HTTP_STATUS.get(error.status_code, fallback)
    detail = {
        "not_found": "no such resource",
        "method_not_allowed": "this method is not allowed here",
        "validation_error": "the request body is not valid JSON",
    }.get(code, "the request cannot be served")
    return problem_response(code, detail, headers=error.headers)


CAUSE_CHAIN_MAX = 8
"""Links of an exception's cause/context chain looked at for a transient error."""


def is_transient(error: BaseException) -> bool:
    """Whether a retry can outlive `error`: it, or an error it was raised from or while
    handling, is one of TRANSIENT_DATABASE_ERRORS. A connection lost mid-transaction surfaces
    as asyncpg's InterfaceError from the transaction's exit ("the underlying connection is
    closed"), with the connection error as its context: retrying with the same key is safe, as
    the key replays whatever committed."""
    current: BaseException | None = error
    for _ in range(CAUSE_CHAIN_MAX):
        if current is None:
            return False
        if isinstance(current, TRANSIENT_DATABASE_ERRORS):
            return True
        current = current.__cause__ or current.__context__
    return False


def failure_response(error: Exception, *, request_id: str | None = None) -> Response:
    """The answer to an exception no handler took: 503 with Retry-After if a retry can outlive
    it (`is_transient`), else a 500. Either way logged, and nothing of it shown."""
    if is_transient(error):
        log.warning("database_unavailable", error=type(error).__name__, request_id=request_id)
        return problem_response(
            "service_unavailable",
            "the ledger is briefly unavailable; retry with the same key",
            headers={"Retry-After": "1"},
        )
    log.error("unexpected_error", error=type(error).__name__, request_id=request_id, exc_info=error)
    return problem_response("internal_error", "an internal error occurred; it has been logged")


def _request_id(request: Request) -> str | None:
    request_id: str | None = getattr(request.state, "request_id", None)
    return request_id


async def on_transient_database_error(request: Request, error: Exception) -> Response:
    return failure_response(error, request_id=_request_id(request))


async def on_unexpected_error(request: Request, error: Exception) -> Response:
    """Outside /v1/ only in practice: Starlette runs this handler outermost, outside the
    gateway and the request id, so /v1/ failures are answered by the gateway instead."""
    return failure_response(error, request_id=_request_id(request))


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for error_type in TRANSIENT_DATABASE_ERRORS:
        app.add_exception_handler(error_type, on_transient_database_error)
    app.add_exception_handler(Exception, on_unexpected_error)
