"""RFC 9421 HTTP Message Signatures with Ed25519, and RFC 9530 `Content-Digest`, for both sides.

This module is the single canonicaliser: the SDK signs requests and checks responses with it, and
the exchange builds every signature base through it, so client and server cannot disagree on a
byte. It needs only the standard library and `cryptography`, so that the SDK installs with nothing
but its HTTP client; the exchange parses incoming headers with `http-sf` and hands the pieces here.

Layout of a signature base (RFC 9421 §2.5), one line per covered component, then the parameters:

    "@method": POST
    "@path": /v1/issuances
    "@signature-params": ("@method" "@path");created=1618884473;keyid="k";nonce="n"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ALGORITHM",
    "CREATED_TOLERANCE_S",
    "DEFAULT_LABEL",
    "ED25519_SIGNATURE_BYTES",
    "QueryParam",
    "RESPONSE_COMPONENTS",
    "ResponseSignatureError",
    "UnknownResponseKeyError",
    "UrlParts",
    "authority_value",
    "component_id",
    "content_digest",
    "field_value",
    "method_value",
    "path_value",
    "query_param_value",
    "query_value",
    "request_components",
    "request_covered_components",
    "request_target_value",
    "response_signature_lines",
    "scheme_value",
    "serialize_signature_params",
    "serialize_string",
    "sign_ed25519",
    "sign_request",
    "sign_response",
    "signature_base",
    "split_url",
    "status_value",
    "target_uri_value",
    "verify_ed25519",
    "verify_response",
]

ALGORITHM: Final = "ed25519"
"""The protocol's only algorithm (RFC 9421 §3.3.6); the key type decides it, `alg` is optional."""
ED25519_SIGNATURE_BYTES: Final = 64
ED25519_PUBLIC_KEY_BYTES: Final = 32
DEFAULT_LABEL: Final = "sig1"

# The SDK may not import `core`, so it keeps its own copy of the server's window (core/limits.py).
CREATED_TOLERANCE_S: Final = 300
"""A response or webhook signature whose `created` differs from the local clock by more than this,
either way, is refused (`verify_response`, `verify_webhook`). Symmetric like the exchange's own
window (PROTOCOL.md: "within 300 s"): a client whose clock is behind the exchange's sees signatures
from its future, one whose clock is ahead sees them as old, and neither is the exchange's fault."""

RESPONSE_COMPONENTS: Final = ('"@status"', '"content-digest"', '"@method";req', '"@path";req')
"""What the exchange covers in every response signature (PROTOCOL.md), in this order."""

_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
_FORM_UNENCODED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-._"
)
"""Bytes left as they are by the WHATWG application/x-www-form-urlencoded percent-encode set, which
RFC 9421 §2.2.8 re-encodes `@query-param` names and values with (a space becomes %20, not +)."""
_SF_INTEGER_MAX: Final = 999_999_999_999_999  # RFC 8941 §3.3.1: at most 15 digits
_SF_KEY: Final = re.compile(r"[a-z*][a-z0-9_\-.*]*")  # RFC 8941 §3.2 dictionary/parameter key
_SF_STRING: Final = r'"(?:[ !#-\[\]-~]|\\[\\"])*"'  # RFC 8941 §3.3.3, escapes included
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+\-.]*")  # RFC 3986 §3.1, lowercased
_TOKEN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")  # RFC 9110 §5.6.2 token (methods)
_FIELD_NAME: Final = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")  # a token, lowercased (RFC 9421 §2.1)
_COMPONENT_ID: Final = re.compile(
    rf'"@?[a-z0-9!#$%&\'*+\-.^_`|~]+"(?:;[a-z*][a-z0-9_\-.*]*(?:=(?:{_SF_STRING}|[0-9]{{1,15}}))?)*'
)
_OBS_FOLD: Final = re.compile(r"[ \t]*\r\n[ \t]+")


class ResponseSignatureError(Exception):
    """A response's signature is missing, malformed, out of its window, or does not verify."""


