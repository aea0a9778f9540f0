"""Every code of PROTOCOL.md's error table, over HTTP: its status, an RFC 9457 problem with the
stable `code`, nothing of the implementation in the body, and nothing changed (RELIABILITY A4 for
the body and rate limits). The framework's own errors (unknown path, wrong method, wrong media
type (a 422), malformed JSON) are problems too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from core.limits import BATCH_OPERATIONS_MAX, POINTS_PER_OPERATION_MAX, REQUEST_BODY_BYTES_MAX
from exchange.api.ratelimit import RateLimiter
from merchants import service as merchants
from server.main import create_app
from tests.api.conftest import AUTHORITY, call, make_partner, signed_headers
from tests.api.writes import ledger_rows, nothing_written, transactions_of_merchant
from tests.factories import unique

LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|\bSELECT\b|\bINSERT\b|\bUPDATE\b|\bDELETE FROM\b|asyncpg|psycopg"
    r"|sqlalchemy|postgres|pydantic|starlette|fastapi|\bline \d+",
    re.IGNORECASE,
)


@pytest.fixture
async def client(app):
    """As tests/api/conftest.py's, but a server error comes back as the 500 a partner would see
    instead of being raised into the test."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as client:
        yield client


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem of PROTOCOL.md with this status and code, that shows nothing inside."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    for member in ("type", "title", "detail"):
        assert isinstance(problem[member], str)
        assert problem[member]
    assert not LEAKS.search(response.text), response.text
    return problem


def names_field(problem: dict[str, Any], name: str) -> bool:
    """Whether a validation problem's `fields` names `name` (bare, or located: `query.limit`)."""
    fields = problem.get("fields")
    assert isinstance(fields, dict), problem
    return any(name in location.split(".") for location in fields)


