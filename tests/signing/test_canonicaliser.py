"""`sdk.signing` on its own: component values, serialisation, request and response signing."""

from __future__ import annotations

import base64

import pytest

from sdk import signing
from tests.signing.helpers import (
    KEY_ID,
    NOW,
    OTHER_KEY,
    OTHER_PUBLIC_KEY,
    PRIVATE_KEY,
    PUBLIC_KEY,
)

# --- Component values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "value"), [("post", "POST"), ("GET", "GET"), ("Patch", "PATCH")]
)
def test_method_value_is_uppercased(method: str, value: str) -> None:
    assert signing.method_value(method) == value


@pytest.mark.parametrize("method", ["", "GE T", "POST\n", "PÖST"])
def test_method_value_refuses_what_is_not_a_method(method: str) -> None:
    with pytest.raises(ValueError, match="not an HTTP method"):
        signing.method_value(method)


@pytest.mark.parametrize(
    ("authority", "scheme", "value"),
    [
        ("Example.COM", None, "example.com"),
        ("example.com:443", None, "example.com"),
        ("example.com:80", None, "example.com"),
        ("example.com:8443", None, "example.com:8443"),
        ("example.com:443", "https", "example.com"),
        ("example.com:443", "http", "example.com:443"),
        ("example.com:80", "https", "example.com:80"),
        ("[::1]:443", None, "[::1]"),
        ("[::1]", None, "[::1]"),
        ("[2001:DB8::1]:8000", None, "[2001:db8::1]:8000"),
        (" example.com ", None, "example.com"),
    ],
)
def test_authority_value_is_lowercased_without_default_port(
    authority: str, scheme: str | None, value: str
) -> None:
    assert signing.authority_value(authority, scheme=scheme) == value


def test_authority_value_refuses_an_empty_host() -> None:
    with pytest.raises(ValueError, match="no host"):
        signing.authority_value(":443")


@pytest.mark.parametrize(
    ("path", "value"),
    [("", "/"), ("/", "/"), ("/a%2Fb/%7e/caf%C3%A9", "/a%2Fb/%7e/caf%C3%A9"), ("/a//b/", "/a//b/")],
)
def test_path_value_is_the_raw_path(path: str, value: str) -> None:
    assert signing.path_value(path) == value


@pytest.mark.parametrize(
    ("query", "value"),
    [(None, "?"), ("", "?"), ("a=1&a=&b", "?a=1&a=&b"), ("q=%20+x", "?q=%20+x")],
)
def test_query_value_is_a_question_mark_and_the_raw_query(query: str | None, value: str) -> None:
    assert signing.query_value(query) == value


@pytest.mark.parametrize(("status", "value"), [(200, "200"), (201, "201"), (503, "503")])
def test_status_value_is_the_three_digit_code(status: int, value: str) -> None:
    assert signing.status_value(status) == value


@pytest.mark.parametrize("status", [99, 1000, True])
def test_status_value_refuses_other_numbers(status: int) -> None:
    with pytest.raises(ValueError, match="status code"):
        signing.status_value(status)


@pytest.mark.parametrize(
    ("lines", "value"),
    [
        ("  application/json \t", "application/json"),
        (["a ", " b", ""], "a, b, "),
        ("one\r\n  two", "one two"),
        ("", ""),
        ("in\tside", "in\tside"),
    ],
)
def test_field_value_trims_each_line_and_joins_them(lines: str | list[str], value: str) -> None:
    assert signing.field_value(lines) == value


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        (
            "https://Example.com:8443/a%20b/?x=1#frag",
            ("https", "Example.com:8443", "/a%20b/", "x=1"),
        ),
        ("HTTPS://h/p?", ("https", "h", "/p", "")),
        ("https://h/p", ("https", "h", "/p", None)),
        ("https://user:pw@h/p", ("https", "h", "/p", None)),
        ("https://h?x=1", ("https", "h", "", "x=1")),
        ("http://h", ("http", "h", "", None)),
        ("https://h/p?a=1?b#c?d", ("https", "h", "/p", "a=1?b")),
    ],
)
def test_split_url_keeps_the_raw_pieces(url: str, parts: tuple[str, str, str, str | None]) -> None:
    assert signing.split_url(url) == signing.UrlParts(*parts)


