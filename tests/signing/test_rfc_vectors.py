"""S1: the RFC 9421 and RFC 9530 vectors, byte for byte (RELIABILITY.md, Signing)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import http_sf
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.signatures import SignatureError, SignedRequest, check_signature, read_signature
from sdk import signing
from tests.signing import vectors as rfc


def _private_key() -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(rfc.TEST_KEY_ED25519_PRIVATE_PEM, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _public_key() -> bytes:
    key = serialization.load_pem_public_key(rfc.TEST_KEY_ED25519_PUBLIC_PEM)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _signature_bytes(field: str) -> bytes:
    return base64.b64decode(field.split("=:", 1)[1].removesuffix(":"))


def _b26_lines() -> list[tuple[str, str]]:
    headers = rfc.REQUEST_HEADERS
    return [
        (signing.component_id("date"), signing.field_value(headers["date"])),
        (signing.component_id("@method"), signing.method_value(rfc.REQUEST_METHOD)),
        (signing.component_id("@path"), signing.path_value(rfc.REQUEST_PATH)),
        (signing.component_id("@authority"), signing.authority_value(rfc.REQUEST_AUTHORITY)),
        (signing.component_id("content-type"), signing.field_value(headers["content-type"])),
        (signing.component_id("content-length"), signing.field_value(headers["content-length"])),
    ]


def _b26_params() -> str:
    lines = _b26_lines()
    return signing.serialize_signature_params(
        [identifier for identifier, _ in lines], created=rfc.CREATED, keyid=rfc.TEST_KEY_ED25519_ID
    )


def test_b14_public_key_is_the_public_half_of_the_private_key() -> None:
    public = _private_key().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == _public_key()


def test_b26_signature_params_are_byte_exact() -> None:
    assert f"sig-b26={_b26_params()}" == rfc.B26_SIGNATURE_INPUT


def test_b26_signature_base_is_byte_exact() -> None:
    assert signing.signature_base(_b26_lines(), _b26_params()) == rfc.B26_BASE


def test_b26_signature_is_byte_exact() -> None:
    signature = signing.sign_ed25519(rfc.B26_BASE, _private_key())
    assert signature == _signature_bytes(rfc.B26_SIGNATURE)


def test_b26_signature_verifies_with_the_b14_public_key() -> None:
    signature = _signature_bytes(rfc.B26_SIGNATURE)
    assert signing.verify_ed25519(rfc.B26_BASE, signature, _public_key())
    assert not signing.verify_ed25519(rfc.B26_BASE + b" ", signature, _public_key())


def test_b26_signature_input_reserializes_byte_exact_through_http_sf() -> None:
    # The verifier rebuilds "@signature-params" by re-serializing what http-sf parsed.
    parsed = http_sf.parse(rfc.B26_SIGNATURE_INPUT.encode(), tltype="dictionary")
    assert http_sf.ser(parsed) == rfc.B26_SIGNATURE_INPUT


def _b26_request(extra_headers: dict[str, str]) -> SignedRequest:
    return SignedRequest(
        method=rfc.REQUEST_METHOD,
        authority=rfc.REQUEST_HEADERS["host"],
        path=rfc.REQUEST_PATH,
        query=rfc.REQUEST_QUERY,
        headers={**rfc.REQUEST_HEADERS, **extra_headers},
        body=rfc.REQUEST_BODY,
    )


def test_b26_as_published_is_refused_for_lacking_a_nonce() -> None:
    request = _b26_request(
        {"signature-input": rfc.B26_SIGNATURE_INPUT, "signature": rfc.B26_SIGNATURE}
    )
    with pytest.raises(SignatureError) as refused:
        read_signature(request, now=rfc.CREATED)
    assert refused.value.code == "signature_invalid"
    assert "nonce" in refused.value.detail


def test_b26_resigned_with_a_nonce_and_the_protocol_components_is_accepted() -> None:
    """The B.2.6 components and key, plus what PROTOCOL.md requires of a POST with a query and a
    body; the RFC's sha-512 digest stays beside the sha-256 one, and both are checked."""
    digest = f"sha-256=:{rfc.HELLO_WORLD_SHA_256}:, {rfc.REQUEST_HEADERS['content-digest']}"
    headers = {"content-digest": digest, "idempotency-key": "b26-variant"}
    lines = [
        *_b26_lines(),
        (signing.component_id("@query"), signing.query_value(rfc.REQUEST_QUERY)),
        (signing.component_id("content-digest"), digest),
        (signing.component_id("idempotency-key"), "b26-variant"),
    ]
    params = signing.serialize_signature_params(
        [identifier for identifier, _ in lines],
        created=rfc.CREATED,
        keyid=rfc.TEST_KEY_ED25519_ID,
        nonce="b26-nonce",
    )
    signature = signing.sign_ed25519(signing.signature_base(lines, params), _private_key())
    headers["signature-input"] = f"sig-b26={params}"
    headers["signature"] = f"sig-b26=:{base64.b64encode(signature).decode()}:"

    claims = read_signature(_b26_request(headers), now=rfc.CREATED)
    check_signature(claims, _public_key())

    assert claims.base.startswith(rfc.B26_BASE.split(b'"@signature-params"')[0])
    assert (claims.label, claims.key_id, claims.nonce) == (
        "sig-b26",
        rfc.TEST_KEY_ED25519_ID,
        "b26-nonce",
    )