async def enrol(client, partner, clock) -> str:
    response = await call(
        client, partner, clock, "POST", "/v1/members", json_body={"external_ref": unique("card")}
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["member_id"]


async def post(client, partner, clock, path: str, body: Any, **options: Any) -> httpx.Response:
    return await call(client, partner, clock, "POST", path, json_body=body, **options)


async def funded_member(client, partner, clock, points: int = 100) -> tuple[str, dict[str, Any]]:
    member = await enrol(client, partner, clock)
    issued = await post(
        client,
        partner,
        clock,
        "/v1/issuances",
        {"member_id": member, "points": points, "reference": unique("ref")},
    )
    assert issued.status_code == 201, issued.text
    return member, issued.json()


def issuance(member: str, points: int = 10) -> dict[str, Any]:
    return {"member_id": member, "points": points, "reference": unique("ref")}


async def send_raw(
    client, partner, clock, method: str, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """A signed request with exactly these bytes and header fields."""
    signed = signed_headers(partner, clock, method=method, path=path, body=body, headers=headers)
    return await client.request(method, path, content=body, headers=signed)


# --- 401 and 403: authentication (the matrix is test_signature_refusals.py) --------------------


async def test_unsigned_request_is_signature_missing(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await client.post(
            "/v1/issuances",
            json=issuance(member),
            headers={"idempotency-key": unique("key")},
        )
    assert_problem(response, 401, "signature_missing")


@pytest.mark.parametrize(
    ("bend", "code"),
    [
        ("signature", "signature_invalid"),
        ("created", "signature_expired"),
        ("keyid", "unknown_key"),
        ("revoked", "key_revoked"),
        ("replay", "replayed_request"),
    ],
)
async def test_authentication_failure_is_a_401_problem(db, client, clock, partner, bend, code):
    member = await enrol(client, partner, clock)
    body = json.dumps(issuance(member)).encode()
    headers = signed_headers(
        partner,
        clock,
        method="POST",
        path="/v1/issuances",
        body=body,
        headers={"idempotency-key": unique("key")},
    )
    if bend == "signature":
        label, encoded = headers["Signature"].split("=", 1)
        raw = bytearray(base64.b64decode(encoded.strip(":")))
        raw[0] ^= 1
        headers["Signature"] = f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"
    elif bend == "created":
        clock.advance(timedelta(seconds=301))
    elif bend == "keyid":
        headers["Signature-Input"] = headers["Signature-Input"].replace(partner.key_id, "key_x")
    elif bend == "revoked":
        await merchants.revoke_key(
            db, merchant_id=partner.merchant_id, key_id=partner.key_id, now=clock.now()
        )
    elif bend == "replay":
        first = await client.post("/v1/issuances", content=body, headers=headers)
        assert first.status_code == 201
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await client.post("/v1/issuances", content=body, headers=headers)
    assert_problem(response, 401, code)


async def test_suspended_merchant_is_a_403_problem(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    await merchants.suspend(db, partner.merchant_id, clock.now())
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, "/v1/issuances", issuance(member))
    assert_problem(response, 403, "merchant_suspended")


# --- 404 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/issuances", "/v1/redemptions", "/v1/holds"])
async def test_missing_member_in_a_body_is_not_found(db, client, clock, partner, path):
    async with nothing_written(db, merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, path, issuance("mbr_" + uuid.uuid4().hex))
    assert_problem(response, 404, "not_found")


async def test_missing_member_balance_is_not_found(client, clock, partner):
    response = await call(
        client, partner, clock, "GET", f"/v1/members/mbr_{uuid.uuid4().hex}/balance"
    )
    assert_problem(response, 404, "not_found")


async def test_missing_transaction_is_not_found(client, clock, partner):
    response = await call(client, partner, clock, "GET", f"/v1/transactions/txn_{uuid.uuid4().hex}")
    assert_problem(response, 404, "not_found")


async def test_another_merchants_transaction_is_not_found(db, client, clock, partner):
    other = await make_partner(db)
    member, issued = await funded_member(client, other, clock)
    response = await call(
        client, partner, clock, "GET", f"/v1/transactions/{issued['transaction_id']}"
    )
    assert_problem(response, 404, "not_found")
    assert other.merchant_id not in response.text
    assert issued["reference"] not in response.text
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        reversal = await post(
            client,
            partner,
            clock,
            f"/v1/transactions/{issued['transaction_id']}/reversals",
            {"reference": unique("ref")},
        )
    assert_problem(reversal, 404, "not_found")
    assert other.merchant_id not in reversal.text


async def test_missing_statement_and_unknown_path_are_not_found(client, clock, partner):
    statement = await call(client, partner, clock, "GET", "/v1/statements/stm_missing")
    assert_problem(statement, 404, "not_found")
    unknown = await call(client, partner, clock, "GET", "/v1/nowhere")
    assert_problem(unknown, 404, "not_found")


async def test_unknown_path_unsigned_learns_nothing_but_401(client):
    response = await client.get("/v1/nowhere")
    assert_problem(response, 401, "signature_missing")


# --- 409 ----------------------------------------------------------------------------------------


async def test_redemption_beyond_the_balance_is_insufficient_points(db, client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 100)
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, "/v1/redemptions", issuance(member, 101))
    assert_problem(response, 409, "insufficient_points")


async def test_hold_beyond_the_balance_is_insufficient_points(db, client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 100)
    first = await post(client, partner, clock, "/v1/holds", issuance(member, 60))
    assert first.status_code == 201
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, "/v1/holds", issuance(member, 41))
        redemption = await post(client, partner, clock, "/v1/redemptions", issuance(member, 41))
    assert_problem(response, 409, "insufficient_points")
    assert_problem(redemption, 409, "insufficient_points")


async def test_capture_beyond_the_hold_is_insufficient_points(db, client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 100)
    hold = await post(client, partner, clock, "/v1/holds", issuance(member, 30))
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(
            client, partner, clock, f"/v1/holds/{hold.json()['hold_id']}/capture", {"points": 31}
        )
    assert_problem(response, 409, "insufficient_points")


async def test_issuance_beyond_the_liability_limit_is_refused(db, client, clock):
    partner = await make_partner(db, liability_limit=1_000)
    member = await enrol(client, partner, clock)
    accepted = await post(client, partner, clock, "/v1/issuances", issuance(member, 900))
    assert accepted.status_code == 201
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, "/v1/issuances", issuance(member, 101))
    assert_problem(response, 409, "liability_limit_exceeded")


