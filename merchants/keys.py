"""Merchant Ed25519 public keys: parse what an operator pastes, render as JWK, name with key ids.

All key handling goes through `cryptography`; nothing here does arithmetic on curve points. The
stored form is always the 32 raw bytes (RFC 8032), whatever format the key arrived in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.ids import new_id
from merchants.errors import InvalidField, InvalidPublicKey

PUBLIC_KEY_LENGTH = 32
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def parse_public_key(value: str | Mapping[str, Any]) -> bytes:
    """The raw 32 bytes of an Ed25519 public key given as PEM, a JWK (dict or JSON), or base64.

    Base64 may be standard or URL-safe, padded or not, and must encode exactly the raw key.
    """
    if isinstance(value, Mapping):
        return _from_jwk(value)
    text = value.strip()
    if "PRIVATE KEY" in text:
        # Refuse loudly: an operator pasting a private key must learn it, not have it "work".
        raise InvalidPublicKey("that is a private key; give the merchant's public key only")
    if text.startswith("-----BEGIN"):
        return _from_pem(text)
    if text.startswith("{"):
        return _from_jwk(_json_object(text))
    return _checked(_decode_base64(text, field="public_key"))


def public_key_jwk(raw: bytes, key_id: str) -> dict[str, str]:
    """The key as an RFC 8037 OKP JWK, e.g. for a JWK set."""
    _checked(raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": key_id, "use": "sig"}


def jwk_thumbprint(raw: bytes) -> str:
    """RFC 7638 thumbprint: a short fingerprint the operator and the merchant can compare."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_checked(raw))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def new_key_id() -> str:
    return new_id("key")


def check_key_id(key_id: str) -> str:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise InvalidField("key id must be 1-128 characters of A-Z a-z 0-9 . _ : -", field="key_id")
    return key_id


def check_public_key(raw: bytes) -> bytes:
    """`raw` itself, once it is known to be 32 bytes the library accepts as an Ed25519 key."""
    return _checked(raw)


def _checked(raw: bytes) -> bytes:
    if len(raw) != PUBLIC_KEY_LENGTH:
        raise InvalidPublicKey(
            f"an Ed25519 public key is {PUBLIC_KEY_LENGTH} bytes, got {len(raw)} "
            "(for a PEM key, give the whole file including the BEGIN and END lines)",
            field="public_key",
        )
    Ed25519PublicKey.from_public_bytes(raw)  # the library's own check, not ours
    return raw


def _from_pem(text: str) -> bytes:
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as error:
        raise InvalidPublicKey("not a readable PEM public key", field="public_key") from error
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidPublicKey(
            f"the PEM key is {type(key).__name__}, not Ed25519", field="public_key"
        )
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _json_object(text: str) -> Mapping[str, Any]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidPublicKey("not valid JSON for a JWK", field="public_key") from error
    if not isinstance(parsed, dict):
        raise InvalidPublicKey("a JWK must be a JSON object", field="public_key")
    return parsed


def _from_jwk(jwk: Mapping[str, Any]) -> bytes:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise InvalidPublicKey(
            'a JWK must have "kty": "OKP" and "crv": "Ed25519"', field="public_key"
        )
    if "d" in jwk:
        raise InvalidPublicKey(
            "that JWK holds a private key; give the public part only", field="public_key"
        )
    x = jwk.get("x")
    if not isinstance(x, str):
        raise InvalidPublicKey('a JWK needs the public key as a string "x"', field="public_key")
    return _checked(_decode_base64(x, field="public_key"))


def _decode_base64(text: str, *, field: str) -> bytes:
    """Strict base64 or base64url: one alphabet, canonical encoding, padding optional."""
    unpadded = text.rstrip("=")
    if _BASE64.fullmatch(text):
        alphabet = "standard"
    elif _BASE64URL.fullmatch(text):
        alphabet = "url"
    else:
        raise InvalidPublicKey("not base64, base64url, PEM or a JWK", field=field)
    standard = unpadded.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except binascii.Error as error:
        raise InvalidPublicKey("malformed base64", field=field) from error
    # Non-zero trailing bits give a second spelling of the same key; accept one spelling only.
    again = base64.b64encode(raw).decode().rstrip("=")
    if alphabet == "url":
        again = again.replace("+", "-").replace("/", "_")
    if again != unpadded:
        raise InvalidPublicKey("non-canonical base64", field=field)
    return raw


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
