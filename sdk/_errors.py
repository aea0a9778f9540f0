"""What the client raises: one class per problem `code` of PROTOCOL.md, grouped by status.

    AllianceError
    ├── APIConnectionError            the exchange could not be reached (after every retry)
    │   └── APITimeoutError
    ├── ResponseVerificationError     a response not signed by the exchange, or altered
    ├── UnexpectedResponseError       a response this client cannot read
    └── APIStatusError                the exchange answered a problem (RFC 9457)
        ├── AuthenticationError (401) SignatureMissingError, SignatureInvalidError,
        │                             SignatureExpiredError, UnknownKeyError, KeyRevokedError,
        │                             ReplayedRequestError
        ├── PermissionDeniedError (403)  MerchantSuspendedError
        ├── NotFoundError (404)
        ├── MethodNotAllowedError (405)
        ├── ConflictError (409)       InsufficientPointsError, LiabilityLimitExceededError,
        │                             IdempotencyKeyInFlightError, HoldNotActiveError,
        │                             ReversalExceedsOriginalError
        ├── PayloadTooLargeError (413)
        ├── UnsupportedMediaTypeError (415)
        ├── UnprocessableEntityError (422)  IdempotencyKeyReusedError, ValidationError
        ├── RateLimitedError (429)
        └── ServerError (5xx)         InternalServerError, AllianceNotConfiguredError,
                                      ServiceUnavailableError

Every error of a POST carries the call's `idempotency_key`: calling again with it is always safe,
and is how to find out whether a call whose answer was lost was applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AllianceError(Exception):
    """Base of everything the client raises.

    `status` and `code` are the HTTP status and the problem's stable `code` (None when the
    exchange gave none), `detail` its human explanation, `request_id` the exchange's
    `X-Request-Id` for support, `problem` the whole problem body (extra members included), and
    `idempotency_key` the key the call was sent with (POSTs only).
    """

    code: str | None = None
    status: int | None

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        problem: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code if code is not None else type(self).code
        self.request_id = request_id
        self.problem: Mapping[str, Any] = problem or {}
        self.idempotency_key = idempotency_key

    def __str__(self) -> str:
        prefix = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        return f"{prefix}: {self.detail}" if prefix else self.detail

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"detail={self.detail!r}, request_id={self.request_id!r})"
        )


# --- The call never got a trustworthy answer ---------------------------------------------------


class APIConnectionError(AllianceError):
    """The exchange could not be reached, or the connection broke, on every attempt."""


class APITimeoutError(APIConnectionError):
    """The last attempt timed out."""


class ResponseVerificationError(AllianceError):
    """A response's signature is missing, does not verify against the exchange's published keys,
    or does not match its body or the request: it did not come, unaltered, from the exchange.

    For a POST the call may or may not have been applied; call again with `idempotency_key`.
    """


class UnexpectedResponseError(AllianceError):
    """A verified response this client cannot read (not JSON, or a field of the wrong type)."""


# --- The exchange answered with a problem (RFC 9457) -------------------------------------------


class APIStatusError(AllianceError):
    """The exchange refused the call; nothing changed (PROTOCOL.md: "Nothing changes on any
    error")."""

    status: int


class AuthenticationError(APIStatusError):
    """401: the request's signature or key was refused."""


class SignatureMissingError(AuthenticationError):
    code = "signature_missing"


class SignatureInvalidError(AuthenticationError):
    code = "signature_invalid"


class SignatureExpiredError(AuthenticationError):
    """`created` is outside the exchange's 300 s window: check this machine's clock."""

    code = "signature_expired"


class UnknownKeyError(AuthenticationError):
    """The exchange has no key with this key id: is it registered (`alliance merchant add-key`)?"""

    code = "unknown_key"


class KeyRevokedError(AuthenticationError):
    """The key is revoked or outside its validity window."""

    code = "key_revoked"


class ReplayedRequestError(AuthenticationError):
    code = "replayed_request"


class PermissionDeniedError(APIStatusError):
    """403."""


class MerchantSuspendedError(PermissionDeniedError):
    code = "merchant_suspended"


class NotFoundError(APIStatusError):
    """404: missing, or another merchant's."""

    code = "not_found"


class MethodNotAllowedError(APIStatusError):
    code = "method_not_allowed"


class ConflictError(APIStatusError):
    """409: the request is well formed but does not fit the ledger's state."""


class InsufficientPointsError(ConflictError):
    """The member's points (or the hold's) do not cover the request.

    `available` and `held` are the member's points when the exchange says so."""

    code = "insufficient_points"

    @property
    def available(self) -> int | None:
        return _int_member(self.problem, "available")

    @property
    def held(self) -> int | None:
        return _int_member(self.problem, "held")


class LiabilityLimitExceededError(ConflictError):
    code = "liability_limit_exceeded"


class IdempotencyKeyInFlightError(ConflictError):
    """The same idempotency key is being processed right now (for example, an earlier attempt
    whose answer timed out). It is not retried automatically (only 5xx and 429 are); call again
    later with `idempotency_key=error.idempotency_key` to get that attempt's result."""

    code = "idempotency_key_in_flight"


class HoldNotActiveError(ConflictError):
    """Capture or void of a captured, voided or lapsed hold; `hold_status` says which."""

    code = "hold_not_active"

    @property
    def hold_status(self) -> str | None:
        value = self.problem.get("hold_status")
        return value if isinstance(value, str) else None


class ReversalExceedsOriginalError(ConflictError):
    code = "reversal_exceeds_original"


class PayloadTooLargeError(APIStatusError):
    code = "payload_too_large"


class UnsupportedMediaTypeError(APIStatusError):
    code = "unsupported_media_type"


class UnprocessableEntityError(APIStatusError):
    """422."""


class IdempotencyKeyReusedError(UnprocessableEntityError):
    """The idempotency key was used before for a different request."""

    code = "idempotency_key_reused"


class ValidationError(UnprocessableEntityError):
    """The body or parameters are malformed; `fields` maps each offending field to why."""

    code = "validation_error"

    @property
    def fields(self) -> dict[str, str]:
        value = self.problem.get("fields")
        if not isinstance(value, Mapping):
            return {}
        return {str(name): str(reason) for name, reason in value.items()}


class RateLimitedError(APIStatusError):
    """429, after the client's retries (or when `Retry-After` was longer than it waits)."""

    code = "rate_limited"

    @property
    def retry_after_s(self) -> int | None:
        return _int_member(self.problem, "retry_after_s")


class ServerError(APIStatusError):
    """5xx: the exchange failed; a retry with the same idempotency key is safe."""


class InternalServerError(ServerError):
    code = "internal_error"


class AllianceNotConfiguredError(ServerError):
    code = "alliance_not_configured"


class ServiceUnavailableError(ServerError):
    code = "service_unavailable"


# --- From a problem body to the right class ----------------------------------------------------

ERROR_CLASSES: Mapping[str, type[APIStatusError]] = {
    cls.code: cls
    for cls in (
        SignatureMissingError,
        SignatureInvalidError,
        SignatureExpiredError,
        UnknownKeyError,
        KeyRevokedError,
        ReplayedRequestError,
        MerchantSuspendedError,
        NotFoundError,
        MethodNotAllowedError,
        InsufficientPointsError,
        LiabilityLimitExceededError,
        IdempotencyKeyInFlightError,
        HoldNotActiveError,
        ReversalExceedsOriginalError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        IdempotencyKeyReusedError,
        ValidationError,
        RateLimitedError,
        InternalServerError,
        AllianceNotConfiguredError,
        ServiceUnavailableError,
    )
    if cls.code is not None
}
"""Problem `code` → exception class."""

_CLASSES_BY_STATUS: Mapping[int, type[APIStatusError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitedError,
}


def error_class(*, status: int, code: str | None) -> type[APIStatusError]:
    """The class for a problem: by its code, else (a code this client does not know yet) by its
    status, else `APIStatusError`."""
    if code is not None and code in ERROR_CLASSES:
        return ERROR_CLASSES[code]
    if status >= 500:
        return ServerError
    return _CLASSES_BY_STATUS.get(status, APIStatusError)


def problem_error(
    *,
    status: int,
    problem: Mapping[str, Any],
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> APIStatusError:
    """The exception for a problem body the exchange answered with `status`."""
    code = problem.get("code")
    code = code if isinstance(code, str) else None
    detail = problem.get("detail")
    detail = detail if isinstance(detail, str) else problem.get("title")
    cls = error_class(status=status, code=code)
    return cls(
        detail if isinstance(detail, str) else f"HTTP {status}",
        status=status,
        code=code,
        request_id=request_id,
        problem=problem,
        idempotency_key=idempotency_key,
    )


def _int_member(problem: Mapping[str, Any], name: str) -> int | None:
    value = problem.get(name)
    return value if type(value) is int else None
