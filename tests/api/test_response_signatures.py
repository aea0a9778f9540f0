"""Every /v1/ response, success or problem, is signed with a key published at /v1/exchange-keys."""

from __future__ import annotations

import base64

import pytest

from sdk.signing import ResponseSignatureError, verify_response
from tests.api.conftest import call


async def published_keys(client) -> dict[str, bytes]:
    keys = (await client.get("/v1/exchange-keys")).json()["keys"]
    return {key["kid"]: base64.urlsafe_b64decode(key["x"] + "==") for key in keys}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/members", {"external_ref": "card-signed-response"}, {200, 201}),
        ("GET", "/v1/transactions/txn_missing", None, {404}),
        (
            "POST",
            "/v1/redemptions",
            {"member_id": "mbr_missing", "points": 1, "reference": "x"},
            {404},
        ),
        ("POST", "/v1/issuances", {"points": "many"}, {422}),
    ],
)
async def test_response_is_signed_by_a_published_exchange_key(
    client, clock, partner, method, path, body, status
):
    response = await call(client, partner, clock, method, path, json_body=body)
    assert response.status_code in status
    key_id = verify_response(
        status=response.status_code,
        headers=dict(response.headers),
        body=response.content,
        request_method=method,
        request_path=path,
        public_keys=await published_keys(client),
        now=int(clock.now().timestamp()),
    )
    assert key_id in await published_keys(client)


async def test_unauthenticated_refusal_is_signed_too(client, clock):
    response = await client.get("/v1/transactions")
    assert response.status_code == 401
    assert response.json()["code"] == "signature_missing"
    verify_response(
        status=401,
        headers=dict(response.headers),
        body=response.content,
        request_method="GET",
        request_path="/v1/transactions",
        public_keys=await published_keys(client),
        now=int(clock.now().timestamp()),
    )


async def test_altered_response_body_fails_verification(client, clock, partner):
    response = await call(client, partner, clock, "GET", "/v1/statements")
    with pytest.raises(ResponseSignatureError):
        verify_response(
            status=200,
            headers=dict(response.headers),
            body=response.content.replace(b"[]", b"[1]"),
            request_method="GET",
            request_path="/v1/statements",
            public_keys=await published_keys(client),
            now=int(clock.now().timestamp()),
        )
