"""S2: interop with `http-message-signatures` (pyauth), an independent RFC 9421 implementation.

Three directions, each must agree on every example: pyauth signs a request and the exchange accepts
it; the SDK signs a request and pyauth verifies it; the exchange signs a response and both pyauth
and the SDK verify it. CI runs 200 examples per direction; set SIGNING_INTEROP_EXAMPLES=5000 for the
nightly run (RELIABILITY.md, S2).

pyauth reads any object with `method` (uppercase), `url` (absolute, ASCII, percent-encoded) and
`headers` (`items()` with every field line, plus `in`, `[]=` and `del`); a response has
`status_code`, `headers` and `request`. `FieldLines` below is such a header container.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, quote_plus

import pytest
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver
from http_message_signatures.algorithms import ED25519
from hypothesis import HealthCheck, event, given, settings, strategies as st

from exchange.signatures import (
    SignatureError,
    SignedRequest,
    check_signature,
    read_signature,
    sign_response,
)
from sdk import signing
from tests.signing.helpers import KEY_ID, NOW, PRIVATE_KEY, PUBLIC_KEY

EXAMPLES = int(os.environ.get("SIGNING_INTEROP_EXAMPLES", "200"))
INTEROP = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
MAX_AGE = timedelta(seconds=300)
RESOLVER = MappingKeyResolver(
    public_keys={KEY_ID: PRIVATE_KEY.public_key()}, private_keys={KEY_ID: PRIVATE_KEY}
)
REQUEST_SIGNER = HTTPMessageSigner(signature_algorithm=ED25519, key_resolver=RESOLVER)
VERIFIER = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=RESOLVER)


class FieldLines:
    """Header field lines as sent, repeats included: the container pyauth reads and writes."""

    def __init__(self, lines: Iterable[tuple[str, str]] = ()) -> None:
        self.lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.lines)

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()]

    def received(self) -> dict[str, str]:
        """What the exchange sees: each line trimmed by the HTTP parser, repeats joined by ", "."""
        combined: dict[str, list[str]] = {}
        for name, value in self.lines:
            combined.setdefault(name.lower(), []).append(value.strip(" \t"))
        return {name: ", ".join(values) for name, values in combined.items()}


@dataclass
class Request:
    method: str
    url: str
    headers: FieldLines


@dataclass
class Response:
    status_code: int
    headers: FieldLines
    request: Request


@dataclass(frozen=True)
class Exchange:
    """One generated request: what the client sends, in the pieces each side needs."""

    method: str
    scheme: str
    host: str
    path: str
    query: str | None
    body: bytes
    extra_lines: list[str] = field(default_factory=list)
    """Field lines of a repeated header, `x-extra`, with whatever whitespace the client added."""

    @property
    def url(self) -> str:
        suffix = "" if self.query is None else f"?{self.query}"
        return f"{self.scheme}://{self.host}{self.path}{suffix}"

    def field_lines(self) -> FieldLines:
        lines = [("Host", self.host), ("Idempotency-Key", "idem-1")]
        lines += [("X-Extra", line) for line in self.extra_lines]
        return FieldLines(lines)

    def covered(self) -> list[str]:
        covered = signing.request_covered_components(
            method=self.method, query=self.query, body=self.body
        )
        return [*covered, "x-extra"] if self.extra_lines else covered

    def received(self, headers: FieldLines) -> SignedRequest:
        return SignedRequest(
            self.method,
            self.host,
            self.path,
            self.query,
            headers.received(),
            self.body,
            scheme=self.scheme,
        )

    def single_query_names(self) -> list[str]:
        """Query parameter names that occur once: those `"@query-param"` may cover."""
        names = [name for name, _ in parse_qsl(self.query or "", keep_blank_values=True)]
        return [name for name in dict.fromkeys(names) if names.count(name) == 1]


# --- Strategies ----------------------------------------------------------------------------------

RAW_PATH_CHARACTERS = "abcXYZ019-._~!$&'()*+,;=:@"
segments = st.one_of(
    st.text(max_size=6).map(lambda text: quote(text, safe="")),  # unicode, '/', '?', '%', space
    st.text(alphabet=RAW_PATH_CHARACTERS, max_size=6),  # characters a client may send unencoded
    st.sampled_from(["%7e", "%7E", "%2F", "%2f", "%25", "caf%C3%A9", "%E2%82%AC"]),
)
paths = st.one_of(
    st.just(""), st.lists(segments, max_size=5).map(lambda parts: "/" + "/".join(parts))
)
query_texts = st.text(max_size=6).map(lambda text: quote_plus(text, safe=""))
query_params = st.one_of(query_texts, st.builds(lambda k, v: f"{k}={v}", query_texts, query_texts))
queries = st.one_of(
    st.none(),
    st.just(""),
    st.lists(query_params, min_size=1, max_size=5).map("&".join),
    st.lists(query_params, min_size=1, max_size=3).map(lambda ps: "&".join(ps + ps)),  # repeats
)
MIB = 1 << 20
PATTERN = bytes(range(251))
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=256),
    st.sampled_from([MIB, MIB - 1, 4096]).map(lambda size: (PATTERN * (size // 251 + 1))[:size]),
    st.binary(max_size=64).map(
        lambda raw: json.dumps(
            {"data": base64.b64encode(raw).decode(), "note": "caf\u00e9"}
        ).encode()
    ),
)
origins = st.sampled_from(
    [
        ("https", "api.exchange.example"),
        ("https", "API.Exchange.Example"),
        ("https", "exchange.example:443"),
        ("http", "exchange.example:80"),
        ("http", "localhost:8000"),
        ("https", "127.0.0.1:8443"),
        ("https", "[::1]:8443"),
    ]
)
field_texts = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
extra_lines = st.lists(
    st.builds(
        lambda before, text, after: f"{before}{text}{after}",
        st.sampled_from(["", " ", "\t "]),
        field_texts,
        st.sampled_from(["", " ", " \t"]),
    ),
    max_size=3,
)


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    scheme, host = draw(origins)
    return Exchange(
        method=draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])),
        scheme=scheme,
        host=host,
        path=draw(paths),
        query=draw(queries),
        body=draw(bodies),
        extra_lines=draw(extra_lines),
    )


def _label(exchange: Exchange) -> None:
    """Name the case for `--hypothesis-show-statistics`, to see that the hard ones are reached."""
    size = len(exchange.body)
    event("body: " + ("empty" if not size else "1 MiB" if size >= MIB - 1 else "small"))
    query = exchange.query
    repeated = query is not None and len(set(query.split("&"))) < len(query.split("&"))
    event(
        "query: "
        + (
            "none"
            if query is None
            else "empty"
            if not query
            else "repeated"
            if repeated
            else "some"
        )
    )
    event("path: " + ("percent-encoded" if "%" in exchange.path else "plain"))
    event(f"x-extra lines: {len(exchange.extra_lines)}")


# --- pyauth signs, the exchange verifies ---------------------------------------------------------


def _signed_by_pyauth(exchange: Exchange, *, include_alg: bool, nonce: str) -> SignedRequest:
    message = Request(exchange.method, exchange.url, exchange.field_lines())
    REQUEST_SIGNER.sign(
        message,
        key_id=KEY_ID,
        created=datetime.fromtimestamp(NOW, UTC),
        nonce=nonce,
        label="sig1",
        include_alg=include_alg,
        covered_component_ids=exchange.covered(),
        body=exchange.body,  # pyauth adds Content-Digest, and covers it, even for b""
    )
    return exchange.received(message.headers)


def test_request_signed_by_http_message_signatures_is_accepted() -> None:
    exchange = Exchange(
        method="POST",
        scheme="https",
        host="api.exchange.example",
        path="/v1/members/caf%C3%A9/balance",
        query="limit=10&limit=&cursor",
        body=b'{"points": 10}',
        extra_lines=[" one", "two\t"],
    )
    claims = read_signature(_signed_by_pyauth(exchange, include_alg=True, nonce="n-1"), now=NOW)
    check_signature(claims, PUBLIC_KEY)
    assert claims.covered == (
        '"@method"',
        '"@authority"',
        '"@path"',
        '"@query"',
        '"content-digest"',
        '"idempotency-key"',
        '"x-extra"',
    )


@INTEROP
@given(
    exchange=exchanges(),
    include_alg=st.booleans(),
    nonce=st.from_regex(r"[!-~]{1,32}", fullmatch=True),
)
def test_requests_signed_by_http_message_signatures_are_all_accepted(
    exchange: Exchange, include_alg: bool, nonce: str
) -> None:
    _label(exchange)
    claims = read_signature(
        _signed_by_pyauth(exchange, include_alg=include_alg, nonce=nonce), now=NOW
    )
    check_signature(claims, PUBLIC_KEY)
    assert claims.nonce == nonce


EXTRA_DERIVED = ["@target-uri", "@scheme", "@request-target"]


def _query_param_id(name: str) -> str:
    """`"@query-param";name="…"` with the name percent-encoded as RFC 9421 §2.2.8 writes it."""
    return f'"@query-param";name="{quote(name, safe="*").replace("~", "%7E")}"'


def test_request_covering_every_derived_component_signed_by_pyauth_is_accepted() -> None:
    exchange = Exchange(
        method="GET",
        scheme="https",
        host="Api.Exchange.Example:8443",
        path="/v1/transactions",
        query="member_id=mem_1&limit=10&note=caf%C3%A9+%7E&x=1&x=2",
        body=b"",
    )
    covered = [
        *exchange.covered(),
        *EXTRA_DERIVED,
        _query_param_id("limit"),
        _query_param_id("note"),
    ]
    message = Request(exchange.method, exchange.url, exchange.field_lines())
    REQUEST_SIGNER.sign(
        message,
        key_id=KEY_ID,
        created=datetime.fromtimestamp(NOW, UTC),
        nonce="n-1",
        label="sig1",
        tag="till-42",
        covered_component_ids=covered,
    )
    claims = read_signature(exchange.received(message.headers), now=NOW)
    check_signature(claims, PUBLIC_KEY)
    assert claims.covered[-5:] == (
        '"@target-uri"',
        '"@scheme"',
        '"@request-target"',
        '"@query-param";name="limit"',
        '"@query-param";name="note"',
    )
    lines = dict(claims.base.decode().split("\n")[i].split(": ", 1) for i in range(9))
    assert (
        lines['"@target-uri"']
        == f"https://Api.Exchange.Example:8443/v1/transactions?{exchange.query}"
    )
    assert lines['"@query-param";name="note"'] == "caf%C3%A9%20%7E"

    # Each of them is checked: another scheme, path or parameter value is refused.
    for changed in (
        dataclasses.replace(exchange.received(message.headers), scheme="http"),
        dataclasses.replace(exchange.received(message.headers), path="/v1/transactionz"),
        dataclasses.replace(
            exchange.received(message.headers), query=exchange.query.replace("10", "11")
        ),
    ):
        with pytest.raises(SignatureError) as refused:
            check_signature(read_signature(changed, now=NOW), PUBLIC_KEY)
        assert refused.value.code == "signature_invalid"


@INTEROP
@given(
    exchange=exchanges(),
    extra=st.lists(st.sampled_from(EXTRA_DERIVED), unique=True),
    query_params=st.integers(min_value=0, max_value=2),
    tag=st.one_of(st.none(), st.from_regex(r"[ -~]{0,12}", fullmatch=True)),
)
def test_requests_covering_more_components_signed_by_pyauth_are_all_accepted(
    exchange: Exchange, extra: list[str], query_params: int, tag: str | None
) -> None:
    _label(exchange)
    names = exchange.single_query_names()[:query_params]
    event(f"extra derived components: {len(extra) + len(names)}")
    message = Request(exchange.method, exchange.url, exchange.field_lines())
    REQUEST_SIGNER.sign(
        message,
        key_id=KEY_ID,
        created=datetime.fromtimestamp(NOW, UTC),
        nonce="n-1",
        label="sig1",
        tag=tag,
        covered_component_ids=[*exchange.covered(), *extra, *map(_query_param_id, names)],
        body=exchange.body,
    )
    check_signature(read_signature(exchange.received(message.headers), now=NOW), PUBLIC_KEY)


# --- The SDK signs, pyauth verifies --------------------------------------------------------------


def _verify_sdk_request_with_pyauth(exchange: Exchange) -> None:
    lines = exchange.field_lines()
    added = signing.sign_request(
        method=exchange.method,
        authority=exchange.host,
        path=exchange.path,
        query=exchange.query,
        headers=lines.received(),
        body=exchange.body,
        key_id=KEY_ID,
        private_key=PRIVATE_KEY,
        created=int(time.time()),  # pyauth checks `created` against the wall clock
        nonce="n-sdk",
    )
    for name, value in added.items():
        lines[name] = value
    message = Request(exchange.method, exchange.url, lines)
    covered = [signing.component_id(name) for name in exchange.covered() if name != "x-extra"]
    (result,) = VERIFIER.verify(
        message, body=exchange.body, max_age=MAX_AGE, require_components=covered
    )
    assert result.parameters["keyid"] == KEY_ID
    # ...and the exchange agrees with pyauth on the same request.
    claims = read_signature(exchange.received(lines), now=int(time.time()))
    check_signature(claims, PUBLIC_KEY)


def test_request_signed_by_the_sdk_verifies_with_http_message_signatures() -> None:
    _verify_sdk_request_with_pyauth(
        Exchange("POST", "https", "api.exchange.example", "/v1/issuances", None, b'{"points": 1}')
    )


@INTEROP
@given(exchange=exchanges())
def test_requests_signed_by_the_sdk_all_verify_with_http_message_signatures(
    exchange: Exchange,
) -> None:
    _label(exchange)
    _verify_sdk_request_with_pyauth(exchange)


# --- The exchange signs responses, pyauth and the SDK verify -------------------------------------


def _verify_response_both_ways(exchange: Exchange, status: int) -> None:
    now = int(time.time())  # pyauth checks `created` against the wall clock
    signed = sign_response(
        status=status,
        body=exchange.body,
        request_method=exchange.method,
        request_path=exchange.path,
        key_id="exchange-key-1",
        private_key=PRIVATE_KEY,
        now=now,
    )
    request = Request(exchange.method, exchange.url, exchange.field_lines())
    response = Response(status, FieldLines(signed.items()), request)
    resolver = MappingKeyResolver(
        public_keys={"exchange-key-1": PRIVATE_KEY.public_key()}, private_keys={}
    )
    verifier = HTTPMessageVerifier(signature_algorithm=ED25519, key_resolver=resolver)
    (result,) = verifier.verify(
        response,
        body=exchange.body,
        max_age=MAX_AGE,
        require_components=signing.RESPONSE_COMPONENTS,
    )
    assert result.body == exchange.body
    key_id = signing.verify_response(
        status=status,
        headers=signed,
        body=exchange.body,
        request_method=exchange.method,
        request_path=exchange.path,
        public_keys={"exchange-key-1": PUBLIC_KEY},
        now=now,
    )
    assert key_id == "exchange-key-1"


def test_response_signed_by_the_exchange_verifies_with_http_message_signatures() -> None:
    exchange = Exchange("POST", "https", "api.exchange.example", "/v1/holds", None, b"{}")
    _verify_response_both_ways(exchange, 201)


@INTEROP
@given(exchange=exchanges(), status=st.sampled_from([200, 201, 204, 401, 404, 409, 422, 429]))
def test_responses_signed_by_the_exchange_all_verify_with_http_message_signatures(
    exchange: Exchange, status: int
) -> None:
    _label(exchange)
    _verify_response_both_ways(exchange, status)
