"""The partner SDK for the Alliance Points Exchange (merchant protocol v1).

    from sdk import AllianceClient, load_private_key

    with AllianceClient(
        base_url="https://exchange.example",
        key_id="key_tea_house_1",
        private_key=load_private_key("tea_house.pem"),
    ) as client:
        member = client.enrol_member(external_ref="card-000042")
        client.issue(member_id=member.member_id, points=120, reference="till-7/receipt-1042")

`sdk.signing` is the RFC 9421 canonicaliser the exchange itself uses; `sdk.webhooks` checks
webhooks without any HTTP client. See README.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sdk._constants import __version__

# The names below are imported on first use, so that `import sdk.signing` (which the exchange
# does) loads neither the HTTP client nor the rest of the SDK.
if TYPE_CHECKING:
    from sdk._async_client import AsyncAllianceClient
    from sdk._auth import RequestSigner, load_private_key
    from sdk._client import AllianceClient
    from sdk._config import ConfigurationError
    from sdk._errors import (
        ERROR_CLASSES,
        AllianceError,
        AllianceNotConfiguredError,
        APIConnectionError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        ConflictError,
        HoldNotActiveError,
        IdempotencyKeyInFlightError,
        IdempotencyKeyReusedError,
        InsufficientPointsError,
        InternalServerError,
        KeyRevokedError,
        LiabilityLimitExceededError,
        MerchantSuspendedError,
        MethodNotAllowedError,
        NotFoundError,
        PayloadTooLargeError,
        PermissionDeniedError,
        RateLimitedError,
        ReplayedRequestError,
        ResponseVerificationError,
        ReversalExceedsOriginalError,
        ServerError,
        ServiceUnavailableError,
        SignatureExpiredError,
        SignatureInvalidError,
        SignatureMissingError,
        UnexpectedResponseError,
        UnknownKeyError,
        UnprocessableEntityError,
        UnsupportedMediaTypeError,
        ValidationError,
    )
    from sdk._models import (
        Balance,
        BatchOperation,
        BatchResult,
        ExchangeKey,
        Hold,
        IssueOperation,
        Member,
        NextExpiry,
        Page,
        RedeemOperation,
        ReverseOperation,
        Statement,
        StatementLine,
        StatementPeriod,
        Transaction,
        new_idempotency_key,
    )
    from sdk._retry import RetryPolicy
    from sdk.webhooks import (
        UnknownWebhookKeyError,
        WebhookEvent,
        WebhookVerificationError,
        verify_webhook,
    )

_EXPORTS: dict[str, str] = {
    "APIConnectionError": "sdk._errors",
    "APIStatusError": "sdk._errors",
    "APITimeoutError": "sdk._errors",
    "AllianceClient": "sdk._client",
    "AllianceError": "sdk._errors",
    "AllianceNotConfiguredError": "sdk._errors",
    "AsyncAllianceClient": "sdk._async_client",
    "AuthenticationError": "sdk._errors",
    "Balance": "sdk._models",
    "BatchOperation": "sdk._models",
    "BatchResult": "sdk._models",
    "ConfigurationError": "sdk._config",
    "ConflictError": "sdk._errors",
    "ERROR_CLASSES": "sdk._errors",
    "ExchangeKey": "sdk._models",
    "Hold": "sdk._models",
    "HoldNotActiveError": "sdk._errors",
    "IdempotencyKeyInFlightError": "sdk._errors",
    "IdempotencyKeyReusedError": "sdk._errors",
    "InsufficientPointsError": "sdk._errors",
    "InternalServerError": "sdk._errors",
    "IssueOperation": "sdk._models",
    "KeyRevokedError": "sdk._errors",
    "LiabilityLimitExceededError": "sdk._errors",
    "Member": "sdk._models",
    "MerchantSuspendedError": "sdk._errors",
    "MethodNotAllowedError": "sdk._errors",
    "NextExpiry": "sdk._models",
    "NotFoundError": "sdk._errors",
    "Page": "sdk._models",
    "PayloadTooLargeError": "sdk._errors",
    "PermissionDeniedError": "sdk._errors",
    "RateLimitedError": "sdk._errors",
    "RedeemOperation": "sdk._models",
    "ReplayedRequestError": "sdk._errors",
    "RequestSigner": "sdk._auth",
    "ResponseVerificationError": "sdk._errors",
    "RetryPolicy": "sdk._retry",
    "ReversalExceedsOriginalError": "sdk._errors",
    "ReverseOperation": "sdk._models",
    "ServerError": "sdk._errors",
    "ServiceUnavailableError": "sdk._errors",
    "SignatureExpiredError": "sdk._errors",
    "SignatureInvalidError": "sdk._errors",
    "SignatureMissingError": "sdk._errors",
    "Statement": "sdk._models",
    "StatementLine": "sdk._models",
    "StatementPeriod": "sdk._models",
    "Transaction": "sdk._models",
    "UnexpectedResponseError": "sdk._errors",
    "UnknownKeyError": "sdk._errors",
    "UnknownWebhookKeyError": "sdk.webhooks",
    "UnprocessableEntityError": "sdk._errors",
    "UnsupportedMediaTypeError": "sdk._errors",
    "ValidationError": "sdk._errors",
    "WebhookEvent": "sdk.webhooks",
    "WebhookVerificationError": "sdk.webhooks",
    "load_private_key": "sdk._auth",
    "new_idempotency_key": "sdk._models",
    "verify_webhook": "sdk.webhooks",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ERROR_CLASSES",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AllianceClient",
    "AllianceError",
    "AllianceNotConfiguredError",
    "AsyncAllianceClient",
    "AuthenticationError",
    "Balance",
    "BatchOperation",
    "BatchResult",
    "ConfigurationError",
    "ConflictError",
    "ExchangeKey",
    "Hold",
    "HoldNotActiveError",
    "IdempotencyKeyInFlightError",
    "IdempotencyKeyReusedError",
    "InsufficientPointsError",
    "InternalServerError",
    "IssueOperation",
    "KeyRevokedError",
    "LiabilityLimitExceededError",
    "Member",
    "MerchantSuspendedError",
    "MethodNotAllowedError",
    "NextExpiry",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RedeemOperation",
    "ReplayedRequestError",
    "RequestSigner",
    "ResponseVerificationError",
    "RetryPolicy",
    "ReversalExceedsOriginalError",
    "ReverseOperation",
    "ServerError",
    "ServiceUnavailableError",
    "SignatureExpiredError",
    "SignatureInvalidError",
    "SignatureMissingError",
    "Statement",
    "StatementLine",
    "StatementPeriod",
    "Transaction",
    "UnexpectedResponseError",
    "UnknownKeyError",
    "UnknownWebhookKeyError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "load_private_key",
    "new_idempotency_key",
    "verify_webhook",
]
