"""The client against a stand-in exchange (tests/sdk/mock_exchange.py): batch splitting, key
rotation, every problem code's exception, and answers it must refuse to guess at."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sdk
from sdk import (
    AllianceClient,
    AsyncAllianceClient,
    IssueOperation,
    RetryPolicy,
    UnexpectedResponseError,
)
from tests.sdk.mock_exchange import BASE_URL, MockExchange, problem, transaction

PROTOCOL_CODES = {
    # PROTOCOL.md's table of problem codes, status by code.
    "signature_missing": 401,
    "signature_invalid": 401,
    "signature_expired": 401,
    "unknown_key": 401,
    "key_revoked": 401,
    "replayed_request": 401,
    "merchant_suspended": 403,
    "not_found": 404,
    "insufficient_points": 409,
    "liability_limit_exceeded": 409,
    "idempotency_key_in_flight": 409,
    "hold_not_active": 409,
    "reversal_exceeds_original": 409,
    "idempotency_key_reused": 422,
    "validation_error": 422,
    "payload_too_large": 413,
    "rate_limited": 429,
}


def client_for(exchange: MockExchange, **options: Any) -> AllianceClient:
    options.setdefault("sleep", lambda seconds: None)
    return AllianceClient(
        base_url=BASE_URL,
        key_id="key_1",
        private_key=Ed25519PrivateKey.generate(),
        transport=exchange.transport(),
        **options,
    )


def batch_echo(request: httpx2.Request) -> tuple[int, Any]:
    """Answers each batch operation with a transaction carrying its idempotency key."""
    operations = json.loads(request.content)["operations"]
    return 200, {
        "results": [transaction(reference=op["idempotency_key"]) for op in operations],
    }


def operations(count: int) -> list[IssueOperation]:
    return [IssueOperation(member_id="mbr_1", points=1, reference=f"r{n}") for n in range(count)]


def test_batch_all_sends_at_most_1000_operations_per_request():
    exchange = MockExchange(batch_echo)
    ops = operations(2_001)

    with client_for(exchange) as client:
        results = client.batch_all(ops)

    sizes = [len(json.loads(r.content)["operations"]) for r in exchange.requests]
    assert sizes == [1_000, 1_000, 1]
    assert [r.transaction.reference for r in results if r.transaction] == [
        op.idempotency_key for op in ops
    ]
    assert len({r.headers["idempotency-key"] for r in exchange.requests}) == 3


async def test_async_batch_all_splits_the_same_way():
    exchange = MockExchange(batch_echo)
    client = AsyncAllianceClient(
        base_url=BASE_URL,
        key_id="key_1",
        private_key=Ed25519PrivateKey.generate(),
        transport=exchange.transport(),
    )
    async with client:
        results = await client.batch_all(operations(1_001))

    assert [len(json.loads(r.content)["operations"]) for r in exchange.requests] == [1_000, 1]
    assert len(results) == 1_001


@pytest.mark.parametrize("count", [0, 1_001])
def test_batch_refuses_more_than_1000_or_no_operations_before_sending(count):
    exchange = MockExchange(batch_echo)

    with client_for(exchange) as client, pytest.raises(ValueError, match="1 to 1000"):
        client.batch(operations(count))

    assert exchange.requests == []


def test_batch_all_of_nothing_sends_nothing():
    exchange = MockExchange(batch_echo)
    with client_for(exchange) as client:
        assert client.batch_all([]) == []
    assert exchange.requests == []


def test_a_rotated_key_is_fetched_once_and_then_kept():
    exchange = MockExchange(lambda request: (201, transaction()))
    with client_for(exchange) as client:
        client.get_transaction(transaction_id="txn_1")
        assert exchange.key_fetches == 1

        exchange.rotate("xk_2")
        client.get_transaction(transaction_id="txn_1")
        client.get_transaction(transaction_id="txn_1")

    assert exchange.key_fetches == 2


def test_a_key_that_is_never_published_is_refused_after_one_refresh_per_answer():
    exchange = MockExchange(lambda request: (201, transaction()))
    with client_for(exchange) as client:
        client.get_transaction(transaction_id="txn_1")
        exchange.rotate("xk_rogue", publish=False)
        for fetches in (2, 3):
            with pytest.raises(sdk.ResponseVerificationError):
                client.get_transaction(transaction_id="txn_1")
            assert exchange.key_fetches == fetches


def test_an_attempt_whose_keys_could_not_be_fetched_is_retried():
    exchange = MockExchange(lambda request: (201, transaction()))
    exchange.key_outages = 1
    waits: list[float] = []

    with client_for(exchange, sleep=waits.append, random=lambda: 0.0) as client:
        issued = client.issue(member_id="mbr_1", points=1, reference="r", idempotency_key="k-9")

    assert issued.transaction_id == "txn_1"
    assert exchange.key_fetches == 2
    assert waits == [0.5]
    assert {r.headers["idempotency-key"] for r in exchange.requests} == {"k-9"}
    assert len(exchange.requests) == 2


@pytest.mark.parametrize(("code", "status"), sorted(PROTOCOL_CODES.items()))
def test_each_problem_code_raises_its_own_exception(code, status):
    exchange = MockExchange(lambda request: problem(status, code, available=3))

    with client_for(exchange, retry=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(sdk.AllianceError) as raised:
            client.redeem(member_id="mbr_1", points=5, reference="r", idempotency_key="k-1")

    error = raised.value
    assert type(error) is sdk.ERROR_CLASSES[code]
    assert isinstance(error, sdk.APIStatusError)
    assert (error.status, error.code, error.detail) == (status, code, f"because {code}")
    assert error.request_id == "req-1"
    assert error.idempotency_key == "k-1"
    assert error.problem["available"] == 3


def test_every_protocol_code_has_a_class_of_its_own():
    classes = [sdk.ERROR_CLASSES[code] for code in PROTOCOL_CODES]
    assert len(set(classes)) == len(PROTOCOL_CODES)
    for code, cls in zip(PROTOCOL_CODES, classes, strict=True):
        assert cls.code == code
        assert cls.__name__ in sdk.__all__


@pytest.mark.parametrize(
    ("status", "expected"),
    [(409, sdk.ConflictError), (401, sdk.AuthenticationError), (418, sdk.APIStatusError)],
)
def test_a_code_this_sdk_does_not_know_yet_falls_back_to_its_status(status, expected):
    exchange = MockExchange(lambda request: problem(status, "something_new"))

    with client_for(exchange) as client, pytest.raises(expected) as raised:
        client.get_balance(member_id="mbr_1")

    assert type(raised.value) is expected
    assert raised.value.code == "something_new"


@pytest.mark.parametrize(
    "payload",
    [
        transaction(points="25"),
        transaction(points=True),
        {k: v for k, v in transaction().items() if k != "balance_after"},
        transaction(created_at="yesterday"),
        [transaction()],
    ],
    ids=["points-as-string", "points-as-bool", "field-missing", "bad-time", "not-an-object"],
)
def test_an_answer_of_the_wrong_shape_is_refused_not_retried(payload):
    exchange = MockExchange(lambda request: (201, payload))

    with client_for(exchange) as client, pytest.raises(UnexpectedResponseError):
        client.issue(member_id="mbr_1", points=25, reference="r")

    assert len(exchange.requests) == 1


def test_extra_fields_are_kept_in_raw():
    exchange = MockExchange(lambda request: (201, transaction(kind="conversion", target_points=7)))

    with client_for(exchange) as client:
        issued = client.get_transaction(transaction_id="txn_1")

    assert issued.kind == "conversion"
    assert issued.raw["target_points"] == 7


def test_ids_are_one_path_segment_each():
    exchange = MockExchange(lambda request: (201, transaction()))
    with client_for(exchange) as client:
        client.get_transaction(transaction_id="txn/../../members")
        with pytest.raises(ValueError, match="non-empty id"):
            client.get_transaction(transaction_id="..")

    assert exchange.requests[0].url.raw_path == b"/v1/transactions/txn%2F..%2F..%2Fmembers"


def test_a_naive_expiry_is_refused_before_sending():
    from datetime import datetime

    exchange = MockExchange(lambda request: (201, transaction()))
    with client_for(exchange) as client, pytest.raises(ValueError, match="timezone-aware"):
        client.issue(member_id="m", points=1, reference="r", expires_at=datetime(2027, 1, 1))
    assert exchange.requests == []


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "é"])
def test_an_idempotency_key_the_protocol_forbids_is_refused_before_sending(key):
    exchange = MockExchange(lambda request: (201, transaction()))
    with client_for(exchange) as client, pytest.raises(ValueError, match="visible ASCII"):
        client.issue(member_id="m", points=1, reference="r", idempotency_key=key)
    assert exchange.requests == []
