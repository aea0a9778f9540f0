"""What the verifier accepts, checked through the whole stack: requests sent over HTTP (httpx's
ASGI transport) to the app on the real test database, signed by the SDK or, as an independent
client would, by `http-message-signatures` (pyauth). The clock is injected (FixedClock)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

from http_message_signatures import HTTPMessageSigner, MappingKeyResolver
from http_message_signatures.algorithms import ED25519

from core.clock import FixedClock
from exchange import nonces
from sdk import signing
from tests.api.conftest import AUTHORITY, Partner
from tests.api.test_error_codes import assert_problem
from tests.factories import unique
from tests.signing.test_interop import FieldLines, Request

EXTRA_DERIVED = ["@target-uri", "@scheme", "@request-target"]


def members_post(
    partner: Partner, clock: FixedClock, *, ahead_s: int
) -> tuple[bytes, dict[str, str]]:
    """A POST /v1/members signed by the SDK with `created` `ahead_s` seconds after the server."""
    body = json.dumps({"external_ref": unique("card")}).encode()
    headers = {
        "host": AUTHORITY,
        "content-type": "application/json",
        "idempotency-key": unique("k"),
    }
    headers |= signing.sign_request(
        method="POST",
        authority=AUTHORITY,
        path="/v1/members",
        query=None,
        headers=headers,
        body=body,
        key_id=partner.key_id,
        private_key=partner.private_key,
        created=int(clock.now().timestamp()) + ahead_s,
        nonce=uuid.uuid4().hex,
    )
    return body, headers


# --- The window: 300 s either way ----------------------------------------------------------------


async def test_created_200_s_ahead_is_accepted_and_400_s_ahead_is_refused(client, clock, partner):
    body, headers = members_post(partner, clock, ahead_s=200)
    accepted = await client.post("/v1/members", content=body, headers=headers)
    assert accepted.status_code == 201, accepted.text

    body, headers = members_post(partner, clock, ahead_s=400)
    refused = await client.post("/v1/members", content=body, headers=headers)
    assert_problem(refused, 401, "signature_expired")


async def test_a_request_from_the_future_replayed_500_s_later_is_still_refused(
    db, client, clock, partner
):
    # created = t + 250 is acceptable until t + 550: the nonce must outlive that, even when
    # `alliance expire` prunes the nonces in between.
    body, headers = members_post(partner, clock, ahead_s=250)
    assert (await client.post("/v1/members", content=body, headers=headers)).status_code == 201

    clock.advance(timedelta(seconds=500))
    await nonces.prune(db, clock.now())
    replay = await client.post("/v1/members", content=body, headers=headers)
    assert_problem(replay, 401, "replayed_request")

    clock.advance(timedelta(seconds=51))  # created is now 301 s old
    assert_problem(
        await client.post("/v1/members", content=body, headers=headers), 401, "signature_expired"
    )


# --- Signed by an independent RFC 9421 library, covering more than PROTOCOL.md requires --------


def pyauth_signed(
    partner: Partner,
    clock: FixedClock,
    *,
    method: str,
    url: str,
    body: bytes | None = None,
    covered: list[str],
    tag: str | None = None,
    content_digest: str | None = None,
) -> dict[str, str]:
    """The header fields `http-message-signatures` adds for `url` (absolute), with `created` now."""
    resolver = MappingKeyResolver(
        public_keys={partner.key_id: partner.private_key.public_key()},
        private_keys={partner.key_id: partner.private_key},
    )
    lines = [("Host", AUTHORITY)]
    if method == "POST":
        lines += [("Content-Type", "application/json"), ("Idempotency-Key", unique("k"))]
    if content_digest is not None:
        lines.append(("Content-Digest", content_digest))
    message = Request(method, url, FieldLines(lines))
    HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=resolver).sign(
        message,
        key_id=partner.key_id,
        created=datetime.fromtimestamp(clock.now().timestamp(), UTC),
        nonce=uuid.uuid4().hex,
        label="pyhms",
        tag=tag,
        covered_component_ids=covered,
        body=None if content_digest is not None else body,
        use_existing_digest=content_digest is not None,
    )
    return dict(message.headers.items())


GET_COVERED = [
    "@method",
    "@authority",
    "@path",
    "@query",
    *EXTRA_DERIVED,
    '"@query-param";name="limit"',
]


async def test_every_derived_request_component_signed_by_pyauth_is_accepted(client, clock, partner):
    url = f"http://{AUTHORITY}/v1/transactions?limit=10"
    headers = pyauth_signed(partner, clock, method="GET", url=url, covered=GET_COVERED, tag="till")
    assert '"@query-param";name="limit"' in headers["Signature-Input"]

    response = await client.get("/v1/transactions?limit=10", headers=headers)

    assert response.status_code == 200, response.text


async def test_a_tampered_query_is_refused_when_query_param_covers_it(client, clock, partner):
    url = f"http://{AUTHORITY}/v1/transactions?limit=10"
    headers = pyauth_signed(partner, clock, method="GET", url=url, covered=GET_COVERED)

    response = await client.get("/v1/transactions?limit=11", headers=headers)

    assert_problem(response, 401, "signature_invalid")


async def test_the_scheme_comes_from_the_proxy_and_is_plain_http_without_one(
    client, clock, partner
):
    # Signed for https://, as a client behind a TLS-terminating proxy signs: the proxy's
    # X-Forwarded-Proto says so; without it the exchange (plain HTTP) derives http and refuses.
    for forwarded, outcome in (("https", 200), (None, 401), ("http", 401)):
        url = f"https://{AUTHORITY}/v1/transactions?limit=10"
        headers = pyauth_signed(partner, clock, method="GET", url=url, covered=GET_COVERED)
        if forwarded is not None:
            headers["X-Forwarded-Proto"] = forwarded
        response = await client.get("/v1/transactions?limit=10", headers=headers)
        if outcome == 200:
            assert response.status_code == 200, response.text
        else:
            assert_problem(response, 401, "signature_invalid")


async def test_a_post_with_sha_256_and_a_garbage_sha_512_digest_is_accepted(client, clock, partner):
    body = json.dumps({"external_ref": unique("card")}).encode()
    sha_256 = signing.content_digest(body)
    garbage = base64.b64encode(bytes(64)).decode()
    covered = [
        "@method",
        "@authority",
        "@path",
        "content-digest",
        "idempotency-key",
        *EXTRA_DERIVED,
    ]
    for digest, accepted in (
        (f"{sha_256}, sha-512=:{garbage}:", True),
        (f"sha-512=:{garbage}:, {sha_256}", True),
        (f"sha-256=:{base64.b64encode(bytes(32)).decode()}:, sha-512=:{garbage}:", False),
        (f"sha-512=:{garbage}:", False),
    ):
        headers = pyauth_signed(
            partner,
            clock,
            method="POST",
            url=f"http://{AUTHORITY}/v1/members",
            body=body,
            covered=covered,
            tag="till",
            content_digest=digest,
        )
        response = await client.post("/v1/members", content=body, headers=headers)
        if accepted:
            assert response.status_code in (200, 201), response.text
        else:
            assert_problem(response, 401, "signature_invalid")
