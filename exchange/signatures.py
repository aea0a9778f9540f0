"""The exchange's RFC 9421 request verifier and response signer.

`read_signature` checks everything about a request's signature that needs no database: the
structured fields (parsed by `http-sf`), the parameters, the time window, the covered components
and the `Content-Digest`. It returns the claims; the caller, which owns the database, then looks up
the key (`unknown_key`, `key_revoked`), records the nonce (`replayed_request`) and calls
`check_signature` with the key. The base is built by `sdk.signing`, the canonicaliser the SDK signs
with, so the two sides cannot drift apart.

What is accepted beyond what PROTOCOL.md requires (it says "at least" and "more components may be
covered", so a stock RFC 9421 signer must not be refused for doing more):
- every RFC 9421 §2.2 derived request component: `@method`, `@target-uri`, `@authority`,
  `@scheme`, `@request-target`, `@path`, `@query`, and `@query-param` with its `name`;
- any header field of the request by its lowercase name, without parameters;
- the `tag` parameter, which is ignored (this protocol defines no tags);
- a `Content-Digest` with more algorithms than sha-256: only sha-256 is checked (RFC 9530 lets a
  recipient ignore the ones it does not check), and it must be there and match.
Refused, because in a request they cannot be right or are not implemented: `;req` (a response's
reference to its request, §2.4), `@status` (a response component), `@query-param` without a
`name` or for a parameter that is absent or repeated, and field parameters `;sf`, `;key`, `;bs`.

Framework-free on purpose: it takes plain values, so it is tested without ASGI and any framework
can call it. See docs/decisions/0006-http-message-signatures.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import http_sf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_sf.innerlist import ser_innerlist
from http_sf.item import ser_item
from http_sf.types import BareItemType, InnerListType, ParamsType

from core.errors import DomainError
from core.limits import SIGNATURE_TOLERANCE_S
from sdk import signing

__all__ = [
    "SignatureClaims",
    "SignatureError",
    "SignedRequest",
    "check_signature",
    "read_signature",
    "sign_response",
]

SignatureCode = Literal["signature_missing", "signature_invalid", "signature_expired"]

_KNOWN_PARAMS: Final = frozenset({"created", "expires", "keyid", "nonce", "alg", "tag"})
_SCHEME_WITHOUT_PROXY: Final = "http"
"""The scheme of a request that no proxy vouches for: the exchange serves plain HTTP only."""
_FORWARDED_PROTO: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")


class SignatureError(DomainError):
    """A request's signature is refused; `code` is one of PROTOCOL.md's 401 codes."""

    def __init__(self, code: SignatureCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request as received, in the plain values a signature covers."""

    method: str
    authority: str
    """The Host header as received."""
    path: str
    """The raw path as sent, percent-encoding preserved."""
    query: str | None
    """The raw query without `?`; `None` when the URL has no `?`."""
    headers: Mapping[str, str]
    """Lower-cased field name to combined field value, as RFC 9421 §2.1 builds it: every line of
    the field, each trimmed of surrounding whitespace, joined by ", " (with Starlette,
    `", ".join(request.headers.getlist(name))`, whose parser already trims each line). Covered
    values are used verbatim."""
    body: bytes
    scheme: str | None = None
    """The scheme the client sent the request with, for `@scheme` and `@target-uri`, when the
    caller knows it; `None` derives it from the headers (see `_request_scheme`)."""


@dataclass(frozen=True, slots=True)
class SignatureClaims:
    """What a well-formed, in-window signature claims; not yet checked against any key."""

    label: str
    key_id: str
    nonce: str
    created: int
    expires: int | None
    covered: tuple[str, ...]
    """Serialized component identifiers, in the signer's order: `'"@method"'`, `'"@path"'`, …"""
    signature: bytes
    base: bytes
    """The signature base rebuilt from the request, ready for `check_signature`."""


@dataclass(frozen=True, slots=True)
class _Member:
    """The one signature of a request, as parsed from its two fields."""

    label: str
    components: list[tuple[BareItemType, ParamsType]]
    params: ParamsType
    signature: bytes


