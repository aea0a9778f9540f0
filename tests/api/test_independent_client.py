"""An independent RFC 9421 client (the http-message-signatures package, as a partner would use
any library) signs requests the exchange accepts, and verifies the exchange's responses with the
key it fetched from GET /v1/exchange-keys — the loop PROTOCOL.md promises, end to end."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import ED25519

from core.clock import FixedClock
from sdk.signing import RESPONSE_COMPONENTS
from tests.api.conftest import AUTHORITY
from tests.signing.test_interop import FieldLines, Request, Response


@pytest.fixture
def clock() -> FixedClock:
    # The independent verifier checks `created` against the wall clock: serve in real time.
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


async def test_independent_client_round_trip(client, clock, partner):
    body = json.dumps({"external_ref": f"card-{uuid.uuid4().hex}"}).encode()
    url = f"http://{AUTHORITY}/v1/members"
    headers = FieldLines(
        [
            ("Host", AUTHORITY),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", uuid.uuid4().hex),
        ]
    )
    request = Request("POST", url, headers)
    signer = HTTPMessageSigner(
        signature_algorithm=ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={}, private_keys={partner.key_id: partner.private_key}
        ),
    )
    signer.sign(
        request,
        key_id=partner.key_id,
        created=clock.now(),
        nonce=uuid.uuid4().hex,
        covered_component_ids=(
            "@method",
            "@authority",
            "@path",
            "content-digest",
            "idempotency-key",
        ),
        body=body,  # the library adds Content-Digest (RFC 9530)
    )

    response = await client.post(url, content=body, headers=dict(request.headers.items()))
    assert response.status_code == 201, response.text

    jwks = (await client.get("/v1/exchange-keys")).json()["keys"]
    public_keys = {
        key["kid"]: Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
        for key in jwks
    }
    verifier = HTTPMessageVerifier(
        signature_algorithm=ED25519,
        key_resolver=MappingKeyResolver(public_keys=public_keys, private_keys={}),
    )
    signed_response = Response(response.status_code, FieldLines(response.headers.items()), request)
    (result,) = verifier.verify(
        signed_response,
        body=response.content,
        max_age=timedelta(seconds=300),
        require_components=RESPONSE_COMPONENTS,
    )
    assert result.body == response.content
