"""A stand-in exchange behind `httpx2.MockTransport`, for what the live one cannot do on cue: rotate
its key mid-test, answer with a shape or a code the SDK must cope with, or take 2,001 batch
operations without writing them. It signs every answer as PROTOCOL.md says, with its own keys."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sdk.signing import content_digest, sign_response

Handler = Callable[[httpx2.Request], tuple[int, Any]]

BASE_URL = "https://exchange.test"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class MockExchange:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.keys: dict[str, Ed25519PrivateKey] = {"xk_1": Ed25519PrivateKey.generate()}
        """Published keys, by key id."""
        self.signing_key_id = "xk_1"
        self.requests: list[httpx2.Request] = []
        self.key_fetches = 0
        self.key_outages = 0
        """How many of the next key fetches fail with a 503."""

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)

    def rotate(self, key_id: str, *, publish: bool = True) -> None:
        """Sign with a new key from now on (published, unless the test wants it not to be)."""
        key = Ed25519PrivateKey.generate()
        if publish:
            self.keys[key_id] = key
        self._unpublished = key
        self.signing_key_id = key_id

    def _signing_key(self) -> Ed25519PrivateKey:
        return self.keys.get(self.signing_key_id) or self._unpublished

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/v1/exchange-keys":
            self.key_fetches += 1
            if self.key_outages:
                self.key_outages -= 1
                return httpx2.Response(503, json={"status": 503, "code": "service_unavailable"})
            return httpx2.Response(200, json={"keys": [self._jwk(k) for k in self.keys]})
        self.requests.append(request)
        status, payload = self.handler(request)
        body = json.dumps(payload).encode()
        digest = content_digest(body)
        signature = sign_response(
            status=status,
            content_digest=digest,
            request_method=request.method,
            request_path=request.url.raw_path.decode().partition("?")[0],
            key_id=self.signing_key_id,
            private_key=self._signing_key(),
            created=int(time.time()),
        )
        headers = {"content-digest": digest, "x-request-id": "req-1", **signature}
        return httpx2.Response(status, headers=headers, content=body)

    def _jwk(self, key_id: str) -> dict[str, str]:
        x = base64.urlsafe_b64encode(raw_public(self.keys[key_id])).decode().rstrip("=")
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key_id, "alg": "EdDSA", "use": "sig"}


def transaction(**fields: Any) -> dict[str, Any]:
    return {
        "transaction_id": "txn_1",
        "kind": "issuance",
        "merchant_id": "mer_1",
        "member_id": "mbr_1",
        "points": 1,
        "reference": "r",
        "created_at": "2026-06-01T12:00:00.000000Z",
        "settlement_value": 0,
        "balance_after": 1,
        "reverses": None,
        **fields,
    }


def problem(status: int, code: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"type": f"https://alliance.example/problems/{code}", "title": code, "status": status}
    return status, {**body, "detail": f"because {code}", "code": code, **extra}
