"""Every way `read_signature` and `check_signature` refuse a request, each with its exact code."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from core.errors import DomainError
from core.limits import SIGNATURE_TOLERANCE_S
from exchange.signatures import (
    SignatureError,
    SignedRequest,
    check_signature,
    read_signature,
)
from sdk import signing
from tests.signing.helpers import (
    BODY,
    HOST,
    KEY_ID,
    NOW,
    OTHER_KEY,
    PUBLIC_KEY,
    resigned,
    signed_request,
    with_headers,
)

REQUIRED_POST = '"@method" "@authority" "@path" "content-digest" "idempotency-key"'
PARAMS = f';created={NOW};keyid="{KEY_ID}";nonce="n-1"'


def refusal(
    request: SignedRequest, *, now: int = NOW, tolerance_s: int = SIGNATURE_TOLERANCE_S
) -> str:
    with pytest.raises(SignatureError) as refused:
        read_signature(request, now=now, tolerance_s=tolerance_s)
    return refused.value.code


def accepted(request: SignedRequest, *, now: int = NOW) -> None:
    check_signature(read_signature(request, now=now), PUBLIC_KEY)


# --- Acceptance ----------------------------------------------------------------------------------


def test_signature_accepted_when_the_sdk_signed_a_post() -> None:
    claims = read_signature(signed_request(), now=NOW)
    check_signature(claims, PUBLIC_KEY)
    assert (claims.label, claims.key_id, claims.nonce, claims.created) == (
        "sig1",
        KEY_ID,
        "nonce-1",
        NOW,
    )
    assert claims.expires is None
    assert claims.covered == tuple(f'"{name}"' for name in REQUIRED_POST.replace('"', "").split())


@pytest.mark.parametrize(
    ("method", "query", "body"),
    [
        ("GET", None, b""),
        ("GET", "", b""),
        ("GET", "member_id=mem_1&limit=10&limit=", b""),
        ("POST", None, b""),
        ("POST", "x=%E2%82%AC", b"\x00\xff binary"),
    ],
)
def test_signature_accepted_for_each_required_component_set(
    method: str, query: str | None, body: bytes
) -> None:
    accepted(signed_request(method=method, query=query, body=body))


def test_signature_accepted_with_extra_components_and_parameters_in_any_order() -> None:
    request = signed_request(headers={"x-trace": "t-1"})
    inner = f'({REQUIRED_POST} "x-trace" "content-type");keyid="{KEY_ID}";alg="ed25519"'
    accepted(resigned(request, f'{inner};nonce="n-2";expires={NOW + 60};created={NOW}'))


def test_signature_accepted_with_percent_encoded_path_kept_as_sent() -> None:
    accepted(signed_request(method="GET", path="/v1/members/caf%C3%A9%2Fx/balance", body=b""))


def test_signature_accepted_when_host_has_a_default_port() -> None:
    request = signed_request(headers={"host": "API.Exchange.Example:443"})
    assert request.authority == "API.Exchange.Example:443"
    accepted(request)


@pytest.mark.parametrize(
    "created",
    [NOW - SIGNATURE_TOLERANCE_S, NOW + 200, NOW + SIGNATURE_TOLERANCE_S],
    ids=["oldest", "200-s-ahead", "newest"],
)
def test_signature_accepted_at_the_edges_of_the_window(created: int) -> None:
    accepted(signed_request(created=created))


def test_signature_accepted_with_a_tag_which_is_ignored() -> None:
    accepted(resigned(signed_request(), f'({REQUIRED_POST}){PARAMS};tag="another-app"'))


def test_signature_accepted_until_the_second_it_expires() -> None:
    accepted(signed_request(expires=NOW + 1))


def test_signature_error_is_a_domain_error_with_the_protocol_code() -> None:
    error = SignatureError("signature_invalid", "why")
    assert isinstance(error, DomainError)
    assert (error.code, error.detail) == ("signature_invalid", "why")


# --- signature_missing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "removed",
    [{"signature": None}, {"signature_input": None}, {"signature": None, "signature_input": None}],
    ids=["no-signature", "no-signature-input", "neither"],
)
def test_signature_missing_when_a_signature_field_is_absent(removed: dict[str, None]) -> None:
    assert refusal(with_headers(signed_request(), **removed)) == "signature_missing"


# --- signature_invalid: the structured fields ----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("signature_input", "sig1=("),
        ("signature_input", 'sig1=("@method" "@path"'),
        ("signature_input", 'sig1=("@méthod")'),
        ("signature_input", "Sig1=()"),
        ("signature", "sig1=:not base64!:"),
        ("signature", "sig1=:AAAA"),
    ],
    ids=[
        "unclosed-list",
        "unclosed-list-after-items",
        "non-ascii",
        "uppercase-label",
        "bad-base64",
        "unterminated-bytes",
    ],
)
def test_signature_invalid_when_a_field_is_malformed(field: str, value: str) -> None:
    assert refusal(with_headers(signed_request(), **{field: value})) == "signature_invalid"


@pytest.mark.parametrize("field", ["signature-input", "signature"])
def test_signature_invalid_when_a_label_is_repeated_in_one_field(field: str) -> None:
    request = signed_request()
    repeated = f"{request.headers[field]}, {request.headers[field]}"
    assert refusal(with_headers(request, **{field.replace("-", "_"): repeated})) == (
        "signature_invalid"
    )


def test_signature_invalid_when_two_signatures_are_sent() -> None:
    request = signed_request()
    inputs = f"{request.headers['signature-input']}, sig2=()"
    signatures = f"{request.headers['signature']}, sig2=:{base64.b64encode(bytes(64)).decode()}:"
    assert refusal(with_headers(request, signature_input=inputs, signature=signatures)) == (
        "signature_invalid"
    )


def test_signature_invalid_when_one_field_has_an_extra_signature() -> None:
    request = signed_request()
    inputs = f"{request.headers['signature-input']}, foreign=()"
    assert refusal(with_headers(request, signature_input=inputs)) == "signature_invalid"


def test_signature_invalid_when_the_label_is_in_only_one_field() -> None:
    request = signed_request()
    other_label = request.headers["signature"].replace("sig1=", "sig2=", 1)
    assert refusal(with_headers(request, signature=other_label)) == "signature_invalid"


def test_signature_invalid_when_signature_input_is_not_an_inner_list() -> None:
    request = with_headers(signed_request(), signature_input='sig1="@method"')
    assert refusal(request) == "signature_invalid"


def test_signature_invalid_when_signature_is_not_a_byte_sequence() -> None:
    request = with_headers(signed_request(), signature='sig1="c2lnbmF0dXJl"')
    assert refusal(request) == "signature_invalid"


# --- signature_invalid: algorithm and parameters -------------------------------------------------


@pytest.mark.parametrize("alg", ['"rsa-pss-sha512"', '"ED25519"', "ed25519"], ids=str)
def test_signature_invalid_when_alg_is_not_the_string_ed25519(alg: str) -> None:
    request = resigned(signed_request(), f"({REQUIRED_POST}){PARAMS};alg={alg}")
    assert refusal(request) == "signature_invalid"


@pytest.mark.parametrize("length", [0, 32, 63, 65, 256])
def test_signature_invalid_when_the_signature_is_not_64_bytes(length: int) -> None:
    request = signed_request()
    signature = f"sig1=:{base64.b64encode(bytes(length)).decode()}:"
    assert refusal(with_headers(request, signature=signature)) == "signature_invalid"


@pytest.mark.parametrize(
    "params",
    [
        f';created={NOW};nonce="n-1"',
        f';keyid="{KEY_ID}";nonce="n-1"',
        f';created={NOW};keyid="{KEY_ID}"',
        f';created="{NOW}";keyid="{KEY_ID}";nonce="n-1"',
        f';created={NOW}.0;keyid="{KEY_ID}";nonce="n-1"',
        f';created;keyid="{KEY_ID}";nonce="n-1"',
        f';created={NOW};keyid={KEY_ID};nonce="n-1"',
        f';created={NOW};keyid="";nonce="n-1"',
        f';created={NOW};keyid="{KEY_ID}";nonce=""',
        f';created={NOW};keyid="{KEY_ID}";nonce=:bm9uY2U=:',
        f';created={NOW};keyid="{KEY_ID}";nonce="n-1";expires="{NOW + 9}"',
        f';created={NOW};keyid="{KEY_ID}";nonce="n-1";extension=1',
        f';created={NOW};keyid="{KEY_ID}";nonce="n-1";tag=another-app',
        f';created={NOW};keyid="{KEY_ID}";nonce="n-1";created={NOW}',
    ],
    ids=[
        "no-keyid",
        "no-created",
        "no-nonce",
        "created-string",
        "created-decimal",
        "created-boolean",
        "keyid-token",
        "keyid-empty",
        "nonce-empty",
        "nonce-bytes",
        "expires-string",
        "unknown-parameter",
        "tag-token",
        "repeated-parameter",
    ],
)
def test_signature_invalid_when_a_parameter_is_missing_or_wrong(params: str) -> None:
    assert refusal(resigned(signed_request(), f"({REQUIRED_POST}){params}")) == "signature_invalid"


# --- signature_invalid: covered components -------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["@method", "@authority", "@path", "content-digest", "idempotency-key"]
)
def test_signature_invalid_when_a_required_post_component_is_not_covered(missing: str) -> None:
    covered = REQUIRED_POST.replace(f'"{missing}"', "").split()
    request = resigned(signed_request(), f"({' '.join(covered)}){PARAMS}")
    assert refusal(request) == "signature_invalid"


def test_signature_invalid_when_a_query_is_sent_but_not_covered() -> None:
    request = signed_request(method="GET", query="limit=10", body=b"")
    request = resigned(request, f'("@method" "@authority" "@path"){PARAMS}')
    assert refusal(request) == "signature_invalid"


def test_signature_invalid_when_an_empty_query_is_sent_but_not_covered() -> None:
    request = signed_request(method="GET", query="", body=b"")
    request = resigned(request, f'("@method" "@authority" "@path"){PARAMS}')
    assert refusal(request) == "signature_invalid"


def test_signature_invalid_when_a_covered_header_is_absent() -> None:
    request = resigned(signed_request(), f'({REQUIRED_POST} "x-missing"){PARAMS}')
    assert refusal(request) == "signature_invalid"


@pytest.mark.parametrize(
    "component",
    [
        '"@status"',
        '"@signature-params"',
        '"@unknown"',
        '"@query-param";name="limit"',
        '"@query-param"',
        '"@query-param";name=limit',
        '"@query-param";name="limit";sf',
        '"@path";name="limit"',
        '"@method";req',
        '"idempotency-key";req',
        '"content-type";sf',
        '"content-digest";key="sha-256"',
        '"content-type";bs',
        "content-type",
        ":Y29udGVudC10eXBl:",
        '"Content-Type"',
    ],
)
def test_signature_invalid_when_a_component_is_not_supported(component: str) -> None:
    request = resigned(signed_request(), f"({REQUIRED_POST} {component}){PARAMS}")
    assert refusal(request) == "signature_invalid"


@pytest.mark.parametrize(
    ("component", "message"),
    [
        ('"@method";req', "a request signature cannot use it"),
        ('"@status"', "is a response component"),
        ('"@query-param"', "takes exactly one parameter, name"),
        ('"@query-param";name="limit"', "is not in the request"),
    ],
)
def test_signature_invalid_says_why_a_component_cannot_be_covered(
    component: str, message: str
) -> None:
    request = resigned(signed_request(), f"({REQUIRED_POST} {component}){PARAMS}")
    with pytest.raises(SignatureError, match=message):
        read_signature(request, now=NOW)


def test_signature_invalid_when_a_covered_query_param_is_repeated() -> None:
    request = signed_request(method="GET", query="limit=1&limit=2", body=b"")
    covered = '"@method" "@authority" "@path" "@query" "@query-param";name="limit"'
    with pytest.raises(SignatureError, match="occurs 2 times"):
        read_signature(resigned(request, f"({covered}){PARAMS}"), now=NOW)


def test_signature_invalid_when_a_component_is_covered_twice() -> None:
    request = resigned(signed_request(), f'({REQUIRED_POST} "@path"){PARAMS}')
    assert refusal(request) == "signature_invalid"


def test_signature_invalid_when_a_covered_value_is_not_ascii() -> None:
    request = with_headers(signed_request(), content_type="application/json; charset=é")
    request = resigned(request, f'({REQUIRED_POST} "content-type"){PARAMS}')
    assert refusal(request) == "signature_invalid"


# --- signature_invalid: Content-Digest -----------------------------------------------------------


def test_signature_invalid_when_the_body_has_no_content_digest() -> None:
    request = with_headers(signed_request(), content_digest=None)
    assert refusal(request) == "signature_invalid"


def test_signature_invalid_when_an_unsigned_body_has_no_content_digest() -> None:
    request = signed_request(method="GET", body=b"")
    request = SignedRequest("GET", HOST, request.path, None, request.headers, b"smuggled")
    assert refusal(request) == "signature_invalid"


@pytest.mark.parametrize(
    "digest",
    [
        f"sha-512={signing.content_digest(BODY).split('=', 1)[1]}",
        "sha-256=:AAAA:",
        f"sha-256={signing.content_digest(BODY).split('=', 1)[1]}, sha-256=:AAAA:",
        "sha-256=not-bytes",
        "sha-256=:AAAA",
    ],
    ids=[
        "sha-512-only",
        "sha-256-wrong",
        "repeated-algorithm",
        "not-a-byte-sequence",
        "malformed",
    ],
)
def test_signature_invalid_when_content_digest_is_wrong(digest: str) -> None:
    request = resigned(
        with_headers(signed_request(), content_digest=digest), f"({REQUIRED_POST}){PARAMS}"
    )
    assert refusal(request) == "signature_invalid"


def test_signature_invalid_when_one_body_byte_is_flipped() -> None:
    request = signed_request()
    flipped = bytes([request.body[0] ^ 1]) + request.body[1:]
    tampered = SignedRequest(
        request.method, request.authority, request.path, request.query, request.headers, flipped
    )
    assert refusal(tampered) == "signature_invalid"


@pytest.mark.parametrize(
    "digest",
    [
        f"{signing.content_digest(BODY)}, sha-512=:{base64.b64encode(bytes(64)).decode()}:",
        f"sha-512=:{base64.b64encode(bytes(64)).decode()}:, {signing.content_digest(BODY)}",
        f"{signing.content_digest(BODY)}, md5=:AAAAAAAAAAAAAAAAAAAAAA==:",
        f"{signing.content_digest(BODY)}, unixsum=12345",
    ],
    ids=["sha-512-garbage", "sha-512-garbage-first", "md5", "not-a-byte-sequence"],
)
def test_signature_accepted_when_content_digest_has_other_algorithms_beside_sha_256(
    digest: str,
) -> None:
    accepted(
        resigned(
            with_headers(signed_request(), content_digest=digest), f"({REQUIRED_POST}){PARAMS}"
        )
    )


def test_signature_accepted_when_an_empty_body_carries_a_matching_digest() -> None:
    request = with_headers(signed_request(method="GET", body=b""), content_digest=None)
    request = with_headers(request, content_digest=signing.content_digest(b""))
    accepted(request)


# --- signature_expired ---------------------------------------------------------------------------


@pytest.mark.parametrize("ahead", [SIGNATURE_TOLERANCE_S + 1, 400])
def test_signature_expired_when_created_is_further_ahead_than_the_tolerance(ahead: int) -> None:
    assert refusal(signed_request(created=NOW + ahead)) == "signature_expired"


def test_signature_expired_when_ahead_of_a_tighter_tolerance() -> None:
    assert refusal(signed_request(created=NOW + 61), tolerance_s=60) == "signature_expired"


def test_signature_expired_when_older_than_the_tolerance() -> None:
    request = signed_request(created=NOW - SIGNATURE_TOLERANCE_S - 1)
    assert refusal(request) == "signature_expired"


def test_signature_expired_when_older_than_a_tighter_tolerance() -> None:
    assert refusal(signed_request(created=NOW - 61), tolerance_s=60) == "signature_expired"


@pytest.mark.parametrize("expires", [NOW, NOW - 1], ids=["now", "past"])
def test_signature_expired_when_expires_is_not_after_now(expires: int) -> None:
    assert refusal(signed_request(expires=expires)) == "signature_expired"


# --- check_signature -----------------------------------------------------------------------------


def _check_refusal(request: SignedRequest, public_key: bytes = PUBLIC_KEY) -> str:
    claims = read_signature(request, now=NOW)
    with pytest.raises(SignatureError) as refused:
        check_signature(claims, public_key)
    return refused.value.code


def test_signature_invalid_when_one_signature_byte_is_flipped() -> None:
    request = signed_request()
    raw = bytearray(base64.b64decode(request.headers["signature"][6:-1]))
    raw[10] ^= 1
    flipped = f"sig1=:{base64.b64encode(bytes(raw)).decode()}:"
    assert _check_refusal(with_headers(request, signature=flipped)) == "signature_invalid"


def test_signature_invalid_when_signed_by_another_key() -> None:
    request = resigned(signed_request(), f"({REQUIRED_POST}){PARAMS}", key=OTHER_KEY)
    assert _check_refusal(request) == "signature_invalid"


@pytest.mark.parametrize(
    "change",
    [
        {"method": "PUT"},
        {"authority": "evil.example"},
        {"path": "/v1/redemptions"},
        {"path": "/v1/Issuances"},
    ],
    ids=["method", "host-rewritten", "path", "path-case"],
)
def test_signature_invalid_when_a_covered_derived_component_changes(change: dict[str, str]) -> None:
    changed = dataclasses.replace(signed_request(), **change)
    assert _check_refusal(changed) == "signature_invalid"


def test_signature_invalid_when_a_covered_header_changes() -> None:
    request = with_headers(signed_request(), idempotency_key="idem-2")
    assert _check_refusal(request) == "signature_invalid"


def test_signature_invalid_when_the_query_changes() -> None:
    request = signed_request(method="GET", query="limit=10", body=b"")
    changed = SignedRequest("GET", HOST, request.path, "limit=11", request.headers, b"")
    assert _check_refusal(changed) == "signature_invalid"


def test_signature_invalid_when_a_parameter_is_changed_after_signing() -> None:
    request = signed_request()
    later = request.headers["signature-input"].replace(f"created={NOW}", f"created={NOW + 1}")
    assert _check_refusal(with_headers(request, signature_input=later)) == "signature_invalid"


def test_check_signature_raises_value_error_for_a_key_that_is_not_ed25519_sized() -> None:
    claims = read_signature(signed_request(), now=NOW)
    with pytest.raises(ValueError, match="32 bytes"):
        check_signature(claims, PUBLIC_KEY + b"\x00")
