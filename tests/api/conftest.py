"""The merchant API on the real database, driven in-process through httpx's ASGI transport with
requests signed exactly as a partner signs them (sdk.signing, RFC 9421)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.clock import FixedClock
from merchants import service as merchants
from sdk.signing import sign_request
from server.main import create_app
from tests.factories import CREATED_AT, unique

AUTHORITY = "exchange.test"


@dataclass
class Partner:
    """A merchant as its till sees itself: an id, a key id, a private key."""

    merchant_id: str
    key_id: str
    private_key: Ed25519PrivateKey


@pytest.fixture
async def app(db, clock):
    application = create_app(database=db, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as client:
        yield client


async def make_partner(db, *, liability_limit: int = 10**12) -> Partner:
    merchant = await merchants.create_merchant(
        db, name=unique("shop"), liability_limit=liability_limit, now=CREATED_AT
    )
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key = await merchants.add_key(
        db, merchant_id=merchant.merchant_id, public_key=public, now=CREATED_AT
    )
    return Partner(merchant.merchant_id, key.key_id, private)


@pytest.fixture
async def partner(db) -> Partner:
    return await make_partner(db)


def signed_headers(
    partner: Partner,
    clock: FixedClock,
    *,
    method: str,
    path: str,
    query: str | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    all_headers = {"host": AUTHORITY, **(headers or {})}
    if body:
        all_headers.setdefault("content-type", "application/json")
    all_headers.update(
        sign_request(
            method=method,
            authority=AUTHORITY,
            path=path,
            query=query,
            headers=all_headers,
            body=body,
            key_id=partner.key_id,
            private_key=partner.private_key,
            created=int(clock.now().timestamp()),
            nonce=nonce or uuid.uuid4().hex,
        )
    )
    return all_headers


async def call(
    client: httpx.AsyncClient,
    partner: Partner,
    clock: FixedClock,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    params: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    """One signed request; POSTs get a fresh idempotency key unless one is given."""
    body = b"" if json_body is None else json.dumps(json_body).encode()
    headers: dict[str, str] = {}
    if method == "POST":
        headers["idempotency-key"] = idempotency_key or unique("key")
    query = str(httpx.QueryParams(params)) if params else None
    signed = signed_headers(
        partner, clock, method=method, path=path, query=query, body=body, headers=headers
    )
    url = f"{path}?{query}" if query else path
    return await client.request(method, url, content=body, headers=signed)