async def test_key_held_by_another_request_is_in_flight(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    key = unique("key")
    async with db.connection() as holder, holder.transaction():
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7))",
            partner.merchant_id,
            key,
        )
        async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
            response = await post(
                client, partner, clock, "/v1/issuances", issuance(member), idempotency_key=key
            )
    assert_problem(response, 409, "idempotency_key_in_flight")
    # Once the other request is done, the key is free: a retry runs.
    retry = await post(
        client, partner, clock, "/v1/issuances", issuance(member), idempotency_key=key
    )
    assert retry.status_code == 201, retry.text


@pytest.mark.parametrize(
    ("first", "then"),
    [("void", "capture"), ("void", "void"), ("capture", "void"), ("capture", "capture")],
)
async def test_closed_hold_is_not_active(db, client, clock, partner, first, then):
    member, _ = await funded_member(client, partner, clock, 100)
    hold_id = (await post(client, partner, clock, "/v1/holds", issuance(member, 30))).json()[
        "hold_id"
    ]
    done = await post(client, partner, clock, f"/v1/holds/{hold_id}/{first}", {})
    assert done.status_code in (200, 201), done.text
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, f"/v1/holds/{hold_id}/{then}", {})
    assert_problem(response, 409, "hold_not_active")


async def test_lapsed_hold_is_not_active(db, client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 100)
    hold = await post(
        client, partner, clock, "/v1/holds", {**issuance(member, 30), "expires_in_seconds": 60}
    )
    clock.advance(timedelta(seconds=61))
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(
            client, partner, clock, f"/v1/holds/{hold.json()['hold_id']}/capture", {}
        )
    assert_problem(response, 409, "hold_not_active")


async def test_reversals_beyond_the_original_are_refused(db, client, clock, partner):
    member, issued = await funded_member(client, partner, clock, 100)
    path = f"/v1/transactions/{issued['transaction_id']}/reversals"
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        too_much = await post(client, partner, clock, path, {"points": 101, "reference": "r"})
    assert_problem(too_much, 409, "reversal_exceeds_original")
    first = await post(client, partner, clock, path, {"points": 60, "reference": "r1"})
    assert first.status_code == 201, first.text
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        second = await post(client, partner, clock, path, {"points": 41, "reference": "r2"})
    assert_problem(second, 409, "reversal_exceeds_original")


# --- 422 ----------------------------------------------------------------------------------------