def read_signature(
    request: SignedRequest, *, now: int, tolerance_s: int = SIGNATURE_TOLERANCE_S
) -> SignatureClaims:
    """Parse and check a request's signature, short of the key; raise `SignatureError` if refused.

    Refusals: no `Signature` or `Signature-Input` → `signature_missing`; a `created` more than
    `tolerance_s` before or after `now`, or an `expires` not after `now` → `signature_expired`;
    anything else wrong → `signature_invalid`.
    """
    fields = {name.lower(): value for name, value in request.headers.items()}
    member = _single_signature(fields)
    _check_algorithm(member)
    key_id, nonce, created, expires = _read_params(member.params)
    _check_window(created, expires, now=now, tolerance_s=tolerance_s)
    covered = _covered_components(member.components, request)
    lines = _component_lines(covered, request, fields)
    _check_content_digest(request.body, fields.get("content-digest"))
    return SignatureClaims(
        label=member.label,
        key_id=key_id,
        nonce=nonce,
        created=created,
        expires=expires,
        covered=tuple(identifier for identifier, _ in lines),
        signature=member.signature,
        base=_base(lines, member),
    )


def check_signature(claims: SignatureClaims, public_key: bytes) -> None:
    """Refuse (`signature_invalid`) unless the claims' signature verifies with `public_key`, the
    raw 32-byte Ed25519 key the caller found for `claims.key_id`."""
    if not signing.verify_ed25519(claims.base, claims.signature, public_key):
        raise _invalid(f"the signature does not verify with key {claims.key_id!r}")


def sign_response(
    *,
    status: int,
    body: bytes,
    request_method: str,
    request_path: str,
    key_id: str,
    private_key: Ed25519PrivateKey,
    now: int,
) -> dict[str, str]:
    """`Content-Digest`, `Signature-Input` and `Signature` for a `/v1/` response (PROTOCOL.md)."""
    digest = signing.content_digest(body)
    signature_fields = signing.sign_response(
        status=status,
        content_digest=digest,
        request_method=request_method,
        request_path=request_path,
        key_id=key_id,
        private_key=private_key,
        created=now,
    )
    return {"Content-Digest": digest, **signature_fields}


# --- The two fields ------------------------------------------------------------------------------


def _single_signature(fields: Mapping[str, str]) -> _Member:
    input_field, signature_field = fields.get("signature-input"), fields.get("signature")
    if input_field is None or signature_field is None:
        raise SignatureError("signature_missing", "the request needs Signature-Input and Signature")
    inputs = _parse_dictionary("Signature-Input", input_field)
    signatures = _parse_dictionary("Signature", signature_field)
    if len(inputs) != 1 or len(signatures) != 1:
        raise _invalid(
            f"exactly one signature is accepted; Signature-Input has {len(inputs)}, "
            f"Signature has {len(signatures)}"
        )
    (label,) = inputs
    if label not in signatures:
        raise _invalid(f"label {label!r} is in Signature-Input but not in Signature")
    components, params = _inner_list(inputs[label])
    return _Member(label, components, params, _byte_sequence("Signature", signatures[label]))


def _parse_dictionary(name: str, value: str) -> dict[str, object]:
    try:
        parsed = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=_refuse_duplicate
        )
    except ValueError as error:  # StructuredFieldError, UnicodeEncodeError, duplicates
        raise _invalid(f"{name} is not a valid structured-field dictionary: {error}") from error
    if not isinstance(parsed, dict):
        raise _invalid(f"{name} is not a structured-field dictionary")
    return dict(parsed)


def _refuse_duplicate(key: str, context: str) -> None:
    # RFC 8941 keeps the last of two equal keys; for a signature that silently drops what the
    # signer may have meant, so a repeated label or parameter is refused instead.
    raise ValueError(f"repeated {context} key {key!r}")


def _inner_list(member: object) -> tuple[list[tuple[BareItemType, ParamsType]], ParamsType]:
    if not (isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], list)):
        raise _invalid("the Signature-Input member must be an inner list of components")
    components, params = member
    return list(components), dict(params)


def _byte_sequence(field: str, member: object) -> bytes:
    if not (isinstance(member, tuple) and isinstance(member[0], bytes)):
        raise _invalid(f"each {field} member must be a byte sequence")
    return member[0]


# --- Parameters and window -----------------------------------------------------------------------


