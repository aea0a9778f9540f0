"""The /v1/ gateway, in front of routing: body limit, RFC 9421 authentication, replay refusal,
rate limits, and signing of every response.

It runs before FastAPI parses anything, so an unauthenticated request learns nothing about
validation, routes or data: it gets a 401 and nothing else. The authenticated merchant is handed
to the routes in `scope["state"]["merchant_id"]`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.clock import Clock
from core.database import Database
from core.errors import DomainError
from core.limits import NONCE_LENGTH_MAX, NONCE_RETENTION_S, REQUEST_BODY_BYTES_MAX
from exchange import nonces
from exchange.api.errors import failure_response
from exchange.api.keyring import KeyRing
from exchange.api.problems import problem_response
from exchange.api.ratelimit import RateLimiter, retry_after_header
from exchange.signatures import (
    SignatureClaims,
    SignedRequest,
    check_signature,
    read_signature,
    sign_response,
)
from merchants import service as merchants
from merchants.models import MerchantStatus

UNSIGNED_PATHS = frozenset({"/v1/exchange-keys"})


class Refusal(Exception):
    """Ends a request in the gateway with a problem response."""

    def __init__(
        self, code: str, detail: str, headers: dict[str, str] | None = None, **extras: Any
    ) -> None:
        super().__init__(detail)
        self.code, self.detail, self.headers, self.extras = code, detail, headers or {}, extras


def _headers(scope: Scope) -> dict[str, str]:
    combined: dict[str, list[str]] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        combined.setdefault(name, []).append(raw_value.decode("latin-1").strip())
    return {name: ", ".join(values) for name, values in combined.items()}


def _signed_request(scope: Scope, headers: dict[str, str], body: bytes) -> SignedRequest:
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    return SignedRequest(
        method=scope["method"],
        authority=headers.get("host", ""),
        path=path,
        query=query or None,
        headers=headers,
        body=body,
    )


async def _read_body(receive: Receive, headers: dict[str, str]) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > REQUEST_BODY_BYTES_MAX:
        raise Refusal("payload_too_large", f"the body limit is {REQUEST_BODY_BYTES_MAX} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > REQUEST_BODY_BYTES_MAX:
            raise Refusal("payload_too_large", f"the body limit is {REQUEST_BODY_BYTES_MAX} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class Gateway:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        signer = _ResponseSigner(scope, send, state.keyring, state.clock)
        try:
            await self._serve(scope, receive, signer.send)
        except Exception as error:  # every /v1/ failure is answered here: signed, with its id
            await _answer_failure(scope, signer, send, error)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        try:
            headers = _headers(scope)
            body = await _read_body(receive, headers)
            if scope["path"] not in UNSIGNED_PATHS:
                merchant_id = await _authenticate(
                    scope, headers, body, state.db, state.clock, state.rate_limiter
                )
                scope.setdefault("state", {})["merchant_id"] = merchant_id
        except Refusal as refusal:
            response = problem_response(
                refusal.code, refusal.detail, headers=refusal.headers, **refusal.extras
            )
            await response(scope, _replay(b""), send)
            return
        await self.app(scope, _replay(body), send)


async def _answer_failure(
    scope: Scope, signer: _ResponseSigner, send: Send, error: Exception
) -> None:
    """An exception from anywhere behind the gateway (authentication's database work, a route, a
    handler) as a problem: 503 with Retry-After if transient, else a 500 showing nothing of it.

    Starlette would answer it from its outermost middleware, outside this signer and the request
    id; here it is signed like every /v1/ response. If the response had already gone out whole,
    the failure is only logged. If the answer cannot be signed (the exchange's key cannot be
    read), it goes unsigned rather than not at all."""
    request_id = scope.get("state", {}).get("request_id")
    response = failure_response(error, request_id=request_id)
    if signer.sent:
        return
    signer.discard()
    try:
        await response(scope, _replay(b""), signer.send)
    except Exception as signing_error:
        if signer.sent:
            return
        unsigned = failure_response(signing_error, request_id=request_id)
        await unsigned(scope, _replay(b""), send)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _authenticate(
    scope: Scope,
    headers: dict[str, str],
    body: bytes,
    db: Database,
    clock: Clock,
    limiter: RateLimiter,
) -> str:
    """The merchant of a signed request, which may go on to the routes; else a Refusal.

    The order is deliberate. The signature and key come first, so an unauthenticated request
    learns nothing else and spends no merchant's budget. The (keyid, nonce) claim comes next,
    before the rate limit and the Content-Type: a replay is answered `replayed_request` whatever
    else is wrong with it, and never takes a token from the merchant's rate budget (checking the
    rate first would let a replay answer 429 and spend the budget; checking the Content-Type
    first would let it answer 422, since the signature does not cover that header). The rate
    limit precedes the Content-Type, so badly typed requests count against the budget too.
    A request refused by either check after the claim had no effect, so the claim is released
    (PROTOCOL.md: nothing changes on any error): re-sent after Retry-After, or with the right
    Content-Type, the same signed request is accepted, once. What the routes answer keeps the
    nonce: that answer is the request's own (for a POST, kept under its idempotency key).
    """
    now = clock.now()
    try:
        claims = read_signature(_signed_request(scope, headers, body), now=int(now.timestamp()))
    except DomainError as error:
        raise Refusal(error.code, error.detail) from None
    if not 1 <= len(claims.nonce) <= NONCE_LENGTH_MAX:
        raise Refusal("signature_invalid", f"nonce must be 1 to {NONCE_LENGTH_MAX} characters")
    # One connection for the key and the nonce (and a release): one pool checkout per request.
    async with db.connection() as conn:
        merchant_id = await _check_key_and_claim_nonce(conn, claims, now)
        try:
            _limit_rate(limiter, merchant_id)
            _check_content_type(scope, headers, body)
        except Refusal:
            await nonces.release(conn, key_id=claims.key_id, nonce=claims.nonce)
            raise
    return merchant_id


async def _check_key_and_claim_nonce(
    conn: asyncpg.Connection, claims: SignatureClaims, now: datetime
) -> str:
    found = await merchants.find_key_on(conn, claims.key_id)
    if found is None:
        raise Refusal("unknown_key", "no key with this keyid")
    merchant, key = found
    if key.revoked_at is not None and key.revoked_at <= now:
        raise Refusal("key_revoked", "this key is revoked")
    if not key.usable_at(now):
        raise Refusal("key_revoked", "this key is outside its validity window")
    try:
        check_signature(claims, key.public_key)
    except DomainError as error:
        raise Refusal(error.code, error.detail) from None
    if merchant.status is not MerchantStatus.ACTIVE:
        raise Refusal("merchant_suspended", f"the merchant is {merchant.status.value}")
    expires_at = now + timedelta(seconds=NONCE_RETENTION_S)
    if not await nonces.claim(
        conn, key_id=claims.key_id, nonce=claims.nonce, expires_at=expires_at
    ):
        raise Refusal("replayed_request", "this (keyid, nonce) was already used")
    return merchant.merchant_id


def _limit_rate(limiter: RateLimiter, merchant_id: str) -> None:
    wait_s = limiter.acquire(merchant_id, time.monotonic())
    if wait_s > 0:
        retry_after = retry_after_header(wait_s)
        raise Refusal(
            "rate_limited",
            "too many requests; retry later",
            headers={"Retry-After": retry_after},
            retry_after_s=int(retry_after),
        )


def _check_content_type(scope: Scope, headers: dict[str, str], body: bytes) -> None:
    if scope["method"] != "POST" or not body:
        return
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        # A malformed request, as PROTOCOL.md's table has it (422 validation_error, naming the
        # offending field), not an HTTP 415 the table does not know.
        raise Refusal(
            "validation_error",
            "request bodies are application/json",
            fields={"content-type": "must be application/json"},
        )


class _ResponseSigner:
    """Buffers a /v1/ response, then sends it with Content-Digest and the exchange's signature."""

    def __init__(self, scope: Scope, send: Send, keyring: KeyRing, clock: Clock) -> None:
        self.scope, self._send, self.keyring, self.clock = scope, send, keyring, clock
        self.start: MutableMapping[str, Any] | None = None
        self.chunks: list[bytes] = []
        self.sent = False
        """Whether anything went out: after that, no other answer can replace the response."""

    def discard(self) -> None:
        """Forget what is buffered and not sent, for another answer to take its place."""
        self.start, self.chunks = None, []

    async def send(self, message: Message) -> None:
        if self.scope["path"] in UNSIGNED_PATHS:
            self.sent = True
            await self._send(message)
            return
        if message["type"] == "http.response.start":
            self.start = dict(message)
            return
        if message["type"] != "http.response.body":
            self.sent = True
            await self._send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        await self._flush(b"".join(self.chunks))

    async def _flush(self, body: bytes) -> None:
        assert self.start is not None  # ASGI sends the start before any body
        now = self.clock.now()
        key = await self.keyring.signing_key(now)
        raw_path = self.scope.get("raw_path")
        signature_headers = sign_response(
            status=self.start["status"],
            body=body,
            request_method=self.scope["method"],
            request_path=raw_path.decode("latin-1") if raw_path else self.scope["path"],
            key_id=key.key_id,
            private_key=key.private_key,
            now=int(now.timestamp()),
        )
        headers = [
            (name, value)
            for name, value in self.start.get("headers", [])
            if name.lower() not in (b"content-digest", b"signature", b"signature-input")
        ]
        headers += [(n.lower().encode(), v.encode()) for n, v in signature_headers.items()]
        self.start["headers"] = headers
        self.sent = True
        await self._send(self.start)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
