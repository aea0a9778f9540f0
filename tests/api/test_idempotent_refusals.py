"""PROTOCOL.md, Idempotency, for refusals (ADR 0013): a retry with the same key and body returns
the first response, a refusal included (the same status and problem, byte for byte), with
`Idempotency-Replayed: true`, and changes nothing, even once the request would now succeed.

Recorded: the refusals of a ledger rule (404 not_found, 409 insufficient_points,
liability_limit_exceeded, hold_not_active, reversal_exceeds_original). Not recorded: 422
validation_error (the corrected request runs under the same key), 403 merchant_suspended (the
merchant, reactivated, retries), 409 idempotency_key_in_flight.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from merchants import service as merchants
from tests.api.conftest import call
from tests.api.test_error_codes import assert_problem, enrol, funded_member, issuance, post
from tests.api.writes import ledger_rows
from tests.factories import unique

UNKNOWN_MEMBER = "mbr_01M83EN0HFTX701RRDJ1VMCJ99"


async def balance(client, partner, clock, member: str) -> dict[str, Any]:
    response = await call(client, partner, clock, "GET", f"/v1/members/{member}/balance")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_replayed(first: httpx.Response, again: httpx.Response) -> None:
    """`again` is `first` replayed: the same status and the very same bytes, flagged."""
    assert "idempotency-replayed" not in first.headers
    assert again.headers["idempotency-replayed"] == "true"
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["content-digest"] == first.headers["content-digest"]


async def test_refusal_replays_byte_for_byte_after_the_member_earned(db, client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 20)
    key, body = unique("key"), issuance(member, 30)
    first = await post(client, partner, clock, "/v1/redemptions", body, idempotency_key=key)
    assert_problem(first, 409, "insufficient_points")
    await post(client, partner, clock, "/v1/issuances", issuance(member, 100))
    before = await ledger_rows(db)

    again = await post(client, partner, clock, "/v1/redemptions", body, idempotency_key=key)

    assert_replayed(first, again)
    assert again.json()["available"] == 20
    assert await ledger_rows(db) == before
    assert (await balance(client, partner, clock, member))["available"] == 120


async def test_each_recorded_refusal_replays_over_http(db, client, clock, partner):
    member, issued = await funded_member(client, partner, clock, 50)
    hold = (await post(client, partner, clock, "/v1/holds", issuance(member, 10))).json()
    await post(client, partner, clock, f"/v1/holds/{hold['hold_id']}/void", {})
    other = await enrol(client, partner, clock)
    cases = [
        ("/v1/issuances", issuance(UNKNOWN_MEMBER), 404, "not_found"),
        ("/v1/redemptions", issuance(UNKNOWN_MEMBER), 404, "not_found"),
        ("/v1/holds", issuance(other, 1), 409, "insufficient_points"),
        (f"/v1/holds/{hold['hold_id']}/void", {}, 409, "hold_not_active"),
        (f"/v1/holds/{hold['hold_id']}/capture", {"points": 5}, 409, "hold_not_active"),
        (
            f"/v1/transactions/{issued['transaction_id']}/reversals",
            {"points": 51, "reference": unique("ref")},
            409,
            "reversal_exceeds_original",
        ),
    ]
    for path, body, status, code in cases:
        key = unique("key")
        first = await post(client, partner, clock, path, body, idempotency_key=key)
        assert_problem(first, status, code)
        before = await ledger_rows(db)
        again = await post(client, partner, clock, path, body, idempotency_key=key)
        assert_replayed(first, again)
        assert await ledger_rows(db) == before


async def test_liability_limit_refusal_replays_after_the_limit_is_raised(db, client, clock):
    from tests.api.conftest import make_partner

    small = await make_partner(db, liability_limit=10)
    member = await enrol(client, small, clock)
    key, body = unique("key"), issuance(member, 11)
    first = await post(client, small, clock, "/v1/issuances", body, idempotency_key=key)
    assert_problem(first, 409, "liability_limit_exceeded")
    await merchants.set_liability_limit(db, small.merchant_id, 1000, clock.now())

    again = await post(client, small, clock, "/v1/issuances", body, idempotency_key=key)

    assert_replayed(first, again)
    assert (await balance(client, small, clock, member))["available"] == 0


async def test_same_key_with_another_body_after_a_refusal_is_reused(db, client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 20)
    key = unique("key")
    first = await post(
        client, partner, clock, "/v1/redemptions", issuance(member, 30), idempotency_key=key
    )
    assert_problem(first, 409, "insufficient_points")
    before = await ledger_rows(db)

    other = await post(
        client, partner, clock, "/v1/redemptions", issuance(member, 10), idempotency_key=key
    )

    assert_problem(other, 422, "idempotency_key_reused")
    assert "idempotency-replayed" not in other.headers
    assert await ledger_rows(db) == before
    assert (await balance(client, partner, clock, member))["available"] == 20


async def test_validation_error_is_not_recorded_so_the_corrected_request_runs(
    db, client, clock, partner
):
    member, _ = await funded_member(client, partner, clock, 20)
    key = unique("key")
    malformed = {"member_id": member, "points": 0, "reference": unique("ref")}
    refused = await post(client, partner, clock, "/v1/redemptions", malformed, idempotency_key=key)
    assert_problem(refused, 422, "validation_error")

    corrected = await post(
        client, partner, clock, "/v1/redemptions", {**malformed, "points": 5}, idempotency_key=key
    )

    assert corrected.status_code == 201, corrected.text
    assert "idempotency-replayed" not in corrected.headers
    assert corrected.json()["balance_after"] == 15


async def test_merchant_suspended_is_not_recorded_so_the_reactivated_merchant_retries(
    db, client, clock, partner
):
    member, _ = await funded_member(client, partner, clock, 20)
    key, body = unique("key"), issuance(member, 5)
    await merchants.suspend(db, partner.merchant_id, clock.now())
    refused = await post(client, partner, clock, "/v1/redemptions", body, idempotency_key=key)
    assert_problem(refused, 403, "merchant_suspended")
    await merchants.reactivate(db, partner.merchant_id, clock.now())

    retried = await post(client, partner, clock, "/v1/redemptions", body, idempotency_key=key)

    assert retried.status_code == 201, retried.text
    assert "idempotency-replayed" not in retried.headers
    assert retried.json()["balance_after"] == 15


async def test_concurrent_retries_of_a_refused_request_get_one_refusal(db, client, clock, partner):
    """Eight requests with one key at once, for more points than the member has: one is refused,
    each other one is in flight or replays that very refusal; then the member earns, and the key
    still replays the refusal."""
    member, _ = await funded_member(client, partner, clock, 20)
    key, body = unique("key"), issuance(member, 30)

    responses = await asyncio.gather(
        *(
            post(client, partner, clock, "/v1/redemptions", body, idempotency_key=key)
            for _ in range(8)
        )
    )

    refusals = [r for r in responses if r.json()["code"] == "insufficient_points"]
    fresh = [r for r in refusals if "idempotency-replayed" not in r.headers]
    assert len(fresh) == 1, [r.text for r in responses]
    for response in responses:
        if response in refusals:
            assert response.content == fresh[0].content
        else:
            assert_problem(response, 409, "idempotency_key_in_flight")
    await post(client, partner, clock, "/v1/issuances", issuance(member, 100))
    later = await post(client, partner, clock, "/v1/redemptions", body, idempotency_key=key)
    assert_replayed(fresh[0], later)


# --- batches ----------------------------------------------------------------------------------


async def batch(client, partner, clock, operations: list[dict[str, Any]]) -> list[Any]:
    response = await post(client, partner, clock, "/v1/batches", {"operations": operations})
    assert response.status_code == 200, response.text
    results: list[Any] = response.json()["results"]
    return results


def encoded(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def test_refused_batch_operations_replay_in_a_later_batch_and_alone(
    db, client, clock, partner
):
    member, _ = await funded_member(client, partner, clock, 20)
    redeem_key, issue_key, ok_key = unique("op"), unique("op"), unique("op")
    operations = [
        {"op": "issue", "idempotency_key": ok_key, **issuance(member, 1)},
        {"op": "issue", "idempotency_key": issue_key, **issuance(UNKNOWN_MEMBER, 5)},
        {"op": "redeem", "idempotency_key": redeem_key, **issuance(member, 50)},
    ]
    first = await batch(client, partner, clock, operations)
    assert [result.get("code") for result in first] == [None, "not_found", "insufficient_points"]
    await post(client, partner, clock, "/v1/issuances", issuance(member, 100))
    before = await ledger_rows(db)

    again = await batch(client, partner, clock, operations)  # another batch key, same operations

    assert encoded(again) == encoded(first)
    after = await ledger_rows(db)
    assert after.pop("idempotency_records") == before.pop("idempotency_records") + 1  # the batch
    assert after == before
    for operation, result in zip(operations[1:], first[1:], strict=True):
        path = "/v1/issuances" if operation["op"] == "issue" else "/v1/redemptions"
        body = {name: operation[name] for name in ("member_id", "points", "reference")}
        alone = await post(
            client, partner, clock, path, body, idempotency_key=operation["idempotency_key"]
        )
        assert alone.headers["idempotency-replayed"] == "true"
        assert alone.status_code == result["status"]
        assert alone.content == encoded(result).encode()
    assert (await balance(client, partner, clock, member))["available"] == 121


async def test_refusal_alone_replays_in_a_batch(db, client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 20)
    key, body = unique("key"), issuance(member, 30)
    first = await post(client, partner, clock, "/v1/redemptions", body, idempotency_key=key)
    assert_problem(first, 409, "insufficient_points")
    await post(client, partner, clock, "/v1/issuances", issuance(member, 100))

    [result] = await batch(
        client, partner, clock, [{"op": "redeem", "idempotency_key": key, **body}]
    )

    assert encoded(result).encode() == first.content
    assert (await balance(client, partner, clock, member))["available"] == 120
