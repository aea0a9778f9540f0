"""A pytest plugin that switches request signature verification off, for the meta-test only.

    python -m pytest tests/api/test_signature_refusals.py -p tests.api.disable_verification

The gateway still looks the key up, checks its merchant and records the nonce, but it no longer
checks the signature: `read_signature` becomes a parser that only picks out `keyid`, `nonce` (a
fresh one when there is none) and `created`, and `check_signature` accepts anything.
test_verification_meta.py asserts that the refusal matrix then fails, which shows that its cases
pass only because signatures are verified.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from exchange.signatures import SignatureClaims, SignedRequest


def _param(signature_input: str, name: str) -> str:
    found = re.search(rf';{name}=(?:"([^"]*)"|(\d+))', signature_input)
    return (found.group(1) or found.group(2)) if found else ""


def read_signature_permissively(request: SignedRequest, *, now: int, **_: Any) -> SignatureClaims:
    value = request.headers.get("signature-input", "")
    created = _param(value, "created")
    return SignatureClaims(
        label="sig1",
        key_id=_param(value, "keyid"),
        nonce=_param(value, "nonce") or uuid.uuid4().hex,
        created=int(created) if created else now,
        expires=None,
        covered=(),
        signature=b"",
        base=b"",
    )


def check_nothing(claims: SignatureClaims, public_key: bytes) -> None:
    return None


@pytest.hookimpl
def pytest_configure(config: pytest.Config) -> None:
    from exchange.api import gateway

    gateway.read_signature = read_signature_permissively  # type: ignore[assignment]
    gateway.check_signature = check_nothing