async def test_same_key_different_request_is_reused(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    key = unique("key")
    first = await post(
        client, partner, clock, "/v1/issuances", issuance(member), idempotency_key=key
    )
    assert first.status_code == 201
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(
            client, partner, clock, "/v1/issuances", issuance(member, 11), idempotency_key=key
        )
    assert_problem(response, 422, "idempotency_key_reused")
    assert first.json()["transaction_id"] not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"points": 10, "reference": "r"}, "member_id"),
        ({"member_id": "MEMBER", "reference": "r"}, "points"),
        ({"member_id": "MEMBER", "points": 10}, "reference"),
        ({"member_id": "MEMBER", "points": 10, "reference": ""}, "reference"),
        ({"member_id": "MEMBER", "points": 10, "reference": "r" * 256}, "reference"),
        (
            {"member_id": "MEMBER", "points": POINTS_PER_OPERATION_MAX + 1, "reference": "r"},
            "points",
        ),
        (
            {"member_id": "MEMBER", "points": 10, "reference": "r", "expires_at": "tomorrow"},
            "expires_at",
        ),
        (
            {
                "member_id": "MEMBER",
                "points": 10,
                "reference": "r",
                "expires_at": "2020-01-01T00:00:00Z",
            },
            "expires_at",
        ),
        ([1, 2, 3], "body"),
    ],
)
async def test_malformed_body_is_a_validation_error_naming_the_field(
    db, client, clock, partner, body, field
):
    member = await enrol(client, partner, clock)
    if isinstance(body, dict) and "member_id" in body:
        body = {**body, "member_id": member}
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, "/v1/issuances", body)
    problem = assert_problem(response, 422, "validation_error")
    assert isinstance(problem["fields"], dict)
    assert names_field(problem, field), problem


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/members", "external_ref"),
        ("/v1/issuances", "member_id"),
        ("/v1/issuances", "reference"),
        ("/v1/redemptions", "reference"),
        ("/v1/holds", "reference"),
    ],
)
async def test_text_with_a_nul_character_is_a_validation_error(
    db, client, clock, partner, path, field
):
    """JSON can carry U+0000, PostgreSQL text cannot: it must be refused as malformed, not
    reach the database and come back as a 500."""
    member, _ = await funded_member(client, partner, clock, 100)
    body = {"external_ref": unique("card")} if path == "/v1/members" else issuance(member, 10)
    body[field] = body[field] + "\u0000"
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, path, body)
    if field == "member_id":
        # Ids are opaque: one no member can have (a NUL in it) names nobody, as any unknown id.
        assert_problem(response, 404, "not_found")
        return
    problem = assert_problem(response, 422, "validation_error")
    assert names_field(problem, field), problem


@pytest.mark.parametrize("key", ["", "has space", "k" * 256])
async def test_bad_idempotency_key_is_a_validation_error(db, client, clock, partner, key):
    member = await enrol(client, partner, clock)
    body = json.dumps(issuance(member)).encode()
    headers = {"content-type": "application/json", "idempotency-key": key}
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await send_raw(client, partner, clock, "POST", "/v1/issuances", body, headers)
    assert_problem(response, 422, "validation_error")


async def test_malformed_json_is_a_validation_error(db, client, clock, partner):
    headers = {"content-type": "application/json", "idempotency-key": unique("key")}
    async with nothing_written(db, merchants=[partner.merchant_id]):
        response = await send_raw(
            client, partner, clock, "POST", "/v1/issuances", b'{"member_id": ', headers
        )
    problem = assert_problem(response, 422, "validation_error")
    assert problem.get("fields")


# --- 413, Content-Type (422), 405 ---------------------------------------------------------------


def padded_issuance(member: str, size: int) -> bytes:
    body = json.dumps(issuance(member)).encode()
    return body + b" " * (size - len(body))


