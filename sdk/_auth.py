"""Signing requests as PROTOCOL.md says, as an httpx2 `Auth`, so every attempt is signed afresh.

Usable on its own with any `httpx2.Client` for a request the SDK does not wrap:

    client = httpx2.Client(base_url=url, auth=RequestSigner(key_id=kid, private_key=key))
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Generator
from pathlib import Path

import httpx2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sdk._constants import NONCE_BYTES
from sdk.signing import sign_request

SIGNATURE_FIELDS = ("content-digest", "signature-input", "signature")


class RequestSigner(httpx2.Auth):
    """Adds `Content-Digest`, `Signature-Input` and `Signature` (RFC 9421, Ed25519) to a request.

    Covers `@method`, `@authority`, `@path`, `@query` when the URL has a query, `content-digest`
    when there is a body, and `idempotency-key` on POSTs (which must carry one). Each time a
    request passes through, it gets a new random `nonce` and `created` from `clock`: a retried
    request is a new signature, never a replay.
    """

    requires_request_body = True

    def __init__(
        self,
        *,
        key_id: str,
        private_key: Ed25519PrivateKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key_id = key_id
        self.private_key = private_key
        self.clock = clock

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        self.sign(request)
        yield request

    def sign(self, request: httpx2.Request) -> None:
        """Sign `request` in place (its body must already be read)."""
        for name in SIGNATURE_FIELDS:  # a re-sent request drops the previous attempt's signature
            request.headers.pop(name, None)
        # What goes on the wire: the request target exactly as httpx2 will write it.
        path, question_mark, query = request.url.raw_path.decode("ascii").partition("?")
        headers = sign_request(
            method=request.method,
            authority=request.headers["host"],
            path=path,
            query=query if question_mark else None,
            headers=dict(request.headers.items()),
            body=request.content,
            key_id=self.key_id,
            private_key=self.private_key,
            created=int(self.clock()),
            nonce=new_nonce(),
        )
        request.headers.update(headers)


def new_nonce() -> str:
    """A random nonce: 16 bytes, base64url without padding."""
    raw = secrets.token_bytes(NONCE_BYTES)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a PEM file (PKCS#8, as `python -m sdk keygen` and
    `openssl genpkey -algorithm ed25519` write it)."""
    key = load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key