@pytest.mark.parametrize("url", ["/v1/members", "example.com/p", "://h/p"])
def test_split_url_refuses_a_relative_url(url: str) -> None:
    with pytest.raises(ValueError, match="absolute URL"):
        signing.split_url(url)


# --- Serialisation -------------------------------------------------------------------------------


def test_component_id_serializes_names_and_the_req_flag() -> None:
    assert signing.component_id("@method") == '"@method"'
    assert signing.component_id("@path", req=True) == '"@path";req'
    assert signing.component_id("content-digest") == '"content-digest"'


@pytest.mark.parametrize("name", ["Content-Type", "", "@", "a b", '"x"'])
def test_component_id_refuses_names_that_are_not_lowercase_tokens(name: str) -> None:
    with pytest.raises(ValueError, match="lowercase component name"):
        signing.component_id(name)


def test_signature_params_are_emitted_in_the_documented_order() -> None:
    params = signing.serialize_signature_params(
        ['"@method"', '"@path";req'],
        tag="t",
        alg="ed25519",
        expires=NOW + 60,
        nonce="n",
        keyid="k",
        created=NOW,
    )
    assert params == (
        f'("@method" "@path";req);created={NOW};keyid="k";nonce="n";expires={NOW + 60}'
        ';alg="ed25519";tag="t"'
    )


def test_signature_params_escape_quotes_and_backslashes() -> None:
    params = signing.serialize_signature_params([], created=0, keyid='a"b\\c')
    assert params == '();created=0;keyid="a\\"b\\\\c"'


@pytest.mark.parametrize(
    "created", [-1, True, 10**15, 1.5], ids=["negative", "boolean", "sixteen-digits", "float"]
)
def test_signature_params_refuse_a_created_that_is_not_a_small_integer(created: int) -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        signing.serialize_signature_params([], created=created, keyid="k")


@pytest.mark.parametrize("keyid", ["clé", "line\nbreak", "tab\t"])
def test_signature_params_refuse_a_string_sf_cannot_carry(keyid: str) -> None:
    with pytest.raises(ValueError, match="structured-field string"):
        signing.serialize_signature_params([], created=0, keyid=keyid)


@pytest.mark.parametrize(
    "components",
    [['"@method"', '"@method"'], ["@method"], ['"@method" "@path"'], ['"x";req=?1']],
    ids=["duplicate", "unquoted", "two-in-one", "boolean-parameter-value"],
)
def test_signature_params_refuse_bad_component_ids(components: list[str]) -> None:
    with pytest.raises(ValueError, match="component"):
        signing.serialize_signature_params(components, created=0, keyid="k")


# --- Signature base ------------------------------------------------------------------------------


def test_signature_base_has_no_trailing_newline_and_keeps_empty_values() -> None:
    base = signing.signature_base([('"x-empty"', "")], '("x-empty");created=0;keyid="k"')
    assert base == b'"x-empty": \n"@signature-params": ("x-empty");created=0;keyid="k"'


@pytest.mark.parametrize("value", ["two\nlines", "carriage\rreturn", "caf\u00e9"])
def test_signature_base_refuses_values_that_are_not_one_ascii_line(value: str) -> None:
    with pytest.raises(ValueError, match="one line of ASCII"):
        signing.signature_base([('"x"', value)], '("x");created=0;keyid="k"')


def test_signature_base_refuses_a_component_covered_twice() -> None:
    with pytest.raises(ValueError, match="covered twice"):
        signing.signature_base([('"x"', "1"), ('"x"', "2")], '("x" "x");created=0;keyid="k"')


# --- Ed25519 -------------------------------------------------------------------------------------


def test_ed25519_signatures_are_64_bytes_and_verify() -> None:
    signature = signing.sign_ed25519(b"base", PRIVATE_KEY)
    assert len(signature) == signing.ED25519_SIGNATURE_BYTES
    assert signing.verify_ed25519(b"base", signature, PUBLIC_KEY)
    assert not signing.verify_ed25519(b"base!", signature, PUBLIC_KEY)
    assert not signing.verify_ed25519(b"base", signing.sign_ed25519(b"base", OTHER_KEY), PUBLIC_KEY)