async def test_body_one_byte_over_the_limit_is_payload_too_large(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    headers = {"content-type": "application/json", "idempotency-key": unique("key")}
    at_limit = padded_issuance(member, REQUEST_BODY_BYTES_MAX)
    over = padded_issuance(member, REQUEST_BODY_BYTES_MAX + 1)
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await send_raw(client, partner, clock, "POST", "/v1/issuances", over, headers)
    assert_problem(response, 413, "payload_too_large")
    accepted = await send_raw(client, partner, clock, "POST", "/v1/issuances", at_limit, headers)
    assert accepted.status_code == 201, accepted.text


async def test_streamed_body_over_the_limit_without_length_is_payload_too_large(
    db, client, clock, partner
):
    member = await enrol(client, partner, clock)
    over = padded_issuance(member, REQUEST_BODY_BYTES_MAX + 1)
    headers = signed_headers(
        partner,
        clock,
        method="POST",
        path="/v1/issuances",
        body=over,
        headers={"idempotency-key": unique("key")},
    )

    async def chunks():
        for start in range(0, len(over), 64 * 1024):
            yield over[start : start + 64 * 1024]

    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await client.post("/v1/issuances", content=chunks(), headers=headers)
    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert_problem(response, 413, "payload_too_large")


def batch_operation(member: str, points: int, *, expires_at: str) -> dict[str, Any]:
    return {
        "op": "issue",
        "idempotency_key": unique("k").ljust(255, "k"),
        "member_id": member,
        "points": points,
        "reference": unique("r").ljust(255, "r"),
        "expires_at": expires_at,
    }


async def test_full_batch_of_1000_operations_fits_under_the_body_limit(db, client, clock, partner):
    widest = {
        "operations": [
            batch_operation(
                "m" * 64, POINTS_PER_OPERATION_MAX, expires_at="2027-06-01T12:00:00.000000+00:00"
            )
            for _ in range(BATCH_OPERATIONS_MAX)
        ]
    }
    assert len(json.dumps(widest).encode()) < REQUEST_BODY_BYTES_MAX

    member = await enrol(client, partner, clock)
    expires = (clock.now() + timedelta(days=365)).isoformat()
    full = {
        "operations": [
            batch_operation(member, 1, expires_at=expires) for _ in range(BATCH_OPERATIONS_MAX)
        ]
    }
    response = await post(client, partner, clock, "/v1/batches", full)
    assert response.status_code == 200, response.text[:2000]
    results = response.json()["results"]
    assert len(results) == BATCH_OPERATIONS_MAX
    assert {result.get("kind") for result in results} == {"issuance"}


async def test_batch_of_1001_operations_is_a_validation_error(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    operations = [
        batch_operation(member, 1, expires_at=(clock.now() + timedelta(days=1)).isoformat())
        for _ in range(BATCH_OPERATIONS_MAX + 1)
    ]
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(client, partner, clock, "/v1/batches", {"operations": operations})
    problem = assert_problem(response, 422, "validation_error")
    assert names_field(problem, "operations")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_body_is_a_validation_error_naming_content_type(
    db, client, clock, partner, content_type
):
    member = await enrol(client, partner, clock)
    body = json.dumps(issuance(member)).encode()
    headers = {"idempotency-key": unique("key")}
    signed = signed_headers(
        partner, clock, method="POST", path="/v1/issuances", body=body, headers=headers
    )
    if content_type is None:
        del signed["content-type"]
    else:
        signed["content-type"] = content_type  # not a covered component
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await client.post("/v1/issuances", content=body, headers=signed)
    problem = assert_problem(response, 422, "validation_error")
    assert list(problem["fields"]) == ["content-type"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/issuances"), ("DELETE", "/v1/issuances"), ("PUT", "/v1/transactions")],
)
async def test_wrong_method_is_a_405_problem(db, client, clock, partner, method, path):
    async with nothing_written(db, merchants=[partner.merchant_id]):
        response = await call(client, partner, clock, method, path)
    assert_problem(response, 405, "method_not_allowed")


# --- 429 ----------------------------------------------------------------------------------------

RATE_PER_S, BURST = 1, 5


@pytest.fixture
async def throttled_client(db, clock):
    app = create_app(database=db, clock=clock)
    async with app.router.lifespan_context(app):
        app.state.rate_limiter = RateLimiter(rate_per_s=RATE_PER_S, burst=BURST)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as client:
            yield client


async def test_ten_times_the_burst_is_rate_limited_with_retry_after(
    db, client, throttled_client, clock, partner
):
    member = await enrol(client, partner, clock)
    before = await ledger_rows(db)
    started = time.monotonic()
    responses = await asyncio.gather(
        *(
            post(throttled_client, partner, clock, "/v1/issuances", issuance(member, 1))
            for _ in range(10 * BURST)
        )
    )
    elapsed = time.monotonic() - started
    statuses = [response.status_code for response in responses]
    assert not [status for status in statuses if status >= 500]
    accepted = statuses.count(201)
    limited = [response for response in responses if response.status_code == 429]
    assert accepted + len(limited) == len(responses), statuses
    assert limited
    assert 1 <= accepted <= BURST + RATE_PER_S * elapsed
    for response in limited:
        problem = assert_problem(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        assert problem["retry_after_s"] == int(response.headers["retry-after"])
    # The refused requests changed nothing: only the accepted ones wrote.
    assert (await ledger_rows(db))["transactions"] == before["transactions"] + accepted
    assert await transactions_of_merchant(db, partner.merchant_id) == accepted
