"""Checking that a webhook came from the exchange: a POST it signed with its own key.

A webhook is a request like any other of PROTOCOL.md, only the other way round: the exchange
signs it, RFC 9421 with Ed25519, with the key it signs answers with (published at
`GET /v1/exchange-keys`), and covers what PROTOCOL.md makes a merchant cover on a request:
`"@method"`, `"@authority"`, `"@path"`, `"@query"` when the URL has a query, `"content-digest"`
when there is a body, and `"idempotency-key"` on a POST, with `keyid`, `created` and `nonce`.
The idempotency key names the event, so a delivery retried by the exchange has the same one:
process each key once. Needs only the standard library and `cryptography`, so it fits in any web
framework; `AllianceClient.verify_webhook` adds the fetching and caching of the exchange's keys.

    event = verify_webhook(
        method=request.method, url=str(request.url), headers=request.headers,
        body=await request.body(), public_keys=keys, now=time.time(),
    )
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sdk._errors import AllianceError
from sdk.signing import (
    ALGORITHM,
    CREATED_TOLERANCE_S,
    content_digest,
    request_components,
    request_covered_components,
    signature_base,
    split_url,
    verify_ed25519,
)

__all__ = ["UnknownWebhookKeyError", "WebhookEvent", "WebhookVerificationError", "verify_webhook"]

# A strict reading of exactly one signature, as the exchange writes it (no optional whitespace,
# plain component names without parameters); anything else is refused, never guessed at.
_KEY: Final = r"[a-z*][a-z0-9_\-.*]*"
_STRING: Final = r'"(?:[ !#-\[\]-~]|\\[\\"])*"'
_VALUE: Final = rf"[0-9]{{1,15}}|{_STRING}"
_PAIR: Final = re.compile(rf";({_KEY})=({_VALUE})")
_INPUT: Final = re.compile(
    rf"(?P<label>{_KEY})="
    rf"(?P<params>\((?P<components>[^()]*)\)(?P<pairs>(?:;{_KEY}=(?:{_VALUE}))*))"
)
_COMPONENT: Final = re.compile(r"\"(@?[a-z0-9!#$%&'*+\-.^_`|~]+)\"")
_SIGNATURE: Final = re.compile(rf"(?P<label>{_KEY})=:(?P<value>[A-Za-z0-9+/=]*):")
_KNOWN_PARAMS: Final = frozenset({"created", "keyid", "nonce", "expires", "alg"})


class WebhookVerificationError(AllianceError):
    """The webhook is not signed by the exchange, or not as PROTOCOL.md says: do not act on it."""


class UnknownWebhookKeyError(WebhookVerificationError):
    """Signed with a key id not among the keys given: refresh the exchange's keys, try once more."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"the webhook is signed with key {key_id!r}, which is not published")
        self.key_id = key_id


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A webhook whose signature verified."""

    key_id: str
    """The exchange key that signed it."""
    idempotency_key: str | None
    """The event's id: the same on every delivery of one event."""
    nonce: str
    created: int
    body: bytes
    data: Any
    """The body as JSON (None for an empty body)."""


