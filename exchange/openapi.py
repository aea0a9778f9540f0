"""The OpenAPI document: the signature scheme, the shared headers and the problem+json errors,
described once.

The routes declare their bodies and success responses; this module adds what every operation
shares: the RFC 9421 security scheme, the exchange's response signature headers, and the RFC 9457
error shape (with an example per code) on every status an operation can answer with. It only
describes; it changes nothing the application does.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from exchange.api.gateway import UNSIGNED_PATHS
from exchange.api.problems import PROBLEM_CONTENT_TYPE, problem

SIGNATURE_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "Signature",
    "description": (
        "RFC 9421 HTTP Message Signature, Ed25519 (`alg` ed25519), exactly one signature. "
        "`Signature-Input` must carry `keyid` (your merchant key id), `created` (within 300 s), "
        "and a fresh `nonce` (a (keyid, nonce) pair is accepted once); `expires` is optional. "
        'Covered components: "@method", "@authority", "@path"; "@query" when there is a query; '
        '"content-digest" (RFC 9530, sha-256 of the exact body) when there is a body; '
        '"idempotency-key" on every POST. Responses are signed by the exchange over "@status", '
        '"content-digest", "@method";req, "@path";req with a key from GET /v1/exchange-keys.\n\n'
        'Example (POST /v1/members, body `{"external_ref": "card-000042"}`):\n\n'
        "    Idempotency-Key: enrol-card-000042\n"
        "    Content-Digest: sha-256=:<base64 sha-256 of the body>:\n"
        '    Signature-Input: sig1=("@method" "@authority" "@path" "content-digest" '
        '"idempotency-key");created=1780315200;keyid="key_01M83EN0G9Q3W2PZ5YV8KJ7T1B";'
        'nonce="6f1c0a2e9b7d4c3a8e5f1b2d3c4a5e6f"\n'
        "    Signature: sig1=:<base64 Ed25519 signature of the signature base>:"
    ),
}


HEADERS: dict[str, dict[str, Any]] = {
    "Signature": {
        "description": (
            "The exchange's RFC 9421 signature of this response (Ed25519); verify it with the "
            "key named by `keyid` in Signature-Input, from GET /v1/exchange-keys."
        ),
        "required": True,
        "schema": {"type": "string"},
        "example": "sig1=:qqIXcmc+2og+2HlmgFt0l0VsJt2NlqyjmkB38Tv/gJfIJfdYTGOP65QZou7he/Ob==:",
    },
    "Signature-Input": {
        "description": (
            'Covers "@status", "content-digest", "@method";req and "@path";req, with `created` and '
            "the exchange key's `keyid`."
        ),
        "required": True,
        "schema": {"type": "string"},
        "example": (
            'sig1=("@status" "content-digest" "@method";req "@path";req);created=1780315200;'
            'keyid="xk_01M83EN0HJKAAZ1783MGKFY8R6"'
        ),
    },
    "Content-Digest": {
        "description": "RFC 9530 sha-256 digest of the exact response body.",
        "required": True,
        "schema": {"type": "string"},
        "example": "sha-256=:2UhracBynzpHpm1bDo2jrGV5pvwGCElBzBHzAMWXnQU=:",
    },
    "Idempotency-Replayed": {
        "description": (
            "`true` when this is the stored response of an earlier request with the same "
            "Idempotency-Key and body (nothing changed this time); absent otherwise."
        ),
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying (RFC 9110 §10.2.3).",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "example": "1",
    },
    "X-Request-Id": {
        "description": "The request's id in the exchange's logs (yours, if you sent one).",
        "required": True,
        "schema": {"type": "string"},
        "example": "bd48ea28544745f7b64f8a30265d76d7",
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _optional(name: str) -> dict[str, Any]:
    return {**HEADERS[name], "required": False}


# Every status a problem can come with, what it means, and one example per code (PROTOCOL.md).
PROBLEMS: dict[int, tuple[str, list[dict[str, Any]]]] = {
    401: (
        "Authentication failed: `signature_missing`, `signature_invalid`, `signature_expired`, "
        "`unknown_key`, `key_revoked`, or `replayed_request` ((keyid, nonce) seen before).",
        [
            problem("signature_missing", "the request needs Signature-Input and Signature"),
            problem("signature_invalid", "the signature does not verify"),
            problem("signature_expired", "created 412 s ago; the limit is 300 s"),
            problem("unknown_key", "no key with this keyid"),
            problem("key_revoked", "this key is revoked"),
            problem("replayed_request", "this (keyid, nonce) was already used"),
        ],
    ),
    403: (
        "`merchant_suspended`: the merchant may not transact.",
        [problem("merchant_suspended", "the merchant is suspended")],
    ),
    404: (
        "`not_found`: no such resource (a `member_id` in a body too, and any id the exchange "
        "cannot have issued), or it belongs to another merchant.",
        [problem("not_found", "no such member")],
    ),
    409: (
        "A conflict with the ledger's state: `insufficient_points`, `liability_limit_exceeded`, "
        "`idempotency_key_in_flight` (retry later with the same key), `hold_not_active`, "
        "`reversal_exceeds_original`.",
        [
            problem(
                "insufficient_points",
                "the member has 315 points available, 1000 asked",
                available=315,
            ),
            problem(
                "liability_limit_exceeded",
                "this issuance would take the issuer past its liability limit",
            ),
            problem(
                "idempotency_key_in_flight",
                "a request with this idempotency key is being processed",
            ),
            problem("hold_not_active", "the hold is captured", hold_status="captured"),
            problem(
                "reversal_exceeds_original",
                "500 of 500 points already reversed",
                reversed_points=500,
                original_points=500,
            ),
        ],
    ),
    413: (
        "`payload_too_large`: the body is over 1 MiB.",
        [problem("payload_too_large", "the body limit is 1048576 bytes")],
    ),
    422: (
        "`validation_error` (malformed body or parameters, with the offending `fields`; a body "
        "that is not `application/json` names `content-type`) or `idempotency_key_reused` "
        "(same key, different request).",
        [
            problem(
                "validation_error",
                "the request is malformed; see fields",
                fields={"points": "Input should be a valid integer"},
            ),
            problem(
                "idempotency_key_reused",
                "this idempotency key was used with a different request",
            ),
        ],
    ),
    429: (
        "`rate_limited`: too many requests from this merchant; retry after `Retry-After` seconds.",
        [problem("rate_limited", "too many requests; retry later", retry_after_s=1)],
    ),
    503: (
        "`service_unavailable` (the ledger is briefly unavailable: retry with the same "
        "Idempotency-Key after `Retry-After`) or `alliance_not_configured`.",
        [
            problem(
                "service_unavailable",
                "the ledger is briefly unavailable; retry with the same key",
            ),
            problem("alliance_not_configured", "the alliance has no settings yet"),
        ],
    ),
}

UNSIGNED_ERROR_STATUSES = (413,)
"""What GET /v1/exchange-keys can refuse with: it reads no signature and no parameters."""

DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("post", "/v1/members"): (
        "Returns the alliance member for `external_ref` (the same reference is the same member at "
        "every merchant): 201 when this request enrolled them, 200 when they already existed."
    ),
    ("get", "/v1/members/{member_id}/balance"): (
        "Points `available` to spend now, `held` by active holds, and the next lot to expire "
        "(`next_expiry`, or null)."
    ),
    ("post", "/v1/issuances"): (
        "Credits a member with points this merchant issues (and owes the alliance for). "
        "`expires_at` defaults to the alliance's points lifetime."
    ),
    ("post", "/v1/redemptions"): (
        "Spends a member's points at this merchant, oldest lots first. `settlement_value` is the "
        "money this merchant will receive for it, after the alliance fee."
    ),
    ("post", "/v1/holds"): (
        "Reserves points for a later capture; the hold lapses after `expires_in_seconds` "
        "(default: the alliance's hold lifetime)."
    ),
    ("post", "/v1/holds/{hold_id}/capture"): (
        "Turns an active hold into a redemption of `points` (default: all it reserves); the rest "
        "is released."
    ),
    ("post", "/v1/holds/{hold_id}/void"): "Releases an active hold's points; body `{}`.",
    ("post", "/v1/transactions/{transaction_id}/reversals"): (
        "Reverses `points` (default: all not yet reversed) of one of your issuances or "
        "redemptions. Reversals never add up to more than the original."
    ),
    ("get", "/v1/transactions/{transaction_id}"): "One of your transactions.",
    ("get", "/v1/transactions"): (
        "Your transactions, newest first, optionally of one member; follow `next_cursor` "
        "(null on the last page)."
    ),
    ("post", "/v1/batches"): (
        "Up to 1,000 operations (`op`: `issue`, `redeem`, `reverse`), each atomic and idempotent "
        "by its own `idempotency_key`. `results` holds one entry per operation, in order: the "
        "transaction, or a problem (RFC 9457) for that operation alone."
    ),
    ("get", "/v1/statements"): (
        "This merchant's settlement statements, newest first; `period` (YYYY-MM-DD) selects one "
        "period."
    ),
    ("get", "/v1/statements/{statement_id}"): "One of your settlement statements.",
    ("get", "/v1/exchange-keys"): (
        "The exchange's Ed25519 public keys as a JWK set (RFC 7517). They verify the signatures "
        "on every /v1/ response and on webhooks. This is the only unsigned endpoint."
    ),
}


SUCCESS_DESCRIPTIONS = {"200": "OK", "201": "Created"}

RESPONSE_NAMES = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    413: "PayloadTooLarge",
    422: "UnprocessableContent",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


# What the parameters accept beyond their type and length, and an example of each.
PARAMETER_PATTERNS: dict[tuple[str, str], str] = {
    ("header", "Idempotency-Key"): "^[!-~]{1,255}$",
    ("query", "period"): "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
}
PARAMETER_FORMATS: dict[tuple[str, str], str] = {("query", "period"): "date"}
PARAMETER_EXAMPLES: dict[tuple[str, str], Any] = {
    ("header", "Idempotency-Key"): "till-7/2026-06-01/1042",
    ("path", "member_id"): "mbr_01M83EN0HFTX701RRDJ1VMCJ20",
    ("path", "hold_id"): "hld_01M83EN0JXPK2XJ5CC3MQCF3D1",
    ("path", "transaction_id"): "txn_01M83EN0HZPM4H5CR8EQNKBRRN",
    ("path", "statement_id"): "stm_01M83EN0P7W4R1X9ZK2D5QH3VA",
    ("query", "member_id"): "mbr_01M83EN0HFTX701RRDJ1VMCJ20",
    ("query", "limit"): 50,
    ("query", "period"): "2026-06-01",
}
PARAMETER_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("query", "limit"): "Page size, 1 to 100 (default 50).",
    (
        "query",
        "cursor",
    ): "Opaque: the `next_cursor` of the previous page. Omit it for the first page.",
    ("query", "member_id"): "Only this member's transactions.",
}


def _describe_parameter(parameter: dict[str, Any]) -> None:
    where = (parameter["in"], parameter["name"])
    schema = parameter.setdefault("schema", {})
    if where in PARAMETER_PATTERNS:
        schema["pattern"] = PARAMETER_PATTERNS[where]
    if where in PARAMETER_FORMATS:
        schema["format"] = PARAMETER_FORMATS[where]
    if where in PARAMETER_EXAMPLES:
        parameter["example"] = PARAMETER_EXAMPLES[where]
    if where in PARAMETER_DESCRIPTIONS and "description" not in parameter:
        parameter["description"] = PARAMETER_DESCRIPTIONS[where]


def problem_response(status: int, *, signed: bool = True) -> dict[str, Any]:
    """The response object of a problem with this status: problem+json, one example per code."""
    description, examples = PROBLEMS[status]
    headers: dict[str, Any] = {}
    if signed:
        headers.update({name: _ref(name) for name in RESPONSE_SIGNATURE_HEADERS})
    headers["X-Request-Id"] = _ref("X-Request-Id")
    if status == 429:
        headers["Retry-After"] = _ref("Retry-After")
    elif status == 503:
        headers["Retry-After"] = _optional("Retry-After")
    return {
        "description": description,
        "headers": headers,
        "content": {
            PROBLEM_CONTENT_TYPE: {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "examples": {
                    example["code"]: {"summary": example["title"], "value": example}
                    for example in examples
                },
            }
        },
    }


RESPONSE_SIGNATURE_HEADERS = ("Signature", "Signature-Input", "Content-Digest")


ERROR_STATUSES = (401, 403, 404, 409, 413, 422, 429, 503)
"""What every signed operation can answer besides success (a body's Content-Type is a 422)."""


def _describe_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    signed = path not in UNSIGNED_PATHS
    if (method, path) in DESCRIPTIONS:
        operation["description"] = DESCRIPTIONS[(method, path)]
    if signed:
        operation["security"] = [{"HttpMessageSignature": []}]
    for parameter in operation.get("parameters", []):
        _describe_parameter(parameter)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for code, response in responses.items():
        if not code.startswith("2"):
            continue
        if response.get("description") == "Successful Response":
            response["description"] = SUCCESS_DESCRIPTIONS.get(code, "Success")
        headers = response.setdefault("headers", {})
        if signed:
            headers.update({name: _ref(name) for name in RESPONSE_SIGNATURE_HEADERS})
        headers["X-Request-Id"] = _ref("X-Request-Id")
        if signed and method == "post" and path != "/v1/batches":
            headers["Idempotency-Replayed"] = _ref("Idempotency-Replayed")
    # The errors, replaced whole: a problem is application/problem+json, never application/json.
    for code in [code for code in responses if not code.startswith("2")]:
        del responses[code]
    if signed:
        for status in ERROR_STATUSES:
            responses[str(status)] = {"$ref": f"#/components/responses/{RESPONSE_NAMES[status]}"}
    else:
        for status in UNSIGNED_ERROR_STATUSES:
            responses[str(status)] = problem_response(status, signed=False)


def describe_security(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {"HttpMessageSignature": SIGNATURE_SCHEME}
        components["headers"] = copy.deepcopy(HEADERS)
        components["responses"] = {
            name: problem_response(status) for status, name in RESPONSE_NAMES.items()
        }
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                _describe_operation(path, method, operation)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