class UnknownResponseKeyError(ResponseSignatureError):
    """The signature names a key id that is not among the keys given: the caller may refresh its
    copy of the exchange's keys (a rotation) and try once more."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no exchange key {key_id!r}; refresh the exchange keys")
        self.key_id = key_id


# --- RFC 9530 ------------------------------------------------------------------------------------


def content_digest(body: bytes) -> str:
    """The RFC 9530 `Content-Digest` field value of `body`: `sha-256=:<base64>:`."""
    return f"sha-256=:{_b64(hashlib.sha256(body).digest())}:"


# --- Structured-field serialisation (RFC 8941), only as much as signatures need ------------------


def serialize_string(value: str) -> str:
    """An RFC 8941 sf-string: printable ASCII only, with `\\` and `"` escaped."""
    if not all(0x20 <= ord(char) <= 0x7E for char in value):
        raise ValueError(f"{value!r} has characters a structured-field string cannot carry")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def component_id(name: str, *, req: bool = False) -> str:
    """The serialized identifier of a component: `"@path"`, `"content-digest"`, `"@method";req`."""
    bare = name.removeprefix("@")
    if not _FIELD_NAME.fullmatch(bare):
        raise ValueError(f"{name!r} is not a lowercase component name (RFC 9421 §2.1)")
    return serialize_string(name) + (";req" if req else "")


def serialize_signature_params(
    components: Sequence[str],
    *,
    created: int,
    keyid: str,
    nonce: str | None = None,
    expires: int | None = None,
    alg: str | None = None,
    tag: str | None = None,
) -> str:
    """The `@signature-params` value: an sf inner list of component ids with its parameters.

    `components` are serialized identifiers (`'"@method"'`, `'"@path";req'`). Parameters are emitted
    in one fixed order, `created`, `keyid`, `nonce`, `expires`, `alg`, `tag`: `created` and `keyid`
    first as in the RFC's examples (B.2.1, B.2.2), the rest always after them in that order, so one
    request has exactly one serialization.
    """
    _check_component_ids(components)
    params = [f";created={_serialize_integer('created', created)}"]
    params.append(f";keyid={serialize_string(keyid)}")
    if nonce is not None:
        params.append(f";nonce={serialize_string(nonce)}")
    if expires is not None:
        params.append(f";expires={_serialize_integer('expires', expires)}")
    if alg is not None:
        params.append(f";alg={serialize_string(alg)}")
    if tag is not None:
        params.append(f";tag={serialize_string(tag)}")
    return f"({' '.join(components)}){''.join(params)}"


def _check_component_ids(components: Sequence[str]) -> None:
    for component in components:
        if not _COMPONENT_ID.fullmatch(component):
            raise ValueError(f"{component!r} is not a serialized component identifier")
    if len(set(components)) != len(components):
        raise ValueError("a component may be covered only once (RFC 9421 §2.5)")


def _serialize_integer(name: str, value: int) -> str:
    # `bool` is an `int` in Python; a timestamp of `True` is a bug, not 1.
    if type(value) is not int or not 0 <= value <= _SF_INTEGER_MAX:
        raise ValueError(f"{name} must be a non-negative integer of at most 15 digits")
    return str(value)


# --- The signature base (RFC 9421 §2.5) ----------------------------------------------------------


def signature_base(lines: Sequence[tuple[str, str]], signature_params: str) -> bytes:
    """The bytes that are signed: `"<id>": <value>\\n` per covered component, then the parameters.

    Each line is (serialized component id, component value). The base must be ASCII and each value
    a single line (RFC 9421 §2.5); a value that is not is refused with `ValueError`, never altered,
    because the verifier must rebuild exactly the bytes the signer signed.
    """
    seen: set[str] = set()
    parts: list[str] = []
    for identifier, value in lines:
        if identifier in seen:
            raise ValueError(f"component {identifier} is covered twice (RFC 9421 §2.5)")
        seen.add(identifier)
        parts.append(f"{identifier}: {_single_line(identifier, value)}\n")
    parts.append(f'"@signature-params": {_single_line("@signature-params", signature_params)}')
    return "".join(parts).encode("ascii")


def _single_line(identifier: str, value: str) -> str:
    if not value.isascii() or "\r" in value or "\n" in value:
        raise ValueError(f"the value of {identifier} must be one line of ASCII text")
    return value


# --- Ed25519 (RFC 9421 §3.3.6) -------------------------------------------------------------------


def sign_ed25519(base: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The Ed25519 signature (64 bytes, deterministic) of a signature base."""
    return private_key.sign(base)


def verify_ed25519(base: bytes, signature: bytes, public_key: bytes) -> bool:
    """Whether `signature` is a valid Ed25519 signature of `base` by the raw 32-byte `public_key`.

    A key that is not 32 bytes raises `ValueError`: keys come from our own key store, so a bad one
    is a bug to surface, not a forgery to report as a mismatch.
    """
    if len(public_key) != ED25519_PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
    key = Ed25519PublicKey.from_public_bytes(public_key)
    try:
        key.verify(signature, base)
    except InvalidSignature:
        return False
    return True