def verify_webhook(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    public_keys: Mapping[str, bytes],
    now: float,
    tolerance_s: int = CREATED_TOLERANCE_S,
) -> WebhookEvent:
    """Check a webhook request's signature and return its event, or raise
    `WebhookVerificationError` (`UnknownWebhookKeyError` for a key id not in `public_keys`).

    `url` is the absolute URL the exchange sent it to, as it sent it (behind a proxy, your public
    webhook URL, not the internal one); `headers` its header fields (one value per name, repeated
    lines joined by ", "); `body` the exact bytes received; `public_keys` the exchange's keys by
    key id (raw 32-byte Ed25519); `now` the Unix time. The signature's `created` must be within
    `tolerance_s` of `now`, either way (your clock may be behind the exchange's or ahead of it).
    This function keeps no state: to refuse a replay within the window, remember the idempotency
    keys (or nonces) you have processed.
    """
    fields = {name.lower(): value.strip() for name, value in headers.items()}
    label, params_text, covered, params = _read_input(fields.get("signature-input"))
    signature = _read_signature(fields.get("signature"), label)
    key_id, nonce, created = _check_params(params, now=now, tolerance_s=tolerance_s)
    parts = split_url(url)
    required = request_covered_components(method=method, query=parts.query, body=body)
    missing = [name for name in required if name not in covered]
    if missing:
        raise WebhookVerificationError(f"the signature does not cover {', '.join(missing)}")
    if body and not hmac.compare_digest(fields.get("content-digest", ""), content_digest(body)):
        raise WebhookVerificationError("Content-Digest is missing or does not match the body")
    public_key = public_keys.get(key_id)
    if public_key is None:
        raise UnknownWebhookKeyError(key_id)
    try:
        lines = request_components(
            covered=covered,
            method=method,
            authority=parts.authority,
            path=parts.path,
            query=parts.query,
            headers=fields,
            scheme=parts.scheme,
        )
        base = signature_base(lines, params_text)
    except ValueError as error:
        raise WebhookVerificationError(f"cannot rebuild the signed message: {error}") from None
    if not verify_ed25519(base, signature, public_key):
        raise WebhookVerificationError("the webhook signature does not verify")
    return WebhookEvent(
        key_id=key_id,
        idempotency_key=fields.get("idempotency-key"),
        nonce=nonce,
        created=created,
        body=body,
        data=_json(body),
    )


def _read_input(value: str | None) -> tuple[str, str, list[str], dict[str, int | str]]:
    match = _INPUT.fullmatch(value or "")
    if match is None:
        raise WebhookVerificationError("Signature-Input is missing or not one plain signature")
    components = match["components"]
    covered = [] if not components else components.split(" ")
    names: list[str] = []
    for component in covered:
        name = _COMPONENT.fullmatch(component)
        if name is None or name[1] in names:
            raise WebhookVerificationError(f"unsupported or repeated component {component!r}")
        names.append(name[1])
    params: dict[str, int | str] = {}
    for name, raw in _PAIR.findall(match["pairs"]):
        if name in params or name not in _KNOWN_PARAMS:
            raise WebhookVerificationError(f"unexpected or repeated parameter {name!r}")
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else int(raw)
    return match["label"], match["params"], names, params


def _read_signature(value: str | None, label: str) -> bytes:
    match = _SIGNATURE.fullmatch(value or "")
    if match is None or match["label"] != label:
        raise WebhookVerificationError("Signature is missing or does not match Signature-Input")
    try:
        return base64.b64decode(match["value"], validate=True)
    except binascii.Error:
        raise WebhookVerificationError("Signature is not valid base64") from None


def _check_params(
    params: Mapping[str, int | str], *, now: float, tolerance_s: int
) -> tuple[str, str, int]:
    key_id, nonce, created = params.get("keyid"), params.get("nonce"), params.get("created")
    expires, alg = params.get("expires"), params.get("alg", ALGORITHM)
    if not isinstance(key_id, str) or not isinstance(nonce, str) or not isinstance(created, int):
        raise WebhookVerificationError("the signature needs keyid, nonce and an integer created")
    if alg != ALGORITHM:
        raise WebhookVerificationError(f"algorithm {alg!r} is not {ALGORITHM}")
    if abs(now - created) > tolerance_s:
        raise WebhookVerificationError(
            f"the webhook signature is outside its time window: created {created - now:+.0f} s "
            f"from the local clock, at most {tolerance_s} s either way is accepted"
        )
    if expires is not None and (not isinstance(expires, int) or expires <= now):
        raise WebhookVerificationError("the webhook signature has expired")
    return key_id, nonce, created


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookVerificationError("the webhook body is not JSON") from None
