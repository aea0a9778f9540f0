"""What the gateway answers when something goes wrong, over HTTP on the real database.

- A request the gateway refuses after authenticating it (429, a body that is not JSON) changes
  nothing, its nonce included: the same signed request, sent again, is accepted once.
- A replay is `replayed_request` whatever else is wrong with it, and takes none of the merchant's
  rate budget.
- A failure no handler expected is a signed 500 problem with the request id and nothing of the
  failure in it; database trouble anywhere, authentication included, is a signed 503 with
  Retry-After.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from exchange.api import gateway
from exchange.api.ratelimit import RateLimiter
from sdk.signing import verify_response
from tests.api.conftest import call, signed_headers
from tests.api.test_error_codes import LEAKS, assert_problem, enrol, issuance
from tests.api.writes import ledger_rows, nothing_written, transactions_of_merchant
from tests.factories import unique


async def published_keys(client: httpx.AsyncClient) -> dict[str, bytes]:
    keys = (await client.get("/v1/exchange-keys")).json()["keys"]
    return {key["kid"]: base64.urlsafe_b64decode(key["x"] + "==") for key in keys}


async def assert_signed(client, clock, response: httpx.Response, method: str, path: str) -> None:
    verify_response(
        status=response.status_code,
        headers=dict(response.headers),
        body=response.content,
        request_method=method,
        request_path=path,
        public_keys=await published_keys(client),
        now=int(clock.now().timestamp()),
    )


async def ledger_rows_but_the_batch_record(db) -> dict[str, Any]:
    """A batch that answers 200 keeps that answer under its key; nothing else may change."""
    rows = await ledger_rows(db)
    del rows["idempotency_records"]
    return rows


async def nonce_spent(db, key_id: str, nonce: str) -> bool:
    async with db.connection() as conn:
        found = await conn.fetchval(
            "SELECT 1 FROM request_nonces WHERE key_id = $1 AND nonce = $2", key_id, nonce
        )
    return found is not None


def signed_issuance(partner, clock, member: str, nonce: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(issuance(member, 1)).encode()
    headers = signed_headers(
        partner,
        clock,
        method="POST",
        path="/v1/issuances",
        body=body,
        headers={"idempotency-key": unique("key")},
        nonce=nonce,
    )
    return body, headers


# --- refusals after authentication leave the nonce unspent ---------------------------------------

RATE_PER_S = 4.0


class LimiterTime:
    """The gateway's monotonic clock, moved by the test: a busy machine cannot refill the
    bucket between two requests the test means to be back to back."""

    def __init__(self) -> None:
        self.now_s = 1_000.0

    def monotonic(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def limiter_time(monkeypatch: pytest.MonkeyPatch) -> LimiterTime:
    fake = LimiterTime()
    monkeypatch.setattr(gateway, "time", fake)
    return fake


@pytest.fixture
def throttle(app, limiter_time):
    """A limiter of one request at a time, refilled every 1/RATE_PER_S seconds of the test's
    limiter time."""
    app.state.rate_limiter = RateLimiter(rate_per_s=RATE_PER_S, burst=1)
    return app.state.rate_limiter


async def test_rate_limited_request_resent_after_retry_after_is_accepted(
    db, client, clock, partner, throttle, limiter_time
):
    member = await enrol(client, partner, clock)  # takes the one token
    nonce = uuid.uuid4().hex
    body, headers = signed_issuance(partner, clock, member, nonce)
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        limited = await client.post("/v1/issuances", content=body, headers=headers)
    assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    assert not await nonce_spent(db, partner.key_id, nonce)

    limiter_time.advance(1.1 / RATE_PER_S)
    accepted = await client.post("/v1/issuances", content=body, headers=headers)
    assert accepted.status_code == 201, accepted.text
    assert await transactions_of_merchant(db, partner.merchant_id) == 1
    assert await nonce_spent(db, partner.key_id, nonce)

    # Accepted once: from now on it is a replay, rate limit or not.
    limiter_time.advance(1.1 / RATE_PER_S)
    replayed = await client.post("/v1/issuances", content=body, headers=headers)
    assert_problem(replayed, 401, "replayed_request")
    assert await transactions_of_merchant(db, partner.merchant_id) == 1


async def test_replay_is_replayed_request_and_takes_no_rate_budget(db, app, client, clock, partner):
    app.state.rate_limiter = RateLimiter(rate_per_s=1e-6, burst=3)
    member = await enrol(client, partner, clock)  # 2 tokens left
    body, headers = signed_issuance(partner, clock, member, uuid.uuid4().hex)
    first = await client.post("/v1/issuances", content=body, headers=headers)  # 1 left
    assert first.status_code == 201, first.text
    for _ in range(5):
        replayed = await client.post("/v1/issuances", content=body, headers=headers)
        assert_problem(replayed, 401, "replayed_request")
    # The replays took nothing: the last token is still there for a new request.
    other = await call(client, partner, clock, "POST", "/v1/issuances", json_body=issuance(member))
    assert other.status_code == 201, other.text
    limited = await call(
        client, partner, clock, "POST", "/v1/issuances", json_body=issuance(member)
    )
    assert_problem(limited, 429, "rate_limited")
    # A replay of a request while the budget is spent is still a replay, not a 429.
    replayed = await client.post("/v1/issuances", content=body, headers=headers)
    assert_problem(replayed, 401, "replayed_request")


@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_body_that_is_not_json_is_a_validation_error_and_keeps_the_nonce_unspent(
    db, client, clock, partner, content_type
):
    member = await enrol(client, partner, clock)
    nonce = uuid.uuid4().hex
    body, headers = signed_issuance(partner, clock, member, nonce)
    wrong = dict(headers)
    if content_type is None:
        del wrong["content-type"]
    else:
        wrong["content-type"] = content_type  # not a covered component
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await client.post("/v1/issuances", content=body, headers=wrong)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["fields"] == {"content-type": "must be application/json"}
    await assert_signed(client, clock, response, "POST", "/v1/issuances")
    assert not await nonce_spent(db, partner.key_id, nonce)

    # The same signed request with the right Content-Type: accepted.
    accepted = await client.post("/v1/issuances", content=body, headers=headers)
    assert accepted.status_code == 201, accepted.text


# --- failures nobody expected ------------------------------------------------------------------


class Boom(RuntimeError):
    pass


SECRET = 'SELECT secret FROM ledger -- File "/srv/exchange/service.py", line 42'


async def test_unexpected_error_in_a_route_is_a_signed_500_with_the_request_id(
    db, app, client, clock, partner, monkeypatch
):
    member = await enrol(client, partner, clock)

    async def broken(**_: Any) -> Any:
        raise Boom(SECRET)

    monkeypatch.setattr(app.state.ledger, "balance", broken)
    path = f"/v1/members/{member}/balance"
    headers = signed_headers(partner, clock, method="GET", path=path)
    headers["x-request-id"] = "req-boom-1"
    response = await client.get(path, headers=headers)
    problem = assert_problem(response, 500, "internal_error")
    assert response.headers["x-request-id"] == "req-boom-1"
    assert "secret" not in response.text
    assert "Boom" not in response.text
    assert set(problem) == {"type", "title", "status", "detail", "code"}
    await assert_signed(client, clock, response, "GET", path)


async def test_unexpected_error_in_a_write_is_a_signed_500_that_wrote_nothing(
    db, app, client, clock, partner, monkeypatch
):
    member = await enrol(client, partner, clock)

    async def broken(**_: Any) -> Any:
        raise Boom(SECRET)

    monkeypatch.setattr(app.state.ledger, "issue", broken)
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await call(
            client, partner, clock, "POST", "/v1/issuances", json_body=issuance(member)
        )
    assert_problem(response, 500, "internal_error")
    assert response.headers["x-request-id"]
    await assert_signed(client, clock, response, "POST", "/v1/issuances")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)"),
        TimeoutError(),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_database_failure_during_authentication_is_a_signed_503_with_retry_after(
    db, app, client, clock, partner, monkeypatch, error
):
    member = await enrol(client, partner, clock)  # the exchange's signing key is now cached

    def unavailable() -> Any:
        raise error

    monkeypatch.setattr(app.state.db, "connection", unavailable)
    body, headers = signed_issuance(partner, clock, member, uuid.uuid4().hex)
    headers["x-request-id"] = "req-db-down"
    response = await client.post("/v1/issuances", content=body, headers=headers)
    monkeypatch.undo()
    problem = assert_problem(response, 503, "service_unavailable")
    assert set(problem) == {"type", "title", "status", "detail", "code"}
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-request-id"] == "req-db-down"
    assert not LEAKS.search(response.text)
    await assert_signed(client, clock, response, "POST", "/v1/issuances")
    # Nothing happened: the same request, once the database is back, is accepted.
    accepted = await client.post("/v1/issuances", content=body, headers=headers)
    assert accepted.status_code == 201, accepted.text


async def test_database_failure_in_the_key_lookup_is_a_503(
    db, app, client, clock, partner, monkeypatch
):
    member = await enrol(client, partner, clock)

    async def lost(*_: Any, **__: Any) -> Any:
        raise asyncpg.ConnectionDoesNotExistError("connection was closed")

    monkeypatch.setattr(gateway.merchants, "find_key_on", lost)
    response = await call(client, partner, clock, "GET", f"/v1/members/{member}/balance")
    assert_problem(response, 503, "service_unavailable")
    assert response.headers["retry-after"] == "1"
    await assert_signed(client, clock, response, "GET", f"/v1/members/{member}/balance")


async def test_a_problem_that_cannot_be_signed_is_still_a_problem(
    db, app, client, clock, partner, monkeypatch
):
    """The exchange's key unreadable (its database gone) while answering a bug: the answer goes
    unsigned, but it is still a problem with the request id, not a bare 500."""

    async def broken(**_: Any) -> Any:
        raise Boom(SECRET)

    async def no_key(*_: Any) -> Any:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(app.state.ledger, "balance", broken)
    monkeypatch.setattr(app.state.keyring, "signing_key", no_key)
    response = await call(client, partner, clock, "GET", "/v1/members/mbr_x/balance")
    assert_problem(response, 503, "service_unavailable")
    assert response.headers["x-request-id"]
    assert "signature" not in response.headers


# --- lone surrogates: JSON can escape them, UTF-8 cannot carry them ----------------------------

SURROGATE_BODIES = [
    ("/v1/members", rb'{"external_ref":"x","\ud800":1}'),
    ("/v1/members", rb'{"external_ref":"\ud800"}'),
    ("/v1/members", rb'{"external_ref":"card-\udfff-1"}'),
    ("/v1/members", rb'{"\ud800":{"\udc00":1}}'),
    ("/v1/issuances", rb'{"member_id":"\ud800","points":1,"reference":"x"}'),
    ("/v1/issuances", rb'{"member_id":"mbr_x","points":1,"reference":"\udc00"}'),
    ("/v1/issuances", rb'{"member_id":"mbr_x","points":1,"reference":"x","\ud800":1}'),
    ("/v1/redemptions", rb'{"member_id":"mbr_x","points":1,"reference":"r\ud800"}'),
    ("/v1/holds", rb'{"member_id":"mbr_x","points":1,"reference":"\udbff"}'),
    ("/v1/holds/hld_x/capture", rb'{"\ud800":1}'),
    ("/v1/holds/hld_x/void", rb'{"\ud800":"\udc00"}'),
    ("/v1/transactions/txn_x/reversals", rb'{"reference":"\ud800"}'),
    ("/v1/batches", rb'{"operations":[{"op":"issue"}],"\ud800":1}'),
]


@pytest.mark.parametrize(("path", "body"), SURROGATE_BODIES)
async def test_lone_surrogate_in_a_body_is_a_validation_error(
    db, client, clock, partner, path, body
):
    headers = signed_headers(
        partner,
        clock,
        method="POST",
        path=path,
        body=body,
        headers={"idempotency-key": unique("k")},
    )
    before = await ledger_rows(db)
    response = await client.post(path, content=body, headers=headers)
    problem = assert_problem(response, 422, "validation_error")
    assert problem["fields"]
    response.content.decode("utf-8")  # strict: what was sent is UTF-8
    await assert_signed(client, clock, response, "POST", path)
    assert await ledger_rows(db) == before


@pytest.mark.parametrize(
    "operation",
    [
        {
            "op": "issue",
            "idempotency_key": "k",
            "member_id": "m",
            "points": 1,
            "reference": "\ud800",
        },
        {"op": "issue", "idempotency_key": "k", "member_id": "m", "points": 1, "\ud800": 1},
        {"op": "\udc00"},
        {"\ud800": 1},
        {"op": "reverse", "idempotency_key": "\ud800", "transaction_id": "t", "reference": "r"},
    ],
)
async def test_lone_surrogate_in_a_batch_operation_is_a_problem_in_place(
    db, client, clock, partner, operation
):
    before = await ledger_rows_but_the_batch_record(db)
    # json.dumps escapes a lone surrogate as "\ud800", exactly as a client's JSON would carry it.
    response = await call(
        client, partner, clock, "POST", "/v1/batches", json_body={"operations": [operation]}
    )
    assert response.status_code == 200, response.text
    assert await ledger_rows_but_the_batch_record(db) == before
    (result,) = response.json()["results"]
    assert result["code"] == "validation_error", result
    assert result["fields"]


# --- ids no resource can have --------------------------------------------------------------------

IMPOSSIBLE_IDS = [
    pytest.param("m" * 65, id="65_characters"),
    pytest.param("mbr~1", id="tilde"),
    pytest.param("mbr%20x", id="space"),
    pytest.param("%C3%A9t%C3%A9", id="non_ascii"),
]


@pytest.mark.parametrize("resource_id", IMPOSSIBLE_IDS)
@pytest.mark.parametrize(
    ("method", "template", "body"),
    [
        ("GET", "/v1/members/{}/balance", None),
        ("GET", "/v1/transactions/{}", None),
        ("GET", "/v1/statements/{}", None),
        ("POST", "/v1/holds/{}/capture", {}),
        ("POST", "/v1/holds/{}/void", {}),
        ("POST", "/v1/transactions/{}/reversals", {"reference": "refund-1"}),
    ],
)
async def test_path_id_that_no_resource_can_have_is_not_found(
    db, client, clock, partner, method, template, body, resource_id
):
    path = template.format(resource_id)
    async with nothing_written(db, merchants=[partner.merchant_id]):
        response = await call(client, partner, clock, method, path, json_body=body)
    problem = assert_problem(response, 404, "not_found")
    assert "fields" not in problem
    await assert_signed(client, clock, response, method, path)


@pytest.mark.parametrize("member_id", ["m" * 65, "mbr~1", "", "mbr x", "été"])
@pytest.mark.parametrize("path", ["/v1/issuances", "/v1/redemptions", "/v1/holds"])
async def test_body_member_id_that_no_member_can_have_is_not_found(
    db, client, clock, partner, path, member_id
):
    body = {"member_id": member_id, "points": 1, "reference": "r"}
    async with nothing_written(db, merchants=[partner.merchant_id]):
        response = await call(client, partner, clock, "POST", path, json_body=body)
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize("member_id", [12, None, ["mbr_x"], True])
async def test_body_member_id_of_the_wrong_type_is_still_a_validation_error(
    db, client, clock, partner, member_id
):
    body = {"member_id": member_id, "points": 1, "reference": "r"}
    async with nothing_written(db, merchants=[partner.merchant_id]):
        response = await call(client, partner, clock, "POST", "/v1/issuances", json_body=body)
    problem = assert_problem(response, 422, "validation_error")
    assert "member_id" in problem["fields"]


async def test_impossible_member_id_with_another_field_wrong_is_a_validation_error(
    db, client, clock, partner
):
    body = {"member_id": "mbr~1", "points": "many", "reference": "r"}
    response = await call(client, partner, clock, "POST", "/v1/issuances", json_body=body)
    problem = assert_problem(response, 422, "validation_error")
    assert "points" in problem["fields"]


async def test_batch_operation_naming_an_impossible_id_is_not_found_in_place(
    db, client, clock, partner
):
    operations = [
        {
            "op": "issue",
            "idempotency_key": "a",
            "member_id": "m" * 65,
            "points": 1,
            "reference": "r",
        },
        {
            "op": "redeem",
            "idempotency_key": "b",
            "member_id": "mbr~1",
            "points": 1,
            "reference": "r",
        },
        {"op": "reverse", "idempotency_key": "c", "transaction_id": "txn~1", "reference": "r"},
        {"op": "issue", "idempotency_key": "d", "member_id": 7, "points": 1, "reference": "r"},
    ]
    before = await ledger_rows_but_the_batch_record(db)
    response = await call(
        client, partner, clock, "POST", "/v1/batches", json_body={"operations": operations}
    )
    assert response.status_code == 200, response.text
    assert await ledger_rows_but_the_batch_record(db) == before
    codes = [result["code"] for result in response.json()["results"]]
    assert codes == ["not_found", "not_found", "not_found", "validation_error"]


# --- the pieces, without HTTP -------------------------------------------------------------------


def test_fields_and_problems_carry_lone_surrogates_as_escapes():
    from exchange.api.problems import problem_response
    from exchange.api.validation import fields_from_errors

    fields = fields_from_errors(
        [{"loc": ("body", "\ud800"), "msg": "Extra inputs \udc00 are not permitted"}]
    )
    assert fields == {"\\ud800": "Extra inputs \\udc00 are not permitted"}
    response = problem_response("validation_error", "bad \ud800", fields={"\udfff": "x"})
    rendered = json.loads(response.body.decode("utf-8"))
    assert rendered["detail"] == "bad \\ud800"
    assert rendered["fields"] == {"\\udfff": "x"}