@pytest.mark.parametrize("size", [0, 31, 33, 44])
def test_verify_ed25519_raises_for_a_key_of_the_wrong_size(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        signing.verify_ed25519(b"base", bytes(64), bytes(size))


# --- Requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "query", "body", "covered"),
    [
        ("GET", None, b"", ["@method", "@authority", "@path"]),
        ("get", "", b"", ["@method", "@authority", "@path", "@query"]),
        ("DELETE", None, b"x", ["@method", "@authority", "@path", "content-digest"]),
        ("POST", None, b"", ["@method", "@authority", "@path", "idempotency-key"]),
        (
            "POST",
            "a=1",
            b"{}",
            ["@method", "@authority", "@path", "@query", "content-digest", "idempotency-key"],
        ),
    ],
)
def test_request_covered_components_follow_the_protocol(
    method: str, query: str | None, body: bytes, covered: list[str]
) -> None:
    assert signing.request_covered_components(method=method, query=query, body=body) == covered


def _sign(**overrides: object) -> dict[str, str]:
    arguments: dict[str, object] = {
        "method": "POST",
        "authority": "api.example",
        "path": "/v1/holds",
        "query": None,
        "headers": {"Idempotency-Key": "idem-1"},
        "body": b'{"points": 5}',
        "key_id": KEY_ID,
        "private_key": PRIVATE_KEY,
        "created": NOW,
        "nonce": "n-1",
    }
    arguments.update(overrides)
    return signing.sign_request(**arguments)  # type: ignore[arg-type]


def test_sign_request_returns_content_digest_input_and_signature() -> None:
    headers = _sign()
    assert headers["Content-Digest"] == signing.content_digest(b'{"points": 5}')
    assert headers["Signature-Input"] == (
        'sig1=("@method" "@authority" "@path" "content-digest" "idempotency-key")'
        f';created={NOW};keyid="{KEY_ID}";nonce="n-1"'
    )
    assert headers["Signature"].startswith("sig1=:")
    assert headers["Signature"].endswith(":")


def test_sign_request_without_a_body_adds_no_content_digest() -> None:
    assert set(_sign(method="GET", body=b"", headers={})) == {"Signature-Input", "Signature"}


def test_sign_request_signs_a_base_the_public_key_verifies() -> None:
    headers = _sign(expires=NOW + 30, label="merchant")
    params = headers["Signature-Input"].removeprefix("merchant=")
    lines = [
        ('"@method"', "POST"),
        ('"@authority"', "api.example"),
        ('"@path"', "/v1/holds"),
        ('"content-digest"', headers["Content-Digest"]),
        ('"idempotency-key"', "idem-1"),
    ]
    signature = base64.b64decode(headers["Signature"].removeprefix("merchant=:")[:-1])
    assert params.endswith(f';nonce="n-1";expires={NOW + 30}')
    assert signing.verify_ed25519(signing.signature_base(lines, params), signature, PUBLIC_KEY)


def test_sign_request_refuses_a_post_without_an_idempotency_key() -> None:
    with pytest.raises(ValueError, match="Idempotency-Key"):
        _sign(headers={})


@pytest.mark.parametrize("label", ["Sig1", "", "1sig", "sig 1"])
def test_sign_request_refuses_a_label_that_is_not_an_sf_key(label: str) -> None:
    with pytest.raises(ValueError, match="signature label"):
        _sign(label=label)


# --- Responses -----------------------------------------------------------------------------------

RESPONSE_BODY = b'{"transaction_id": "txn_1"}'


def _response(**overrides: object) -> dict[str, str]:
    digest = signing.content_digest(RESPONSE_BODY)
    arguments: dict[str, object] = {
        "status": 201,
        "content_digest": digest,
        "request_method": "POST",
        "request_path": "/v1/issuances",
        "key_id": "exchange-key-1",
        "private_key": PRIVATE_KEY,
        "created": NOW,
    }
    arguments.update(overrides)
    return {"Content-Digest": digest, **signing.sign_response(**arguments)}  # type: ignore[arg-type]