def _check_algorithm(member: _Member) -> None:
    # The key decides the algorithm (only Ed25519 keys are registered, ADR 0003); `alg` and the
    # signature's length let an RSA, ECDSA or HMAC signature be refused with a message that says so.
    alg = member.params.get("alg", signing.ALGORITHM)
    if not isinstance(alg, str) or alg != signing.ALGORITHM:  # a Token `ed25519` is not a String
        raise _invalid(f"algorithm {alg!s} is unsupported: only {signing.ALGORITHM} is accepted")
    if len(member.signature) != signing.ED25519_SIGNATURE_BYTES:
        raise _invalid(
            f"unsupported algorithm: an {signing.ALGORITHM} signature is "
            f"{signing.ED25519_SIGNATURE_BYTES} bytes, this one is {len(member.signature)}"
        )


def _read_params(params: ParamsType) -> tuple[str, str, int, int | None]:
    unknown = sorted(set(params) - _KNOWN_PARAMS)
    if unknown:
        raise _invalid(f"unknown signature parameters {unknown}")
    # `tag` (RFC 9421 §2.3) lets a signer say which application a signature is for. PROTOCOL.md
    # defines no tag and forbids none, and stock signers may always add one: it is ignored.
    # Only its type is checked, like every other parameter's: RFC 9421 makes it a String.
    if "tag" in params and not isinstance(params["tag"], str):
        raise _invalid("tag must be a string")
    key_id = _string_param(params, "keyid")
    nonce = _string_param(params, "nonce")
    created = _integer_param(params, "created")
    expires = _integer_param(params, "expires") if "expires" in params else None
    return key_id, nonce, created, expires


def _string_param(params: ParamsType, name: str) -> str:
    value = params.get(name)
    if value is None:
        raise _invalid(f"the signature has no {name} parameter")
    if not isinstance(value, str) or not value:  # a Token or Byte Sequence is not a String
        raise _invalid(f"{name} must be a non-empty string")
    return value


def _integer_param(params: ParamsType, name: str) -> int:
    value = params.get(name)
    if value is None:
        raise _invalid(f"the signature has no {name} parameter")
    if type(value) is not int:  # `?1` parses to True, which is an int in Python
        raise _invalid(f"{name} must be an integer")
    return value


def _check_window(created: int, expires: int | None, *, now: int, tolerance_s: int) -> None:
    # Symmetric (PROTOCOL.md: "within 300 s of the server clock"): a client's clock may be ahead
    # of ours as much as a request may be late. The nonce is kept for the whole window both ways
    # (core.limits.NONCE_RETENTION_S), so a request from the future cannot be replayed later.
    if created > now + tolerance_s:
        raise SignatureError(
            "signature_expired",
            f"created is {created - now} s in the future; the limit is {tolerance_s} s",
        )
    if created < now - tolerance_s:
        raise SignatureError(
            "signature_expired", f"created {now - created} s ago; the limit is {tolerance_s} s"
        )
    if expires is not None and expires <= now:
        raise SignatureError("signature_expired", f"the signature expired {now - expires} s ago")


# --- Covered components and content --------------------------------------------------------------


def _covered_components(
    components: list[tuple[BareItemType, ParamsType]], request: SignedRequest
) -> list[str | signing.QueryParam]:
    """The covered components as `sdk.signing` takes them (bare names, or `QueryParam`), refusing
    parameters that cannot be right in a request or are not implemented, and a set that leaves out
    anything PROTOCOL.md requires. Unknown names are refused by the canonicaliser."""
    covered: list[str | signing.QueryParam] = []
    for value, params in components:
        if not isinstance(value, str):
            raise _invalid("component identifiers must be strings")
        identifier = ser_item((value, params))
        if "req" in params:
            raise _invalid(
                f"covered component {identifier}: ;req names a component of the request a "
                "response answers (RFC 9421 §2.4), a request signature cannot use it"
            )
        if value == "@query-param":
            covered.append(_query_param(identifier, params))
        elif params:
            # `;sf`, `;key` and `;bs` re-serialise a field (§2.1.1-§2.1.3); the gateway sees each
            # field combined, not line by line, so they are not implemented. `;name` belongs only
            # to `@query-param`.
            raise _invalid(
                f"covered component {identifier} is not supported: only @query-param takes a "
                "parameter (name); header fields are covered by their plain name"
            )
        else:
            covered.append(value)
    try:
        required = signing.request_covered_components(
            method=request.method, query=request.query, body=request.body
        )
    except ValueError as error:
        raise _invalid(str(error)) from error
    missing = [name for name in required if name not in covered]
    if missing:
        raise _invalid(f"the signature must cover {', '.join(missing)}")
    return covered