def test_b23_signature_base_is_byte_exact() -> None:
    headers = rfc.REQUEST_HEADERS
    lines = [
        ('"date"', signing.field_value(headers["date"])),
        ('"@method"', signing.method_value(rfc.REQUEST_METHOD)),
        ('"@path"', signing.path_value(rfc.REQUEST_PATH)),
        ('"@query"', signing.query_value(rfc.REQUEST_QUERY)),
        ('"@authority"', signing.authority_value(rfc.REQUEST_AUTHORITY)),
        ('"content-type"', signing.field_value(headers["content-type"])),
        ('"content-digest"', signing.field_value(headers["content-digest"])),
        ('"content-length"', signing.field_value(headers["content-length"])),
    ]
    params = signing.serialize_signature_params(
        [identifier for identifier, _ in lines], created=rfc.CREATED, keyid="test-key-rsa-pss"
    )
    assert f"sig-b23={params}" == rfc.B23_SIGNATURE_INPUT
    assert signing.signature_base(lines, params) == rfc.B23_BASE


def test_b25_signature_base_is_byte_exact_and_reproduces_the_hmac() -> None:
    lines = [
        ('"date"', rfc.REQUEST_HEADERS["date"]),
        ('"@authority"', signing.authority_value(rfc.REQUEST_AUTHORITY)),
        ('"content-type"', rfc.REQUEST_HEADERS["content-type"]),
    ]
    params = signing.serialize_signature_params(
        [identifier for identifier, _ in lines], created=rfc.CREATED, keyid="test-shared-secret"
    )
    base = signing.signature_base(lines, params)
    secret = base64.b64decode(rfc.TEST_SHARED_SECRET_B64)

    assert base == rfc.B25_BASE
    assert hmac.digest(secret, base, "sha256") == _signature_bytes(rfc.B25_SIGNATURE)


UNSUPPORTED_EXAMPLES = [
    pytest.param(rfc.B21_SIGNATURE_INPUT, rfc.B21_SIGNATURE, "unsupported", id="B.2.1-rsa-pss"),
    pytest.param(rfc.B22_SIGNATURE_INPUT, rfc.B22_SIGNATURE, "unsupported", id="B.2.2-rsa-pss"),
    pytest.param(rfc.B23_SIGNATURE_INPUT, rfc.B23_SIGNATURE, "unsupported", id="B.2.3-rsa-pss"),
    # ECDSA P-256 signatures are 64 bytes like Ed25519 ones, so B.2.4 is refused for what it
    # covers (and would never verify: only Ed25519 keys can be registered, ADR 0003).
    pytest.param(rfc.B24_SIGNATURE_INPUT, rfc.B24_SIGNATURE, "nonce", id="B.2.4-ecdsa"),
    pytest.param(rfc.B25_SIGNATURE_INPUT, rfc.B25_SIGNATURE, "unsupported", id="B.2.5-hmac"),
]


@pytest.mark.parametrize(("signature_input", "signature", "reason"), UNSUPPORTED_EXAMPLES)
def test_other_algorithms_examples_are_refused_cleanly(
    signature_input: str, signature: str, reason: str
) -> None:
    headers = {**rfc.RESPONSE_HEADERS} if "b24" in signature_input else {}
    request = _b26_request({**headers, "signature-input": signature_input, "signature": signature})
    with pytest.raises(SignatureError) as refused:
        read_signature(request, now=rfc.CREATED)
    assert refused.value.code == "signature_invalid"
    assert reason in refused.value.detail


@pytest.mark.parametrize(
    ("signature_input", "signature", "alg"),
    [
        (rfc.B21_SIGNATURE_INPUT, rfc.B21_SIGNATURE, "rsa-pss-sha512"),
        (rfc.B24_SIGNATURE_INPUT, rfc.B24_SIGNATURE, "ecdsa-p256-sha256"),
        (rfc.B25_SIGNATURE_INPUT, rfc.B25_SIGNATURE, "hmac-sha256"),
    ],
)
def test_other_algorithms_named_in_alg_are_refused_as_unsupported(
    signature_input: str, signature: str, alg: str
) -> None:
    request = _b26_request(
        {"signature-input": f'{signature_input};alg="{alg}"', "signature": signature}
    )
    with pytest.raises(SignatureError) as refused:
        read_signature(request, now=rfc.CREATED)
    assert refused.value.code == "signature_invalid"
    assert f"algorithm {alg} is unsupported" in refused.value.detail


def test_rfc9530_sha_256_of_hello_world() -> None:
    assert signing.content_digest(rfc.HELLO_WORLD) == f"sha-256=:{rfc.HELLO_WORLD_SHA_256}:"


def test_rfc9530_sha_512_of_hello_world() -> None:
    digest = base64.b64encode(hashlib.sha512(rfc.HELLO_WORLD).digest()).decode()
    assert digest == rfc.HELLO_WORLD_SHA_512


def test_rfc9530_b1_content_digest_of_hello_world_with_a_newline() -> None:
    assert signing.content_digest(rfc.HELLO_WORLD + b"\n") == rfc.HELLO_WORLD_LF_CONTENT_DIGEST


def test_rfc9421_test_request_digest_is_the_sha_512_of_hello_world() -> None:
    assert rfc.REQUEST_BODY == rfc.HELLO_WORLD
    assert rfc.REQUEST_HEADERS["content-digest"] == f"sha-512=:{rfc.HELLO_WORLD_SHA_512}:"