def _verify(headers: dict[str, str], **overrides: object) -> str:
    arguments: dict[str, object] = {
        "status": 201,
        "headers": headers,
        "body": RESPONSE_BODY,
        "request_method": "POST",
        "request_path": "/v1/issuances",
        "public_keys": {"exchange-key-1": PUBLIC_KEY},
        "now": NOW,
    }
    arguments.update(overrides)
    return signing.verify_response(**arguments)  # type: ignore[arg-type]


def test_response_signature_covers_status_digest_and_the_request() -> None:
    headers = _response()
    assert headers["Signature-Input"] == (
        'sig1=("@status" "content-digest" "@method";req "@path";req)'
        f';created={NOW};keyid="exchange-key-1"'
    )
    assert _verify(headers) == "exchange-key-1"


def test_verify_response_reads_header_names_in_any_case() -> None:
    headers = {name.upper(): f" {value} " for name, value in _response().items()}
    assert _verify(headers) == "exchange-key-1"


@pytest.mark.parametrize("offset", [-200, -signing.CREATED_TOLERANCE_S, 200, 300])
def test_verify_response_accepts_a_clock_off_by_up_to_the_tolerance_either_way(
    offset: int,
) -> None:
    # A negative offset is a client clock behind the exchange's: the signature is from its future.
    assert _verify(_response(), now=NOW + offset) == "exchange-key-1"


@pytest.mark.parametrize(
    "overrides",
    [
        {"status": 200},
        {"body": RESPONSE_BODY + b" "},
        {"request_method": "GET"},
        {"request_path": "/v1/redemptions"},
        {"public_keys": {"exchange-key-1": OTHER_PUBLIC_KEY}},
        {"public_keys": {}},
        {"now": NOW + signing.CREATED_TOLERANCE_S + 1},
        {"now": NOW - signing.CREATED_TOLERANCE_S - 1},
    ],
    ids=[
        "status",
        "body",
        "request-method",
        "request-path",
        "other-key",
        "unknown-key",
        "stale",
        "from-the-future",
    ],
)
def test_verify_response_refuses_a_response_that_does_not_match(
    overrides: dict[str, object],
) -> None:
    with pytest.raises(signing.ResponseSignatureError):
        _verify(_response(), **overrides)


def _with(headers: dict[str, str], name: str, value: str | None) -> dict[str, str]:
    changed = {key: item for key, item in headers.items() if key != name}
    return changed if value is None else {**changed, name: value}


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("Signature-Input", None),
        ("Signature", None),
        ("Content-Digest", None),
        ("Signature-Input", lambda value: value.replace(' "@path";req', "")),
        ("Signature-Input", lambda value: value.replace("sig1=", "sig2=")),
        ("Signature-Input", lambda value: f"{value}, sig2=()"),
        ("Signature-Input", lambda value: f'{value};alg="rsa-pss-sha512"'),
        ("Signature-Input", lambda value: f"{value};expires={NOW}"),
        ("Signature-Input", lambda value: f'{value};keyid="again"'),
        ("Signature-Input", lambda value: f"{value};unknown=1"),
        ("Signature-Input", lambda value: value.replace(f"created={NOW}", 'created="x"')),
        ("Signature", lambda value: value[:-3] + ":"),
        ("Signature", lambda value: value.replace("sig1=", "sig2=")),
        ("Content-Digest", lambda value: value.replace("sha-256", "sha-512")),
    ],
    ids=[
        "no-signature-input",
        "no-signature",
        "no-content-digest",
        "other-components",
        "label-mismatch",
        "two-signatures",
        "other-alg",
        "expired",
        "repeated-parameter",
        "unknown-parameter",
        "created-not-integer",
        "bad-base64",
        "signature-label",
        "digest-algorithm",
    ],
)
def test_verify_response_refuses_malformed_fields(name: str, change: object) -> None:
    headers = _response()
    value = None if change is None else change(headers[name])  # type: ignore[operator]
    with pytest.raises(signing.ResponseSignatureError):
        _verify(_with(headers, name, value))


