"""Parsing merchant public keys: the three accepted formats, and everything else refused."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from merchants.errors import InvalidField, InvalidPublicKey
from merchants.keys import (
    check_key_id,
    jwk_thumbprint,
    new_key_id,
    parse_public_key,
    public_key_jwk,
)

PRIVATE = Ed25519PrivateKey.generate()
RAW = PRIVATE.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
PEM = (
    PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_base64_raw_key_is_parsed() -> None:
    assert parse_public_key(base64.b64encode(RAW).decode()) == RAW


def test_base64url_raw_key_is_parsed_with_or_without_padding() -> None:
    padded = base64.urlsafe_b64encode(RAW).decode()
    assert parse_public_key(padded) == RAW
    assert parse_public_key(padded.rstrip("=")) == RAW


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_public_key(f"  {base64.b64encode(RAW).decode()}\n") == RAW


def test_pem_subject_public_key_info_is_parsed() -> None:
    assert parse_public_key(PEM) == RAW


def test_jwk_dict_is_parsed() -> None:
    assert parse_public_key({"kty": "OKP", "crv": "Ed25519", "x": _b64url(RAW)}) == RAW


def test_jwk_json_text_is_parsed() -> None:
    jwk = json.dumps({"kty": "OKP", "crv": "Ed25519", "x": _b64url(RAW), "kid": "k1"})
    assert parse_public_key(jwk) == RAW


def test_public_key_jwk_round_trips() -> None:
    jwk = public_key_jwk(RAW, "key_1")
    assert jwk == {"kty": "OKP", "crv": "Ed25519", "x": _b64url(RAW), "kid": "key_1", "use": "sig"}
    assert parse_public_key(jwk) == RAW


def test_jwk_thumbprint_matches_rfc_8037_example() -> None:
    # RFC 8037 appendix A.3.
    raw = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    assert jwk_thumbprint(raw) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.parametrize(
    "garbage",
    ["", "not a key", "%%%%", "AAAA=AAAA", "ab+c-d/e_f", "-----BEGIN PUBLIC KEY-----\nxx\n"],
)
def test_garbage_is_rejected(garbage: str) -> None:
    with pytest.raises(InvalidPublicKey):
        parse_public_key(garbage)


@pytest.mark.parametrize("length", [1, 31, 33, 44, 64])
def test_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(InvalidPublicKey, match="32 bytes"):
        parse_public_key(base64.b64encode(bytes(range(length))).decode())


def test_non_canonical_base64_is_rejected() -> None:
    # The last character of 32 bytes in base64 carries 4 unused bits; set one of them.
    canonical = base64.b64encode(bytes(32)).decode()  # "AAAA…AAA="
    tweaked = canonical[:-2] + "B="
    with pytest.raises(InvalidPublicKey, match="non-canonical"):
        parse_public_key(tweaked)


def _pem(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_rsa_pem_is_rejected() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(InvalidPublicKey, match="not Ed25519"):
        parse_public_key(_pem(rsa_key))


def test_p256_pem_is_rejected() -> None:
    with pytest.raises(InvalidPublicKey, match="not Ed25519"):
        parse_public_key(_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))


def test_x25519_pem_is_rejected() -> None:
    x25519 = X25519PrivateKey.generate().public_key()
    pem = x25519.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(InvalidPublicKey, match="not Ed25519"):
        parse_public_key(pem)


def test_private_key_pem_is_rejected() -> None:
    pem = PRIVATE.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(InvalidPublicKey, match="private key"):
        parse_public_key(pem)


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "OKP", "crv": "X25519", "x": _b64url(RAW)},
        {"kty": "EC", "crv": "Ed25519", "x": _b64url(RAW)},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "OKP", "crv": "Ed25519", "x": 12},
        {"kty": "OKP", "crv": "Ed25519", "x": _b64url(RAW[:31])},
    ],
)
def test_malformed_jwk_is_rejected(jwk: dict[str, object]) -> None:
    with pytest.raises(InvalidPublicKey):
        parse_public_key(jwk)


def test_jwk_with_private_part_is_rejected() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(RAW), "d": _b64url(bytes(32))}
    with pytest.raises(InvalidPublicKey, match="private key"):
        parse_public_key(jwk)


def test_jwk_json_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(InvalidPublicKey):
        parse_public_key("{not json")


def test_errors_carry_the_validation_error_code() -> None:
    with pytest.raises(InvalidPublicKey) as caught:
        parse_public_key("nope")
    assert caught.value.code == "validation_error"


def test_generated_key_ids_are_prefixed_and_valid() -> None:
    key_id = new_key_id()
    assert key_id.startswith("key_")
    assert check_key_id(key_id) == key_id


@pytest.mark.parametrize("key_id", ["", "has space", "x" * 129, "slash/no", "ключ"])
def test_malformed_key_id_is_rejected(key_id: str) -> None:
    with pytest.raises(InvalidField):
        check_key_id(key_id)