# --- Component values (RFC 9421 §2.1, §2.2) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UrlParts:
    """The raw pieces of an absolute URL that a request signature covers."""

    scheme: str
    authority: str
    path: str
    query: str | None
    """Without the `?`; `None` when the URL has no `?` at all, `""` when it ends in one."""


def split_url(url: str) -> UrlParts:
    """Split an absolute URL without decoding or normalising anything.

    The signature must cover what goes on the wire, so percent-encoding is kept exactly as written
    (`urllib.parse` would also lose the difference between `/p?` and `/p`).
    """
    scheme, separator, rest = url.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme.lower()):
        raise ValueError(f"{url!r} is not an absolute URL")
    rest = rest.partition("#")[0]
    ends = [index for index in (rest.find("/"), rest.find("?")) if index >= 0]
    end = min(ends, default=len(rest))
    authority = rest[:end].rpartition("@")[2]  # user information is not part of the authority
    path, question_mark, query = rest[end:].partition("?")
    return UrlParts(scheme.lower(), authority, path, query if question_mark else None)


def method_value(method: str) -> str:
    """`@method` (§2.2.1), uppercased.

    The RFC leaves the method's case alone; uppercasing changes nothing for this protocol, whose
    methods are all uppercase standard ones that the SDK sends uppercased, and it spares a client
    that writes `post` a confusing mismatch.
    """
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"{method!r} is not an HTTP method")
    return method.upper()


def authority_value(authority: str, *, scheme: str | None = None) -> str:
    """`@authority` (§2.2.3): host[:port] lowercased, without the scheme's default port.

    Without a scheme (a server behind a TLS-terminating proxy sees only the Host header) a port
    that is the default of either http or https is dropped: it names the same host either way.
    """
    host, port = _split_port(authority.strip().lower())
    if not host:
        raise ValueError("the authority has no host")
    defaults = (
        {_DEFAULT_PORTS[scheme]} if scheme in _DEFAULT_PORTS else set(_DEFAULT_PORTS.values())
    )
    if port is None or port in defaults:
        return host
    return f"{host}:{port}"


def _split_port(authority: str) -> tuple[str, str | None]:
    # An IPv6 literal ("[::1]:8443") has colons of its own; only a colon after "]" starts a port.
    host, colon, port = authority.rpartition(":")
    if not colon or "]" in port or not port.isdigit():
        return authority, None
    return host, port


def path_value(path: str) -> str:
    """`@path` (§2.2.6): the path exactly as sent, percent-encoding untouched; empty becomes `/`."""
    return path or "/"


def query_value(query: str | None) -> str:
    """`@query` (§2.2.7): `?` and the raw query; a bare `?` when it is empty or absent."""
    return f"?{query or ''}"


def scheme_value(scheme: str) -> str:
    """`@scheme` (§2.2.4): the URL scheme, lowercased."""
    if not _SCHEME.fullmatch(scheme.lower()):
        raise ValueError(f"{scheme!r} is not a URL scheme")
    return scheme.lower()


def request_target_value(path: str, query: str | None) -> str:
    """`@request-target` (§2.2.5) of an origin-form request (every request this protocol makes):
    the path and the query as sent, `?` included when the URL has one."""
    return path_value(path) + ("" if query is None else f"?{query}")


def target_uri_value(scheme: str, authority: str, path: str, query: str | None) -> str:
    """`@target-uri` (§2.2.2): the absolute URI the request was sent to, rebuilt as RFC 9110 §7.1
    does from the scheme, the authority as sent (the Host header: not normalised, unlike
    `@authority`), the path and the query."""
    host = authority.strip()
    if not host:
        raise ValueError("the authority has no host")
    return f"{scheme_value(scheme)}://{host}{request_target_value(path, query)}"


@dataclass(frozen=True, slots=True)
class QueryParam:
    """The `"@query-param";name="…"` component (RFC 9421 §2.2.8) of one query parameter."""

    name: str
    """The `name` parameter as written in the component identifier: the encoded name."""

    @property
    def identifier(self) -> str:
        return f"{component_id('@query-param')};name={serialize_string(self.name)}"