def test_verify_response_accepts_an_unexpired_expires() -> None:
    # The exchange emits no `expires`; one that is still in the future is honoured, not refused.
    digest = signing.content_digest(RESPONSE_BODY)
    lines = signing.response_signature_lines(
        status=201, content_digest=digest, request_method="POST", request_path="/v1/issuances"
    )
    params = signing.serialize_signature_params(
        signing.RESPONSE_COMPONENTS, created=NOW, keyid="exchange-key-1", expires=NOW + 10
    )
    signature = signing.sign_ed25519(signing.signature_base(lines, params), PRIVATE_KEY)
    headers = {
        "Content-Digest": digest,
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{base64.b64encode(signature).decode()}:",
    }
    assert _verify(headers) == "exchange-key-1"


# --- The other RFC 9421 §2.2 derived request components (the RFC's own examples) ----------------


def test_target_uri_scheme_and_request_target_follow_rfc_9421_examples() -> None:
    # RFC 9421 §2.2.2, §2.2.4, §2.2.5: POST /path?param=value to https://www.example.com
    assert (
        signing.target_uri_value("https", "www.example.com", "/path", "param=value")
        == "https://www.example.com/path?param=value"
    )
    assert signing.scheme_value("HTTPS") == "https"
    assert signing.request_target_value("/path", "param=value") == "/path?param=value"
    assert signing.request_target_value("", None) == "/"
    assert signing.request_target_value("/p", "") == "/p?"


@pytest.mark.parametrize(
    ("query", "name", "value"),
    [
        ("param=value&foo=bar&baz=batman&qux=", "baz", "batman"),
        ("param=value&foo=bar&baz=batman&qux=", "qux", ""),
        (
            "var=this%20is%20a%20big%0Avalue&bar=with+plus+whitespace",
            "var",
            "this%20is%20a%20big%0Avalue",
        ),
        (
            "var=this%20is%20a%20big%0Avalue&bar=with+plus+whitespace",
            "bar",
            "with%20plus%20whitespace",
        ),
        ("fa%C3%A7ade%22%3A%20=something", "fa%C3%A7ade%22%3A%20", "something"),
        ("tilde=%7e~&star=*", "tilde", "%7E%7E"),
        ("tilde=%7e~&star=*", "star", "*"),
        ("flag", "flag", ""),
    ],
)
def test_query_param_value_follows_rfc_9421_section_2_2_8(
    query: str, name: str, value: str
) -> None:
    assert signing.query_param_value(query, name) == value


@pytest.mark.parametrize(("query", "name"), [(None, "a"), ("a=1", "b"), ("a=1&a=2", "a")])
def test_query_param_value_refuses_an_absent_or_repeated_parameter(
    query: str | None, name: str
) -> None:
    with pytest.raises(ValueError, match="query parameter"):
        signing.query_param_value(query, name)


def test_request_components_build_every_derived_request_component() -> None:
    lines = signing.request_components(
        covered=[
            "@method",
            "@target-uri",
            "@authority",
            "@scheme",
            "@request-target",
            "@path",
            "@query",
            signing.QueryParam("Pet"),
        ],
        method="get",
        authority="Example.COM:443",
        path="/v1/x",
        query="Pet=dog+cat",
        headers={},
        received_scheme="https",
    )
    assert lines == [
        ('"@method"', "GET"),
        ('"@target-uri"', "https://Example.COM:443/v1/x?Pet=dog+cat"),
        ('"@authority"', "example.com"),
        ('"@scheme"', "https"),
        ('"@request-target"', "/v1/x?Pet=dog+cat"),
        ('"@path"', "/v1/x"),
        ('"@query"', "?Pet=dog+cat"),
        ('"@query-param";name="Pet"', "dog%20cat"),
    ]


@pytest.mark.parametrize("name", ["@status", "@query-param", "@signature-params", "@unknown"])
def test_request_components_refuse_what_a_request_cannot_cover(name: str) -> None:
    with pytest.raises(ValueError, match="component|name parameter"):
        signing.request_components(
            covered=[name], method="GET", authority="h", path="/", query=None, headers={}
        )


def test_request_components_need_a_scheme_for_scheme_and_target_uri() -> None:
    for name in ("@scheme", "@target-uri"):
        with pytest.raises(ValueError, match="scheme"):
            signing.request_components(
                covered=[name], method="GET", authority="h", path="/", query=None, headers={}
            )
