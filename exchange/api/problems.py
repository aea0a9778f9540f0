"""RFC 9457 problem details: every error the API can produce, with the stable codes of PROTOCOL.md.

Codes are decided by the domain; statuses only here. Nothing but the code, a fixed title, the
detail the domain wrote, and whitelisted fields ever reaches a client: never a stack trace, SQL,
or another merchant's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://alliance.example/problems/"

STATUS_BY_CODE: Mapping[str, int] = {
    "signature_missing": 401,
    "signature_invalid": 401,
    "signature_expired": 401,
    "unknown_key": 401,
    "key_revoked": 401,
    "replayed_request": 401,
    "merchant_suspended": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "insufficient_points": 409,
    "liability_limit_exceeded": 409,
    "idempotency_key_in_flight": 409,
    "hold_not_active": 409,
    "reversal_exceeds_original": 409,
    "payload_too_large": 413,
    "idempotency_key_reused": 422,
    "validation_error": 422,
    "rate_limited": 429,
    "internal_error": 500,
    "alliance_not_configured": 503,
    "service_unavailable": 503,
}

TITLE_BY_CODE: Mapping[str, str] = {
    "signature_missing": "Signature missing",
    "signature_invalid": "Signature invalid",
    "signature_expired": "Signature expired",
    "unknown_key": "Unknown key",
    "key_revoked": "Key revoked",
    "replayed_request": "Replayed request",
    "merchant_suspended": "Merchant suspended",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "insufficient_points": "Insufficient points",
    "liability_limit_exceeded": "Liability limit exceeded",
    "idempotency_key_in_flight": "Idempotency key in flight",
    "hold_not_active": "Hold not active",
    "reversal_exceeds_original": "Reversal exceeds original",
    "payload_too_large": "Payload too large",
    "idempotency_key_reused": "Idempotency key reused",
    "validation_error": "Validation error",
    "rate_limited": "Rate limited",
    "internal_error": "Internal error",
    "alliance_not_configured": "Alliance not configured",
    "service_unavailable": "Service unavailable",
}

# Extra members a problem may carry, by name; anything else a domain error holds stays inside.
PUBLIC_EXTRAS = (
    "fields",
    "available",
    "held",
    "hold_status",
    "reversed_points",
    "original_points",
    "retry_after_s",
)


def printable(text: str) -> str:
    """`text` as UTF-8 can carry it: a lone surrogate (a JSON `"\\ud800"` escape decodes to one)
    cannot be encoded, and would turn the problem that names it into a failure to answer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    return value


def problem(code: str, detail: str, **extras: Any) -> dict[str, Any]:
    status = STATUS_BY_CODE.get(code, 500)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": TITLE_BY_CODE.get(code, "Error"),
        "status": status,
        "detail": printable(detail),
        "code": code,
    }
    body.update(
        {name: _printable(value) for name, value in extras.items() if name in PUBLIC_EXTRAS}
    )
    return body


def problem_response(
    code: str, detail: str, *, headers: Mapping[str, str] | None = None, **extras: Any
) -> JSONResponse:
    body = problem(code, detail, **extras)
    return JSONResponse(
        body,
        status_code=body["status"],
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )
