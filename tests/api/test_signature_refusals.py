"""RELIABILITY S3: the negative matrix. Every request here would write to the ledger if it were
accepted (an issuance for a real member, under a fresh idempotency key); each is refused with the
exact 401 code of PROTOCOL.md, and not one ledger row is written.

`test_baseline_request_is_accepted_and_writes` proves the unbent request does write, and
`test_what_protocol_allows_is_accepted` that the verifier is not stricter than PROTOCOL.md, so every
refusal below is due to the one thing each case bends. test_verification_meta.py runs this module
with signature verification switched off and checks that the cases then fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.clock import FixedClock
from core.database import Database
from merchants import service as merchants
from sdk import signing
from tests.api.conftest import AUTHORITY, Partner, make_partner
from tests.api.writes import ledger_rows
from tests.factories import CREATED_AT, make_member, unique

# --- A request on the wire, and a signer that can leave anything out ------------------------------


@dataclass(frozen=True)
class Wire:
    """A request exactly as it is sent; header names lowercase."""

    method: str
    path: str
    query: str | None
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def with_headers(self, **changes: str | None) -> Wire:
        """Replace header fields (`None` removes one); `_` in a name stands for `-`."""
        headers = dict(self.headers)
        for name, value in changes.items():
            field_name = name.replace("_", "-").lower()
            headers.pop(field_name, None)
            if value is not None:
                headers[field_name] = value
        return replace(self, headers=headers)


Param = tuple[str, int | str]


def default_params(signer: Partner, now: int) -> list[Param]:
    return [("created", now), ("keyid", signer.key_id), ("nonce", uuid.uuid4().hex)]


def signature_params(covered: list[str], params: list[Param]) -> str:
    """An RFC 8941 inner list of component ids with parameters, serialized as RFC 9421 §2.3."""
    ids = " ".join(signing.component_id(name) for name in covered)
    rendered = "".join(
        f";{name}={value}"
        if isinstance(value, int)
        else f";{name}={signing.serialize_string(value)}"
        for name, value in params
    )
    return f"({ids}){rendered}"


def signature_fields(
    wire: Wire,
    private_key: Ed25519PrivateKey,
    *,
    params: list[Param],
    covered: list[str] | None = None,
    label: str = "sig1",
) -> tuple[str, str]:
    """(Signature-Input member, Signature member) over `wire` as it stands."""
    if covered is None:
        covered = signing.request_covered_components(
            method=wire.method, query=wire.query, body=wire.body
        )
    lines = signing.request_components(
        covered=covered,
        method=wire.method,
        authority=wire.headers["host"],
        path=wire.path,
        query=wire.query,
        headers=wire.headers,
    )
    serialized = signature_params(covered, params)
    signature = signing.sign_ed25519(signing.signature_base(lines, serialized), private_key)
    encoded = base64.b64encode(signature).decode()
    return f"{label}={serialized}", f"{label}=:{encoded}:"


def signed(
    wire: Wire,
    private_key: Ed25519PrivateKey,
    *,
    params: list[Param],
    covered: list[str] | None = None,
    label: str = "sig1",
    digest: bool = True,
) -> Wire:
    """`wire` with a sha-256 Content-Digest (when it has a body) and one signature."""
    if digest and wire.body:
        wire = wire.with_headers(content_digest=signing.content_digest(wire.body))
    signature_input, signature = signature_fields(
        wire, private_key, params=params, covered=covered, label=label
    )
    return wire.with_headers(signature_input=signature_input, signature=signature)


def sdk_signed(wire: Wire, signer: Partner, now: int) -> Wire:
    """Signed by the SDK's own `sign_request`, exactly as a partner's till signs."""
    added = signing.sign_request(
        method=wire.method,
        authority=wire.headers["host"],
        path=wire.path,
        query=wire.query,
        headers=wire.headers,
        body=wire.body,
        key_id=signer.key_id,
        private_key=signer.private_key,
        created=now,
        nonce=uuid.uuid4().hex,
    )
    return wire.with_headers(**{name.replace("-", "_"): value for name, value in added.items()})


# --- The scene every case bends ----------------------------------------------------------------


@dataclass
class Scene:
    db: Database
    clock: FixedClock
    partner: Partner
    other: Partner
    member_id: str

    @property
    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def issuance(self, *, points: int = 100, query: str | None = None) -> Wire:
        """The baseline: an issuance that writes a transaction if the exchange accepts it."""
        body = json.dumps(
            {"member_id": self.member_id, "points": points, "reference": unique("ref")}
        ).encode()
        headers = {
            "host": AUTHORITY,
            "content-type": "application/json",
            "idempotency-key": unique("key"),
        }
        return Wire("POST", "/v1/issuances", query, headers, body)

    def params(self, signer: Partner | None = None) -> list[Param]:
        return default_params(signer or self.partner, self.now)

    def signed(self, wire: Wire, **options: object) -> Wire:
        options.setdefault("params", self.params())
        return signed(wire, self.partner.private_key, **options)  # type: ignore[arg-type]

    def sdk_signed(self, wire: Wire) -> Wire:
        return sdk_signed(wire, self.partner, self.now)

    async def extra_key(self, **window: object) -> tuple[str, Ed25519PrivateKey]:
        """Another key of the partner's, registered with the given window."""
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        key = await merchants.add_key(
            self.db,
            merchant_id=self.partner.merchant_id,
            public_key=public,
            now=CREATED_AT,
            **window,  # type: ignore[arg-type]
        )
        return key.key_id, private


@pytest.fixture
async def scene(db, clock, ledger) -> Scene:
    return Scene(
        db, clock, await make_partner(db), await make_partner(db), await make_member(ledger)
    )


async def send(client: httpx.AsyncClient, wire: Wire) -> httpx.Response:
    return await client.request(wire.method, wire.url, content=wire.body, headers=wire.headers)


# --- The cases ------------------------------------------------------------------------------------

Case = Callable[[Scene], Awaitable[Wire]]


def flip_byte(raw: bytes, index: int) -> bytes:
    return raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1 :]


def signature_bytes(wire: Wire) -> bytes:
    return base64.b64decode(wire.headers["signature"].split("=", 1)[1].strip(":"))


def with_signature_bytes(wire: Wire, raw: bytes) -> Wire:
    return wire.with_headers(signature=f"sig1=:{base64.b64encode(raw).decode()}:")


# Each covered component, changed after signing.


async def method_signed_as_put_sent_as_post(s: Scene) -> Wire:
    wire = s.issuance()
    put = s.signed(
        replace(wire, method="PUT"),
        covered=signing.request_covered_components(method="POST", query=None, body=wire.body),
    )
    return replace(put, method="POST")


async def method_signed_as_post_sent_as_patch(s: Scene) -> Wire:
    return replace(s.sdk_signed(s.issuance()), method="PATCH")


async def authority_host_rewritten(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(host="attacker.test")


async def authority_port_added(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(host=f"{AUTHORITY}:8443")


async def path_signed_for_redemptions_sent_to_issuances(s: Scene) -> Wire:
    wire = s.issuance()
    return replace(s.sdk_signed(replace(wire, path="/v1/redemptions")), path="/v1/issuances")


async def path_percent_encoding_changed(s: Scene) -> Wire:
    # The same route once decoded, but not the bytes the signature covers (RFC 9421 §2.2.6).
    return replace(s.sdk_signed(s.issuance()), path="/v1/%69ssuances")


async def query_value_changed(s: Scene) -> Wire:
    return replace(s.sdk_signed(s.issuance(query="till=1")), query="till=2")


async def query_added_after_signing(s: Scene) -> Wire:
    return replace(s.sdk_signed(s.issuance()), query="till=1")


async def query_removed_after_signing(s: Scene) -> Wire:
    return replace(s.sdk_signed(s.issuance(query="till=1")), query=None)


async def idempotency_key_changed(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(idempotency_key=unique("key"))


async def content_digest_and_body_swapped(s: Scene) -> Wire:
    # A body and a digest that agree with each other, but not with what was signed.
    original = s.sdk_signed(s.issuance())
    body = original.body.replace(b'"points": 100', b'"points": 900')
    return replace(original, body=body).with_headers(content_digest=signing.content_digest(body))


async def content_digest_value_changed(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(content_digest=signing.content_digest(b"{}"))


async def body_one_byte_flipped(s: Scene) -> Wire:
    original = s.sdk_signed(s.issuance())
    index = original.body.index(b'"points": 100') + len(b'"points": ')
    body = original.body[:index] + b"9" + original.body[index + 1 :]  # 100 -> 900 points
    assert sum(a != b for a, b in zip(body, original.body, strict=True)) == 1
    return replace(original, body=body)


async def content_digest_dropped(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(content_digest=None)


async def content_digest_dropped_and_not_covered(s: Scene) -> Wire:
    wire = s.issuance()
    covered = ["@method", "@authority", "@path", "idempotency-key"]
    return s.signed(wire, covered=covered, digest=False)


def _sha512(body: bytes) -> str:
    return f"sha-512=:{base64.b64encode(hashlib.sha512(body).digest()).decode()}:"


async def content_digest_sha512_only(s: Scene) -> Wire:
    # Correct, covered and signed, but PROTOCOL.md asks for sha-256.
    wire = s.issuance()
    wire = wire.with_headers(content_digest=_sha512(wire.body))
    return s.signed(wire, digest=False)


async def content_digest_sha256_wrong_beside_a_right_sha512(s: Scene) -> Wire:
    wire = s.issuance()
    digest = f"{signing.content_digest(b'something else')}, {_sha512(wire.body)}"
    return s.signed(wire.with_headers(content_digest=digest), digest=False)


# The signature itself.


async def signature_one_byte_flipped(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    return with_signature_bytes(wire, flip_byte(signature_bytes(wire), 17))


async def signature_base64_truncated(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    encoded = base64.b64encode(signature_bytes(wire)).decode()
    return wire.with_headers(signature=f"sig1=:{encoded[:-3]}:")


async def signature_one_byte_short(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    return with_signature_bytes(wire, signature_bytes(wire)[:-1])


async def signature_input_malformed(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    return wire.with_headers(signature_input=wire.headers["signature-input"].replace(")", "", 1))


async def signature_not_a_byte_sequence(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    encoded = base64.b64encode(signature_bytes(wire)).decode()
    return wire.with_headers(signature=f'sig1="{encoded}"')


async def signature_input_not_an_inner_list(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    params = wire.headers["signature-input"].split(")", 1)[1]
    return wire.with_headers(signature_input=f'sig1="@method"{params}')


# Keys.


async def keyid_unknown(s: Scene) -> Wire:
    params = [("created", s.now), ("keyid", unique("key")), ("nonce", uuid.uuid4().hex)]
    return s.signed(s.issuance(), params=params)


async def keyid_not_a_key_id(s: Scene) -> Wire:
    params = [("created", s.now), ("keyid", "../../etc/passwd"), ("nonce", uuid.uuid4().hex)]
    return s.signed(s.issuance(), params=params)


async def keyid_of_another_merchant_with_own_key(s: Scene) -> Wire:
    return s.signed(s.issuance(), params=s.params(s.other))


async def keyid_revoked(s: Scene) -> Wire:
    key_id, private = await s.extra_key()
    await merchants.revoke_key(
        s.db, merchant_id=s.partner.merchant_id, key_id=key_id, now=s.clock.now()
    )
    params = [("created", s.now), ("keyid", key_id), ("nonce", uuid.uuid4().hex)]
    return signed(s.issuance(), private, params=params)


async def key_past_its_not_after(s: Scene) -> Wire:
    key_id, private = await s.extra_key(not_after=s.clock.now() - timedelta(seconds=1))
    params = [("created", s.now), ("keyid", key_id), ("nonce", uuid.uuid4().hex)]
    return signed(s.issuance(), private, params=params)


async def key_before_its_not_before(s: Scene) -> Wire:
    key_id, private = await s.extra_key(not_before=s.clock.now() + timedelta(hours=1))
    params = [("created", s.now), ("keyid", key_id), ("nonce", uuid.uuid4().hex)]
    return signed(s.issuance(), private, params=params)


# Parameters.


async def alg_rsa_pss_sha512(s: Scene) -> Wire:
    return s.signed(s.issuance(), params=[*s.params(), ("alg", "rsa-pss-sha512")])


async def alg_hmac_sha256(s: Scene) -> Wire:
    return s.signed(s.issuance(), params=[*s.params(), ("alg", "hmac-sha256")])


async def created_301_s_in_the_future(s: Scene) -> Wire:
    params = [("created", s.now + 301), ("keyid", s.partner.key_id), ("nonce", uuid.uuid4().hex)]
    return s.signed(s.issuance(), params=params)


async def created_an_hour_in_the_future(s: Scene) -> Wire:
    params = [("created", s.now + 3600), ("keyid", s.partner.key_id), ("nonce", uuid.uuid4().hex)]
    return s.signed(s.issuance(), params=params)


async def expires_1_s_ago(s: Scene) -> Wire:
    return s.signed(s.issuance(), params=[*s.params(), ("expires", s.now - 1)])


async def created_301_s_ago(s: Scene) -> Wire:
    params = [("created", s.now - 301), ("keyid", s.partner.key_id), ("nonce", uuid.uuid4().hex)]
    return s.signed(s.issuance(), params=params)


async def created_a_day_ago_with_expires_ahead(s: Scene) -> Wire:
    # `expires` in the future does not widen the server's window.
    params = [
        ("created", s.now - 86_400),
        ("keyid", s.partner.key_id),
        ("nonce", uuid.uuid4().hex),
        ("expires", s.now + 86_400),
    ]
    return s.signed(s.issuance(), params=params)


async def created_missing(s: Scene) -> Wire:
    params = [("keyid", s.partner.key_id), ("nonce", uuid.uuid4().hex)]
    return s.signed(s.issuance(), params=params)


async def created_a_string(s: Scene) -> Wire:
    params = [("created", str(s.now)), ("keyid", s.partner.key_id), ("nonce", uuid.uuid4().hex)]
    return s.signed(s.issuance(), params=params)


async def nonce_too_long(s: Scene) -> Wire:
    params = [("created", s.now), ("keyid", s.partner.key_id), ("nonce", "n" * 256)]
    return s.signed(s.issuance(), params=params)


async def nonce_empty(s: Scene) -> Wire:
    params = [("created", s.now), ("keyid", s.partner.key_id), ("nonce", "")]
    return s.signed(s.issuance(), params=params)


async def nonce_missing(s: Scene) -> Wire:
    return s.signed(s.issuance(), params=[("created", s.now), ("keyid", s.partner.key_id)])


async def keyid_missing(s: Scene) -> Wire:
    return s.signed(s.issuance(), params=[("created", s.now), ("nonce", uuid.uuid4().hex)])


# Labels and signature count.


async def label_only_in_signature_input(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    signature = wire.headers["signature"].split("=", 1)[1]
    return wire.with_headers(signature=f"other={signature}")


async def second_label_only_in_signature_input(s: Scene) -> Wire:
    wire = s.sdk_signed(s.issuance())
    extra_input = wire.headers["signature-input"].replace("sig1=", "sig2=", 1)
    return wire.with_headers(signature_input=f"{wire.headers['signature-input']}, {extra_input}")


async def two_signatures_one_foreign(s: Scene) -> Wire:
    wire = s.signed(s.issuance())
    foreign_input, foreign = signature_fields(
        wire, s.other.private_key, params=s.params(s.other), label="sig2"
    )
    return wire.with_headers(
        signature_input=f"{wire.headers['signature-input']}, {foreign_input}",
        signature=f"{wire.headers['signature']}, {foreign}",
    )


async def two_valid_own_signatures(s: Scene) -> Wire:
    wire = s.signed(s.issuance())
    second_input, second = signature_fields(
        wire, s.partner.private_key, params=s.params(), label="sig2"
    )
    return wire.with_headers(
        signature_input=f"{wire.headers['signature-input']}, {second_input}",
        signature=f"{wire.headers['signature']}, {second}",
    )


# Required components left out of an otherwise valid signature.


async def without_idempotency_key_component(s: Scene) -> Wire:
    return s.signed(s.issuance(), covered=["@method", "@authority", "@path", "content-digest"])


async def without_content_digest_component(s: Scene) -> Wire:
    return s.signed(s.issuance(), covered=["@method", "@authority", "@path", "idempotency-key"])


async def without_query_component_when_there_is_a_query(s: Scene) -> Wire:
    covered = ["@method", "@authority", "@path", "content-digest", "idempotency-key"]
    return s.signed(s.issuance(query="till=1"), covered=covered)


async def without_authority_component(s: Scene) -> Wire:
    return s.signed(s.issuance(), covered=["@method", "@path", "content-digest", "idempotency-key"])


async def without_method_component(s: Scene) -> Wire:
    covered = ["@authority", "@path", "content-digest", "idempotency-key"]
    return s.signed(s.issuance(), covered=covered)


async def without_path_component(s: Scene) -> Wire:
    covered = ["@method", "@authority", "content-digest", "idempotency-key"]
    return s.signed(s.issuance(), covered=covered)


async def covering_only_the_signature_params(s: Scene) -> Wire:
    return s.signed(s.issuance(), covered=[])


# Missing fields.


async def no_signature_fields(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(signature=None, signature_input=None)


async def signature_input_missing(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(signature_input=None)


async def signature_missing(s: Scene) -> Wire:
    return s.sdk_signed(s.issuance()).with_headers(signature=None)


INVALID, EXPIRED, MISSING = "signature_invalid", "signature_expired", "signature_missing"

CASES: list[tuple[Case, str]] = [
    (method_signed_as_put_sent_as_post, INVALID),
    (method_signed_as_post_sent_as_patch, INVALID),
    (authority_host_rewritten, INVALID),
    (authority_port_added, INVALID),
    (path_signed_for_redemptions_sent_to_issuances, INVALID),
    (path_percent_encoding_changed, INVALID),
    (query_value_changed, INVALID),
    (query_added_after_signing, INVALID),
    (query_removed_after_signing, INVALID),
    (idempotency_key_changed, INVALID),
    (content_digest_and_body_swapped, INVALID),
    (content_digest_value_changed, INVALID),
    (body_one_byte_flipped, INVALID),
    (content_digest_dropped, INVALID),
    (content_digest_dropped_and_not_covered, INVALID),
    (content_digest_sha512_only, INVALID),
    (content_digest_sha256_wrong_beside_a_right_sha512, INVALID),
    (signature_one_byte_flipped, INVALID),
    (signature_base64_truncated, INVALID),
    (signature_one_byte_short, INVALID),
    (signature_input_malformed, INVALID),
    (signature_not_a_byte_sequence, INVALID),
    (signature_input_not_an_inner_list, INVALID),
    (keyid_unknown, "unknown_key"),
    (keyid_not_a_key_id, "unknown_key"),
    (keyid_of_another_merchant_with_own_key, INVALID),
    (keyid_revoked, "key_revoked"),
    (key_past_its_not_after, "key_revoked"),
    (key_before_its_not_before, "key_revoked"),
    (alg_rsa_pss_sha512, INVALID),
    (alg_hmac_sha256, INVALID),
    (created_301_s_in_the_future, EXPIRED),
    (created_an_hour_in_the_future, EXPIRED),
    (expires_1_s_ago, EXPIRED),
    (created_301_s_ago, EXPIRED),
    (created_a_day_ago_with_expires_ahead, EXPIRED),
    (created_missing, INVALID),
    (created_a_string, INVALID),
    (nonce_missing, INVALID),
    (nonce_empty, INVALID),
    (nonce_too_long, INVALID),
    (keyid_missing, INVALID),
    (label_only_in_signature_input, INVALID),
    (second_label_only_in_signature_input, INVALID),
    (two_signatures_one_foreign, INVALID),
    (two_valid_own_signatures, INVALID),
    (without_idempotency_key_component, INVALID),
    (without_content_digest_component, INVALID),
    (without_query_component_when_there_is_a_query, INVALID),
    (without_authority_component, INVALID),
    (without_method_component, INVALID),
    (without_path_component, INVALID),
    (covering_only_the_signature_params, INVALID),
    (no_signature_fields, MISSING),
    (signature_input_missing, MISSING),
    (signature_missing, MISSING),
]

CASE_CODES: dict[str, str] = {case.__name__: code for case, code in CASES}
"""Test id -> expected code; the meta-test reads it."""

DECIDED_WITHOUT_THE_SIGNATURE = frozenset(
    {name for name, code in CASE_CODES.items() if code in ("unknown_key", "key_revoked")}
    | {"nonce_too_long"}
)
"""Refusals the gateway decides by the key table or the nonce's length alone; they hold with
signature checking switched off (test_verification_meta.py)."""


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= problem.keys()


# --- The tests ------------------------------------------------------------------------------------


async def test_baseline_request_is_accepted_and_writes(client, scene):
    """The control: the unbent request, signed the same way as the cases, does write."""
    before = await ledger_rows(scene.db)
    for wire in (scene.signed(scene.issuance()), scene.sdk_signed(scene.issuance(query="t=1"))):
        response = await send(client, wire)
        assert response.status_code == 201, response.text
    after = await ledger_rows(scene.db)
    assert after["transactions"] == before["transactions"] + 2


def accepted_variants(s: Scene) -> dict[str, dict[str, Any]]:
    """Signatures PROTOCOL.md allows that the SDK does not make: options for `Scene.signed`."""

    def params(created: int = 0, *extra: Param) -> list[Param]:
        return [
            ("created", s.now + created),
            ("keyid", s.partner.key_id),
            ("nonce", uuid.uuid4().hex),
            *extra,
        ]

    required = ["@method", "@authority", "@path", "content-digest", "idempotency-key"]
    return {
        "alg_ed25519": {"params": params(0, ("alg", "ed25519"))},
        "expires_ahead": {"params": params(0, ("expires", s.now + 60))},
        "created_300_s_ahead": {"params": params(300)},  # "within 300 s", either way
        "tagged": {"params": params(0, ("tag", "till-app"))},  # RFC 9421 allows a tag
        "created_300_s_ago": {"params": params(-300)},
        "another_label": {"label": "till-7"},
        "more_components": {"covered": [*required, "content-type"]},
        "components_in_another_order": {"covered": required[::-1]},
    }


ACCEPTED_VARIANTS = [
    "alg_ed25519",
    "expires_ahead",
    "created_300_s_ahead",
    "tagged",
    "created_300_s_ago",
    "another_label",
    "more_components",
    "components_in_another_order",
]


@pytest.mark.parametrize("variant", ACCEPTED_VARIANTS)
async def test_what_protocol_allows_is_accepted(client, scene, variant):
    """The other control: the verifier is not stricter than PROTOCOL.md."""
    wire = scene.signed(scene.issuance(), **accepted_variants(scene)[variant])
    response = await send(client, wire)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("case", "code"), [pytest.param(case, code, id=case.__name__) for case, code in CASES]
)
async def test_bent_signature_is_refused_with_its_code_and_writes_nothing(
    client, scene, case, code
):
    wire = await case(scene)
    before = await ledger_rows(scene.db)
    response = await send(client, wire)
    assert_problem(response, 401, code)
    assert await ledger_rows(scene.db) == before


async def test_replayed_request_is_refused_and_writes_nothing_more(client, scene):
    wire = scene.sdk_signed(scene.issuance())
    assert (await send(client, wire)).status_code == 201
    after_first = await ledger_rows(scene.db)
    # The same bytes again, and again under a new idempotency key it cannot carry unsigned.
    replay = await send(client, wire)
    assert_problem(replay, 401, "replayed_request")
    assert await ledger_rows(scene.db) == after_first


@pytest.mark.parametrize("status", ["suspend", "close"])
async def test_valid_signature_of_a_merchant_that_may_not_transact_is_refused(
    client, scene, status
):
    change = merchants.suspend if status == "suspend" else merchants.close
    await change(scene.db, scene.partner.merchant_id, scene.clock.now())
    wire = scene.sdk_signed(scene.issuance())
    before = await ledger_rows(scene.db)
    response = await send(client, wire)
    assert_problem(response, 403, "merchant_suspended")
    assert await ledger_rows(scene.db) == before