def _query_param(identifier: str, params: ParamsType) -> signing.QueryParam:
    name = params.get("name")
    if set(params) != {"name"} or not isinstance(name, str):
        # http-sf parses a Token to a `Token`, not a `str`: `name=x` without quotes is refused too.
        raise _invalid(
            f"covered component {identifier}: @query-param takes exactly one parameter, name, a "
            "string (RFC 9421 §2.2.8)"
        )
    return signing.QueryParam(name)


def _request_scheme(request: SignedRequest) -> str:
    """The scheme the client used, for `@scheme` and `@target-uri`.

    Derived the way `@authority` is, from what the client side says rather than from the socket:
    behind a TLS-terminating proxy the exchange sees plain HTTP, and `@authority` already comes
    from the Host header as the client sent it. So the scheme is the caller's `request.scheme`
    when given, else the first value of the proxy's `X-Forwarded-Proto`, else `http`: the exchange
    serves plain HTTP only (on loopback in development), so a request no proxy speaks for came over
    http. Taking the header from whoever sent it concedes nothing: like Host, it only has to match
    what the signature covers, and a replay is stopped by the nonce, not by the scheme.
    """
    if request.scheme is not None:
        return request.scheme
    forwarded = request.headers.get("x-forwarded-proto")
    if forwarded is None:
        return _SCHEME_WITHOUT_PROXY
    first = forwarded.split(",")[0].strip()
    if not _FORWARDED_PROTO.fullmatch(first):
        raise _invalid(f"X-Forwarded-Proto {forwarded!r} is not a scheme")
    return first.lower()


def _component_lines(
    covered: list[str | signing.QueryParam], request: SignedRequest, fields: Mapping[str, str]
) -> list[tuple[str, str]]:
    # Duplicates, unsupported derived components and absent headers all surface as ValueError
    # from the shared canonicaliser.
    if len(set(covered)) != len(covered):
        raise _invalid("a component is covered more than once")
    # Only the scheme-bearing components use the scheme; `@authority` is derived as before,
    # dropping the default port of either scheme (a proxy may not say which the client used).
    needs_scheme = any(name in ("@scheme", "@target-uri") for name in covered)
    received_scheme = _request_scheme(request) if needs_scheme else None
    try:
        return signing.request_components(
            covered=covered,
            method=request.method,
            authority=request.authority,
            path=request.path,
            query=request.query,
            headers=fields,
            received_scheme=received_scheme,
            combined_fields=True,
        )
    except ValueError as error:
        raise _invalid(str(error)) from error


def _check_content_digest(body: bytes, value: str | None) -> None:
    """With a body, `Content-Digest` must hold a sha-256 of exactly these bytes (PROTOCOL.md,
    RFC 9530). Other algorithms beside it are ignored, matching or not: RFC 9530 lets a recipient
    check only those it chooses, and sha-256 is the one PROTOCOL.md requires."""
    if value is None:
        if body:
            raise _invalid("a request with a body needs a Content-Digest")
        return
    digests = _parse_dictionary("Content-Digest", value)
    if "sha-256" not in digests:
        raise _invalid("Content-Digest has no sha-256 digest, which PROTOCOL.md requires")
    claimed = _byte_sequence("Content-Digest", digests["sha-256"])
    if not hmac.compare_digest(claimed, hashlib.sha256(body).digest()):
        raise _invalid("Content-Digest sha-256 does not match the body")


def _base(lines: list[tuple[str, str]], member: _Member) -> bytes:
    # The parameters are re-serialized from what was parsed (RFC 9421 §3.2), in the signer's
    # order, so any signer's valid serialization is accepted byte for byte.
    inner_list: InnerListType = (list(member.components), member.params)
    try:
        return signing.signature_base(lines, ser_innerlist(inner_list))
    except (ValueError, TypeError) as error:
        raise _invalid(str(error)) from error


def _invalid(detail: str) -> SignatureError:
    return SignatureError("signature_invalid", detail)
