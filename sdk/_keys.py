"""The exchange's public keys (`GET /v1/exchange-keys`, a JWK set) and response verification."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import httpx2

from sdk._errors import ResponseVerificationError, UnexpectedResponseError
from sdk._models import ExchangeKey
from sdk.signing import (
    ED25519_PUBLIC_KEY_BYTES,
    ResponseSignatureError,
    UnknownResponseKeyError,
    verify_response,
)


def parse_jwks(data: Any) -> list[ExchangeKey]:
    """The Ed25519 keys of a JWK set; keys of another type are skipped (a later rotation to
    another algorithm must not break clients that do not know it yet)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise UnexpectedResponseError("the exchange keys are not a JWK set")
    keys: list[ExchangeKey] = []
    for jwk in data["keys"]:
        if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if not isinstance(kid, str) or not isinstance(x, str):
            raise UnexpectedResponseError("an exchange key has no kid or x")
        keys.append(ExchangeKey(key_id=kid, public_key=_public_key(x), raw=jwk))
    return keys


def _public_key(x: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    except (binascii.Error, ValueError):
        raise UnexpectedResponseError("an exchange key is not base64url") from None
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise UnexpectedResponseError("an exchange key is not 32 bytes")
    return raw


def verify(response: httpx2.Response, *, public_keys: Mapping[str, bytes], now: float) -> str:
    """Check the exchange's signature on `response` (PROTOCOL.md: `@status`, `content-digest`,
    and the request's `@method` and `@path`); return the key id that signed it.

    Raises `sdk.signing.UnknownResponseKeyError` for a key id not in `public_keys` (the caller
    refreshes and tries again), and `ResponseVerificationError` for anything else wrong.
    """
    request = response.request
    try:
        return verify_response(
            status=response.status_code,
            headers=dict(response.headers.items()),
            body=response.content,
            request_method=request.method,
            request_path=request.url.raw_path.decode("ascii").partition("?")[0],
            public_keys=public_keys,
            now=int(now),
        )
    except UnknownResponseKeyError:
        raise
    except ResponseSignatureError as error:
        raise verification_error(response, str(error)) from error


def verification_error(response: httpx2.Response, reason: str) -> ResponseVerificationError:
    return ResponseVerificationError(
        f"the {response.status_code} response to {response.request.method} "
        f"{response.request.url.path} is not signed by the exchange as it should be: {reason}",
        status=response.status_code,
        request_id=response.headers.get("x-request-id"),
    )
