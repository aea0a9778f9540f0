"""Webhooks: a POST the exchange signs with the key it signs answers with, covering what
PROTOCOL.md makes a merchant cover on a request. The helper accepts exactly those."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.exchange_keys import ExchangeKey
from sdk import UnknownWebhookKeyError, WebhookVerificationError, verify_webhook
from sdk.signing import (
    content_digest,
    request_components,
    serialize_signature_params,
    sign_ed25519,
    sign_request,
    signature_base,
    split_url,
)
from tests.sdk.conftest import Api, Partner
from tests.sdk.mock_exchange import raw_public

URL = "https://shop.example:8443/hooks/alliance?till=7"
EVENT = {"type": "points.expired", "member_id": "mbr_1", "points": 40}


def signed_webhook(
    key_id: str,
    private_key: Ed25519PrivateKey,
    *,
    url: str = URL,
    body: bytes | None = None,
    created: int | None = None,
    expires: int | None = None,
) -> tuple[dict[str, str], bytes]:
    """A webhook as the exchange sends one: a signed POST with an idempotency key (the event id)."""
    body = json.dumps(EVENT).encode() if body is None else body
    parts = split_url(url)
    headers = {"content-type": "application/json", "idempotency-key": "evt_01M83EN0P7W4"}
    headers |= sign_request(
        method="POST",
        authority=parts.authority,
        path=parts.path,
        query=parts.query,
        headers=headers,
        body=body,
        key_id=key_id,
        private_key=private_key,
        created=int(time.time()) if created is None else created,
        nonce=uuid.uuid4().hex,
        expires=expires,
    )
    return headers, body


KEY = Ed25519PrivateKey.generate()
KEYS = {"xk_1": raw_public(KEY)}


def check(headers: dict[str, str], body: bytes, *, url: str = URL, method: str = "POST"):
    return verify_webhook(
        method=method, url=url, headers=headers, body=body, public_keys=KEYS, now=time.time()
    )


def test_a_webhook_signed_by_the_exchange_key_verifies():
    headers, body = signed_webhook("xk_1", KEY)

    event = check(headers, body)

    assert event.key_id == "xk_1"
    assert event.data == EVENT
    assert event.idempotency_key == "evt_01M83EN0P7W4"
    assert event.body == body


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (URL, json.dumps({**EVENT, "points": 4000}).encode()),
        ("https://shop.example:8443/hooks/other?till=7", None),
        ("https://evil.example:8443/hooks/alliance?till=7", None),
        ("https://shop.example:8443/hooks/alliance?till=8", None),
        ("https://shop.example:8443/hooks/alliance", None),
    ],
    ids=["body", "path", "authority", "query", "query-dropped"],
)
def test_a_webhook_altered_on_the_way_is_refused(url, body):
    headers, sent = signed_webhook("xk_1", KEY)

    with pytest.raises(WebhookVerificationError):
        check(headers, sent if body is None else body, url=url)


def test_a_webhook_with_a_recomputed_digest_still_fails_its_signature():
    headers, _ = signed_webhook("xk_1", KEY)
    forged = json.dumps({**EVENT, "points": 4000}).encode()
    headers["Content-Digest"] = content_digest(forged)

    with pytest.raises(WebhookVerificationError, match="does not verify"):
        check(headers, forged)


def test_a_webhook_forged_under_the_exchange_key_id_is_refused():
    headers, body = signed_webhook("xk_1", Ed25519PrivateKey.generate())

    with pytest.raises(WebhookVerificationError, match="does not verify"):
        check(headers, body)


def test_an_unknown_key_id_is_reported_as_such():
    headers, body = signed_webhook("xk_other", KEY)

    with pytest.raises(UnknownWebhookKeyError) as refused:
        check(headers, body)
    assert refused.value.key_id == "xk_other"


@pytest.mark.parametrize(
    ("created", "expires"),
    [(-302, None), (+302, None), (0, -1)],
    ids=["too-old", "too-far-in-the-future", "expired"],
)
def test_a_webhook_outside_its_window_is_refused(created, expires):
    now = int(time.time())
    headers, body = signed_webhook(
        "xk_1", KEY, created=now + created, expires=None if expires is None else now + expires
    )

    with pytest.raises(WebhookVerificationError, match="window|expired"):
        check(headers, body)


@pytest.mark.parametrize("created", [-200, +200], ids=["clock-ahead", "clock-behind"])
def test_a_webhook_verifies_with_a_local_clock_200_s_off_either_way(created):
    # +200: the exchange's clock is 200 s ahead of ours, so its signature is from our future.
    headers, body = signed_webhook("xk_1", KEY, created=int(time.time()) + created)

    assert check(headers, body).key_id == "xk_1"


def test_a_signature_that_covers_too_little_is_refused():
    # Signed correctly, but without the idempotency key: a replayed event could not be told apart.
    body = json.dumps(EVENT).encode()
    parts = split_url(URL)
    headers = {"content-digest": content_digest(body), "idempotency-key": "evt_1"}
    covered = ["@method", "@authority", "@path", "@query", "content-digest"]
    lines = request_components(
        covered=covered,
        method="POST",
        authority=parts.authority,
        path=parts.path,
        query=parts.query,
        headers=headers,
    )
    params = serialize_signature_params(
        [identifier for identifier, _ in lines], created=int(time.time()), keyid="xk_1", nonce="n1"
    )
    signature = sign_ed25519(signature_base(lines, params), KEY)
    headers["signature-input"] = f"sig1={params}"
    headers["signature"] = f"sig1=:{base64.b64encode(signature).decode()}:"

    with pytest.raises(WebhookVerificationError, match="does not cover idempotency-key"):
        check(headers, body)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h.pop("Signature"),
        lambda h: h.pop("Signature-Input"),
        lambda h: h.update({"Signature-Input": h["Signature-Input"] + ', sig2=("@path")'}),
        lambda h: h.update({"Signature-Input": h["Signature-Input"] + ';alg="rsa-pss-sha512"'}),
        lambda h: h.update({"Signature-Input": h["Signature-Input"] + ';tag="other"'}),
        lambda h: h.update({"Signature": "sig2=" + h["Signature"].partition("=")[2]}),
    ],
    ids=["no-signature", "no-input", "two-signatures", "other-alg", "tag", "label-mismatch"],
)
def test_a_malformed_signature_is_refused(mangle):
    headers, body = signed_webhook("xk_1", KEY)
    mangle(headers)

    with pytest.raises(WebhookVerificationError):
        check(headers, body)


async def test_the_client_verifies_a_webhook_with_the_exchanges_published_keys(
    api: Api, exchange_key: ExchangeKey
):
    headers, body = signed_webhook(exchange_key.key_id, exchange_key.private_key)

    event = await api.verify_webhook(method="POST", url=URL, headers=headers, body=body)

    assert event.key_id == exchange_key.key_id
    assert event.data == EVENT


async def test_the_client_refuses_a_webhook_signed_by_a_merchant(api: Api, partner: Partner):
    headers, body = signed_webhook(partner.key_id, partner.private_key)

    with pytest.raises(UnknownWebhookKeyError):
        await api.verify_webhook(method="POST", url=URL, headers=headers, body=body)