def query_param_value(query: str | None, name: str) -> str:
    """`@query-param` (§2.2.8): the value of the query parameter `name`, decoded as an
    application/x-www-form-urlencoded query is (`+` is a space), then percent-encoded again with
    the form-urlencoded set and a space as %20.

    `name` is the encoded name from the identifier and is decoded before matching. A parameter that
    is absent or occurs more than once raises `ValueError`: the RFC forbids covering a repeated one
    (cover `@query` instead), and there is nothing to cover for an absent one.
    """
    wanted = urllib.parse.unquote(name)
    values = [
        value
        for key, value in urllib.parse.parse_qsl(query or "", keep_blank_values=True)
        if key == wanted
    ]
    if not values:
        raise ValueError(f"query parameter {name!r} is not in the request")
    if len(values) > 1:
        raise ValueError(
            f"query parameter {name!r} occurs {len(values)} times; a repeated parameter cannot be "
            'covered with "@query-param" (RFC 9421 §2.2.8), cover "@query" instead'
        )
    return _form_encode(values[0])


def _form_encode(text: str) -> str:
    return "".join(
        chr(byte) if byte in _FORM_UNENCODED else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


def status_value(status: int) -> str:
    """`@status` (§2.2.9): the three-digit status code."""
    if type(status) is not int or not 100 <= status <= 999:
        raise ValueError(f"{status!r} is not a three-digit status code")
    return str(status)


def field_value(value: str | Sequence[str]) -> str:
    """An HTTP field's component value (§2.1): lines trimmed, obs-folds unfolded, joined by ", "."""
    lines = [value] if isinstance(value, str) else list(value)
    return ", ".join(_OBS_FOLD.sub(" ", line).strip(" \t") for line in lines)


def request_covered_components(*, method: str, query: str | None, body: bytes) -> list[str]:
    """The components every request must cover (PROTOCOL.md), as bare names, in signing order."""
    covered = ["@method", "@authority", "@path"]
    if query is not None:
        covered.append("@query")
    if body:
        covered.append("content-digest")
    if method_value(method) == "POST":
        covered.append("idempotency-key")
    return covered


_RESPONSE_ONLY: Final = frozenset({"@status"})
"""Derived components that exist only in a response (RFC 9421 §2.2.9)."""


def request_components(
    *,
    covered: Sequence[str | QueryParam],
    method: str,
    authority: str,
    path: str,
    query: str | None,
    headers: Mapping[str, str],
    scheme: str | None = None,
    received_scheme: str | None = None,
    combined_fields: bool = False,
) -> list[tuple[str, str]]:
    """Signature-base lines for a request's `covered` components: bare names (`"@path"`,
    `"x-extra"`, no parameters) or `QueryParam`s.

    Supports the RFC 9421 §2.2 derived request components (`@method`, `@target-uri`,
    `@authority`, `@scheme`, `@request-target`, `@path`, `@query`, `@query-param`) and header
    fields by lowercase name; anything else raises `ValueError`.

    `scheme` is the URL's scheme when it is known (a client signing its own URL): `@authority`
    then drops only that scheme's default port. A server that can only derive the scheme of a
    request it received passes `received_scheme` instead: `@scheme` and `@target-uri` use it, and
    `@authority` drops the default port of either http or https (see `authority_value`).

    A header value is one field line, trimmed here, unless `combined_fields`: then each value is
    already the RFC 9421 §2.1 combination of all the field's lines (each trimmed, joined by ", ")
    and is used verbatim, since trimming it again would drop the space after a trailing empty line.
    """
    fields = {name.lower(): value for name, value in headers.items()}

    def url_scheme() -> str:
        known = scheme if scheme is not None else received_scheme
        if known is None:
            raise ValueError("@scheme and @target-uri need the request's scheme")
        return known

    derived = {
        "@method": lambda: method_value(method),
        "@target-uri": lambda: target_uri_value(url_scheme(), authority, path, query),
        "@authority": lambda: authority_value(authority, scheme=scheme),
        "@scheme": lambda: scheme_value(url_scheme()),
        "@request-target": lambda: request_target_value(path, query),
        "@path": lambda: path_value(path),
        "@query": lambda: query_value(query),
    }
    lines: list[tuple[str, str]] = []
    for name in covered:
        if isinstance(name, QueryParam):
            lines.append((name.identifier, query_param_value(query, name.name)))
        elif name in derived:
            lines.append((component_id(name), derived[name]()))
        elif name in _RESPONSE_ONLY:
            raise ValueError(f"{name!r} is a response component; a request cannot cover it")
        elif name == "@query-param":
            raise ValueError('"@query-param" needs a name parameter (RFC 9421 §2.2.8)')
        elif name.startswith("@"):
            raise ValueError(f"derived component {name!r} is not supported in a request")
        elif name not in fields:
            raise ValueError(f"covered header {name!r} is not in the request")
        else:
            value = fields[name] if combined_fields else field_value(fields[name])
            lines.append((component_id(name), value))
    return lines


# --- Requests ------------------------------------------------------------------------------------


def sign_request(
    *,
    method: str,
    authority: str,
    path: str,
    query: str | None,
    headers: Mapping[str, str],
    body: bytes,
    key_id: str,
    private_key: Ed25519PrivateKey,
    created: int,
    nonce: str,
    label: str = DEFAULT_LABEL,
    expires: int | None = None,
) -> dict[str, str]:
    """The headers to add to a request so the exchange accepts it: `Content-Digest` (when there is
    a body), `Signature-Input` and `Signature`.

    `path` and `query` are exactly as they will be sent (`query` without `?`, `None` when the URL
    has no `?`). A POST must carry `Idempotency-Key` in `headers`, which the signature covers.
    """
    added = {"Content-Digest": content_digest(body)} if body else {}
    fields = {name.lower(): value for name, value in {**headers, **added}.items()}
    covered = request_covered_components(method=method, query=query, body=body)
    if "idempotency-key" in covered and "idempotency-key" not in fields:
        raise ValueError("every POST carries an Idempotency-Key header (PROTOCOL.md)")
    lines = request_components(
        covered=covered, method=method, authority=authority, path=path, query=query, headers=fields
    )
    params = serialize_signature_params(
        [identifier for identifier, _ in lines],
        created=created,
        keyid=key_id,
        nonce=nonce,
        expires=expires,
    )
    signature = sign_ed25519(signature_base(lines, params), private_key)
    return {**added, **_signature_fields(label, params, signature)}


def _signature_fields(label: str, params: str, signature: bytes) -> dict[str, str]:
    if not _SF_KEY.fullmatch(label):
        raise ValueError(f"{label!r} is not a valid signature label (an RFC 8941 key)")
    return {"Signature-Input": f"{label}={params}", "Signature": f"{label}=:{_b64(signature)}:"}


# --- Responses -----------------------------------------------------------------------------------


def response_signature_lines(
    *, status: int, content_digest: str, request_method: str, request_path: str
) -> list[tuple[str, str]]:
    """Signature-base lines of a response: `@status`, `content-digest`, and the request's
    `@method` and `@path` (with `;req`, RFC 9421 §2.4), which bind the response to its request."""
    values = (
        status_value(status),
        field_value(content_digest),
        method_value(request_method),
        path_value(request_path),
    )
    return list(zip(RESPONSE_COMPONENTS, values, strict=True))


def sign_response(
    *,
    status: int,
    content_digest: str,
    request_method: str,
    request_path: str,
    key_id: str,
    private_key: Ed25519PrivateKey,
    created: int,
    label: str = DEFAULT_LABEL,
) -> dict[str, str]:
    """`Signature-Input` and `Signature` for a response with `Content-Digest: <content_digest>`."""
    lines = response_signature_lines(
        status=status,
        content_digest=content_digest,
        request_method=request_method,
        request_path=request_path,
    )
    params = serialize_signature_params(RESPONSE_COMPONENTS, created=created, keyid=key_id)
    signature = sign_ed25519(signature_base(lines, params), private_key)
    return _signature_fields(label, params, signature)


# The client reads only what the exchange emits, so a strict pattern replaces a structured-field
# parser: exactly one signature, exactly RESPONSE_COMPONENTS, integer or string parameters, no
# optional whitespace. Anything else is refused, never guessed at. The exchange itself parses
# incoming signatures with the complete `http-sf` parser.
_PARAM: Final = rf"[a-z*][a-z0-9_\-.*]*=(?:[0-9]{{1,15}}|{_SF_STRING})"
_RESPONSE_INPUT: Final = re.compile(
    rf"(?P<label>[a-z*][a-z0-9_\-.*]*)=(?P<params>\((?P<components>[^()]*)\)(?:;{_PARAM})*)"
)
_PARAM_PAIR: Final = re.compile(rf";([a-z*][a-z0-9_\-.*]*)=([0-9]{{1,15}}|{_SF_STRING})")
_RESPONSE_SIGNATURE: Final = re.compile(
    r"(?P<label>[a-z*][a-z0-9_\-.*]*)=:(?P<value>[A-Za-z0-9+/=]*):"
)
_RESPONSE_PARAMS: Final = frozenset({"created", "keyid", "expires", "nonce", "alg", "tag"})


@dataclass(frozen=True, slots=True)
class _ResponseInput:
    label: str
    signature_params: str
    params: dict[str, int | str]


def verify_response(
    *,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    request_method: str,
    request_path: str,
    public_keys: Mapping[str, bytes],
    now: int,
    tolerance_s: int = CREATED_TOLERANCE_S,
) -> str:
    """Check the exchange's signature on a response and return the key id that signed it.

    `public_keys` maps key ids to raw 32-byte Ed25519 keys (from `GET /v1/exchange-keys`). Raises
    `ResponseSignatureError` when the signature is missing, malformed, outside its window, covers
    other components than the exchange signs, or does not match the body or the request.

    Limitation: the headers are read with a strict pattern for exactly what the exchange emits
    (one signature; no optional whitespace; `Content-Digest` exactly `sha-256=:…:`), not with a full
    structured-field parser. A proxy that re-serialises these fields would make verification fail.
    """
    fields = {name.lower(): value.strip() for name, value in headers.items()}
    parsed = _parse_response_input(fields.get("signature-input"))
    signature = _parse_response_signature(fields.get("signature"), parsed.label)
    key_id = _check_response_params(parsed.params, now=now, tolerance_s=tolerance_s)
    digest = fields.get("content-digest")
    if digest is None or not hmac.compare_digest(digest, content_digest(body)):
        raise ResponseSignatureError("Content-Digest is missing or does not match the body")
    public_key = public_keys.get(key_id)
    if public_key is None:
        raise UnknownResponseKeyError(key_id)
    lines = response_signature_lines(
        status=status,
        content_digest=digest,
        request_method=request_method,
        request_path=request_path,
    )
    if not verify_ed25519(signature_base(lines, parsed.signature_params), signature, public_key):
        raise ResponseSignatureError("the response signature does not verify")
    return key_id


def _parse_response_input(value: str | None) -> _ResponseInput:
    if value is None:
        raise ResponseSignatureError("the response has no Signature-Input")
    match = _RESPONSE_INPUT.fullmatch(value)
    if match is None or match["components"] != " ".join(RESPONSE_COMPONENTS):
        raise ResponseSignatureError("Signature-Input is not what the exchange emits")
    params: dict[str, int | str] = {}
    for name, raw in _PARAM_PAIR.findall(match["params"]):
        if name in params or name not in _RESPONSE_PARAMS:
            raise ResponseSignatureError(f"unexpected or repeated signature parameter {name!r}")
        params[name] = _unescape(raw[1:-1]) if raw.startswith('"') else int(raw)
    return _ResponseInput(match["label"], match["params"], params)


def _unescape(escaped: str) -> str:
    return re.sub(r"\\(.)", r"\1", escaped)


def _parse_response_signature(value: str | None, label: str) -> bytes:
    match = _RESPONSE_SIGNATURE.fullmatch(value or "")
    if match is None or match["label"] != label:
        raise ResponseSignatureError("Signature is missing or does not match Signature-Input")
    try:
        return base64.b64decode(match["value"], validate=True)
    except binascii.Error as error:
        raise ResponseSignatureError("Signature is not valid base64") from error


def _check_response_params(params: Mapping[str, int | str], *, now: int, tolerance_s: int) -> str:
    created, key_id = params.get("created"), params.get("keyid")
    expires, alg = params.get("expires"), params.get("alg", ALGORITHM)
    if not isinstance(created, int) or not isinstance(key_id, str):
        raise ResponseSignatureError("the signature needs an integer created and a string keyid")
    if alg != ALGORITHM:
        raise ResponseSignatureError(f"algorithm {alg!r} is not {ALGORITHM}")
    if abs(now - created) > tolerance_s:
        raise ResponseSignatureError(
            f"the response signature is outside its time window: created {created - now:+d} s "
            f"from the local clock, at most {tolerance_s} s either way is accepted"
        )
    if expires is not None and (not isinstance(expires, int) or expires <= now):
        raise ResponseSignatureError("the response signature has expired")
    return key_id


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
