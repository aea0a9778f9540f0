"""Signed requests for the verifier tests: one valid request, and ways to bend one part of it."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.signatures import SignedRequest
from sdk import signing

KEY_ID = "key_test_1"
PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_KEY = PRIVATE_KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
OTHER_PUBLIC_KEY = OTHER_KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
)
NOW = 1_800_000_000
HOST = "api.exchange.example"
BODY = b'{"member_id": "mem_1", "points": 10, "reference": "r-1"}'


def signed_request(
    *,
    method: str = "POST",
    path: str = "/v1/issuances",
    query: str | None = None,
    body: bytes = BODY,
    headers: Mapping[str, str] | None = None,
    created: int = NOW,
    nonce: str = "nonce-1",
    expires: int | None = None,
) -> SignedRequest:
    """A request signed by the SDK exactly as PROTOCOL.md asks: the baseline every test bends."""
    fields = {"host": HOST, "idempotency-key": "idem-1", "content-type": "application/json"}
    fields.update(headers or {})
    added = signing.sign_request(
        method=method,
        authority=fields["host"],
        path=path,
        query=query,
        headers=fields,
        body=body,
        key_id=KEY_ID,
        private_key=PRIVATE_KEY,
        created=created,
        nonce=nonce,
        expires=expires,
    )
    fields.update({name.lower(): value for name, value in added.items()})
    return SignedRequest(method, fields["host"], path, query, fields, body)


def with_headers(request: SignedRequest, **changes: str | None) -> SignedRequest:
    """The same request with header fields replaced (`None` removes one); `_` stands for `-`."""
    fields = dict(request.headers)
    for name, value in changes.items():
        field = name.replace("_", "-")
        if value is None:
            fields.pop(field, None)
        else:
            fields[field] = value
    return SignedRequest(
        request.method, request.authority, request.path, request.query, fields, request.body
    )


def resigned(
    request: SignedRequest,
    inner_list: str,
    *,
    label: str = "sig1",
    key: Ed25519PrivateKey = PRIVATE_KEY,
) -> SignedRequest:
    """The request with a hand-written Signature-Input member, signed properly where the base can
    be built, so that only the bent part can be what the verifier refuses."""
    signature = _sign_if_possible(request, inner_list, key)
    return with_headers(
        request,
        signature_input=f"{label}={inner_list}",
        signature=f"{label}=:{base64.b64encode(signature).decode()}:",
    )


def _sign_if_possible(request: SignedRequest, inner_list: str, key: Ed25519PrivateKey) -> bytes:
    components = inner_list[1 : inner_list.index(")")].split()
    names = [component.strip('"') for component in components]
    try:
        lines = signing.request_components(
            covered=names,
            method=request.method,
            authority=request.authority,
            path=request.path,
            query=request.query,
            headers=request.headers,
            combined_fields=True,
        )
        return signing.sign_ed25519(signing.signature_base(lines, inner_list), key)
    except ValueError:
        return bytes(signing.ED25519_SIGNATURE_BYTES)  # refused before any key is needed
