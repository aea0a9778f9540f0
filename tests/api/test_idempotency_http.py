"""RELIABILITY I1 and I2 over HTTP: a retry with the same Idempotency-Key and body returns the
first response, byte for byte, with `Idempotency-Replayed: true` and changes nothing; a different
body under the same key is refused; keys are scoped to the merchant; 50 concurrent identical
requests make exactly one transaction.

Every retry is signed afresh (a new nonce), as a till retries: a re-sent signature would be
refused as a replay before idempotency is even consulted (test_replay.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import call, make_partner
from tests.api.test_error_codes import assert_problem, enrol, funded_member, issuance, post
from tests.api.writes import ledger_rows, nothing_written, transactions_of_merchant
from tests.factories import unique

Setup = Callable[[Any, Any, Any], Awaitable[tuple[str, dict[str, Any], int]]]


async def members_request(client, partner, clock):
    return "/v1/members", {"external_ref": unique("card")}, 201


async def issuance_request(client, partner, clock):
    member = await enrol(client, partner, clock)
    return "/v1/issuances", issuance(member, 100), 201


async def redemption_request(client, partner, clock):
    member, _ = await funded_member(client, partner, clock, 100)
    return "/v1/redemptions", issuance(member, 40), 201


async def hold_request(client, partner, clock):
    member, _ = await funded_member(client, partner, clock, 100)
    return "/v1/holds", issuance(member, 40), 201


async def capture_request(client, partner, clock):
    member, _ = await funded_member(client, partner, clock, 100)
    hold = await post(client, partner, clock, "/v1/holds", issuance(member, 40))
    return f"/v1/holds/{hold.json()['hold_id']}/capture", {"points": 30}, 201


async def void_request(client, partner, clock):
    member, _ = await funded_member(client, partner, clock, 100)
    hold = await post(client, partner, clock, "/v1/holds", issuance(member, 40))
    return f"/v1/holds/{hold.json()['hold_id']}/void", {}, 200


async def reversal_request(client, partner, clock):
    _, issued = await funded_member(client, partner, clock, 100)
    return (
        f"/v1/transactions/{issued['transaction_id']}/reversals",
        {"points": 30, "reference": unique("ref")},
        201,
    )


SETUPS = [
    members_request,
    issuance_request,
    redemption_request,
    hold_request,
    capture_request,
    void_request,
    reversal_request,
]


@pytest.mark.parametrize("setup", [pytest.param(s, id=s.__name__) for s in SETUPS])
async def test_retry_with_same_key_and_body_replays_the_first_response_byte_for_byte(
    db, client, clock, partner, setup
):
    path, body, status = await setup(client, partner, clock)
    key = unique("key")
    first = await post(client, partner, clock, path, body, idempotency_key=key)
    assert first.status_code == status, first.text
    assert "idempotency-replayed" not in first.headers
    async with nothing_written(db, merchants=[partner.merchant_id]):
        retries = [
            await post(client, partner, clock, path, body, idempotency_key=key) for _ in range(3)
        ]
    for retry in retries:
        assert retry.status_code == first.status_code
        assert retry.headers["idempotency-replayed"] == "true"
        assert retry.json() == first.json()
        assert retry.content == first.content


async def test_same_key_with_a_different_body_is_refused_and_changes_nothing(
    db, client, clock, partner
):
    member = await enrol(client, partner, clock)
    key = unique("key")
    first = await post(
        client, partner, clock, "/v1/issuances", issuance(member), idempotency_key=key
    )
    assert first.status_code == 201
    different = [
        ("/v1/issuances", {**issuance(member), "points": 11}),
        ("/v1/issuances", {**first_body(first), "reference": unique("ref")}),
        ("/v1/redemptions", {"member_id": member, "points": 1, "reference": "r"}),
        ("/v1/members", {"external_ref": unique("card")}),
    ]
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        for path, body in different:
            response = await post(client, partner, clock, path, body, idempotency_key=key)
            assert_problem(response, 422, "idempotency_key_reused")
            assert "idempotency-replayed" not in response.headers
            assert first.json()["transaction_id"] not in response.text


def first_body(response: httpx.Response) -> dict[str, Any]:
    data = response.json()
    return {
        "member_id": data["member_id"],
        "points": data["points"],
        "reference": data["reference"],
    }


async def test_same_key_at_another_merchant_is_a_separate_key(db, client, clock, partner):
    other = await make_partner(db)
    member = await enrol(client, partner, clock)
    key, body = unique("key"), issuance(member)
    mine = await post(client, partner, clock, "/v1/issuances", body, idempotency_key=key)
    theirs = await post(client, other, clock, "/v1/issuances", body, idempotency_key=key)
    assert mine.status_code == theirs.status_code == 201
    assert "idempotency-replayed" not in theirs.headers
    assert theirs.json()["transaction_id"] != mine.json()["transaction_id"]
    assert theirs.json()["merchant_id"] == other.merchant_id
    # Nothing of the first merchant's stored response reaches the second.
    assert partner.merchant_id not in theirs.text
    assert mine.json()["transaction_id"] not in theirs.text
    assert await transactions_of_merchant(db, other.merchant_id) == 1
    # And a different body under that key at the other merchant is not "reused" against mine.
    differs = await post(
        client, other, clock, "/v1/issuances", issuance(member, 7), idempotency_key=unique("key")
    )
    assert differs.status_code == 201


CONCURRENT = 50


async def test_fifty_concurrent_identical_requests_make_one_transaction(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    key, body = unique("key"), issuance(member, 10)
    before = await ledger_rows(db)
    responses = await asyncio.gather(
        *(
            post(client, partner, clock, "/v1/issuances", body, idempotency_key=key)
            for _ in range(CONCURRENT)
        )
    )
    statuses = [response.status_code for response in responses]
    succeeded = [response for response in responses if 200 <= response.status_code < 300]
    in_flight = [response for response in responses if response.status_code == 409]
    assert len(succeeded) + len(in_flight) == CONCURRENT, statuses
    assert succeeded
    assert {response.status_code for response in succeeded} == {201}
    for response in in_flight:
        assert_problem(response, 409, "idempotency_key_in_flight")
    after = await ledger_rows(db)
    assert after["transactions"] == before["transactions"] + 1
    assert after["idempotency_records"] == before["idempotency_records"] + 1
    assert await transactions_of_merchant(db, partner.merchant_id) == 1
    balance = await call(client, partner, clock, "GET", f"/v1/members/{member}/balance")
    assert balance.json()["available"] == 10

    retry = await post(client, partner, clock, "/v1/issuances", body, idempotency_key=key)
    assert retry.status_code == 201
    assert retry.headers["idempotency-replayed"] == "true"
    assert len({response.json()["transaction_id"] for response in [*succeeded, retry]}) == 1
    # All 2xx bodies byte-identical, the retry's too (RELIABILITY I1).
    assert len({response.content for response in [*succeeded, retry]}) == 1


async def test_key_is_kept_for_7_days(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    key, body = unique("key"), issuance(member)
    first = await post(client, partner, clock, "/v1/issuances", body, idempotency_key=key)
    clock.advance(timedelta(days=7) - timedelta(minutes=1))
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        retry = await post(client, partner, clock, "/v1/issuances", body, idempotency_key=key)
    assert retry.status_code == 201
    assert retry.headers["idempotency-replayed"] == "true"
    assert retry.json() == first.json()


def batch_of(member: str) -> dict[str, Any]:
    return {"operations": [{"op": "issue", "idempotency_key": unique("k"), **issuance(member)}]}


async def test_batch_retry_with_same_key_and_body_replays_the_first_response(
    db, client, clock, partner
):
    """PROTOCOL.md: every POST carries an Idempotency-Key, and a retry with the same key and
    body returns the first response with `Idempotency-Replayed: true` -- /v1/batches too."""
    member = await enrol(client, partner, clock)
    key, body = unique("key"), batch_of(member)
    first = await post(client, partner, clock, "/v1/batches", body, idempotency_key=key)
    assert first.status_code == 200, first.text
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        retry = await post(client, partner, clock, "/v1/batches", body, idempotency_key=key)
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers.get("idempotency-replayed") == "true"


async def test_batch_with_same_key_and_a_different_body_is_refused(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    key = unique("key")
    first = await post(client, partner, clock, "/v1/batches", batch_of(member), idempotency_key=key)
    assert first.status_code == 200, first.text
    async with nothing_written(db, members=[member], merchants=[partner.merchant_id]):
        response = await post(
            client, partner, clock, "/v1/batches", batch_of(member), idempotency_key=key
        )
    assert_problem(response, 422, "idempotency_key_reused")
