"""Batches write runs of issuances set-based (exchange.bulk); what a merchant gets back, and
what the ledger holds, is what issuing them one after another gives."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from exchange.api import batches
from exchange.bulk import IssueRequest
from exchange.service import Ledger
from tests.api.writes import ledger_rows
from tests.factories import issue, make_member, make_merchant, redeem, unique

VARYING = ("transaction_id", "member_id", "reference")


def issuance(member: str, points: int, **extra: Any) -> dict[str, Any]:
    return {
        "op": "issue",
        "idempotency_key": extra.pop("key", unique("k")),
        "member_id": member,
        "points": points,
        "reference": extra.pop("reference", unique("r")),
        **extra,
    }


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in result.items() if name not in VARYING}


async def test_a_run_of_issuances_returns_what_one_by_one_issuance_returns(db, ledger, clock):
    shop = await make_merchant(db)
    bulk_members = [await make_member(ledger) for _ in range(3)]
    single_members = [await make_member(ledger) for _ in range(3)]
    for bulk_member, single_member in zip(bulk_members, single_members, strict=True):
        await issue(ledger, shop, bulk_member, 10)
        await issue(ledger, shop, single_member, 10)
    plan = [(0, 5), (1, 7), (0, 1), (2, 300), (0, 2)]
    expires = clock.now() + timedelta(days=30)

    results = await batches.run(
        ledger,
        shop,
        [issuance(bulk_members[who], points, expires_at=expires) for who, points in plan],
    )
    singles = [
        await issue(ledger, shop, single_members[who], points, expires_at=expires)
        for who, points in plan
    ]

    assert [comparable(result) for result in results] == [comparable(s) for s in singles]
    assert [result["balance_after"] for result in results] == [15, 17, 16, 310, 18]
    for bulk_member, single_member in zip(bulk_members, single_members, strict=True):
        assert await ledger.balance(member_id=bulk_member) == {
            **await ledger.balance(member_id=single_member),
            "member_id": bulk_member,
        }


async def test_refusals_keep_their_place_and_the_rest_is_issued(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)

    results = await batches.run(
        ledger,
        shop,
        [
            issuance(member, 5),
            issuance("mbr_" + "0" * 26, 5),
            issuance(member, 0),
            {"op": "issue", "idempotency_key": unique("k"), "member_id": member},
            issuance(member, 6),
        ],
    )

    assert [result.get("code") for result in results] == [
        None,
        "not_found",
        "validation_error",
        "validation_error",
        None,
    ]
    assert [results[0]["balance_after"], results[4]["balance_after"]] == [5, 11]
    assert (await ledger.balance(member_id=member))["available"] == 11


async def test_a_retried_batch_replays_every_issuance_and_changes_nothing(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)
    operations = [issuance(member, points) for points in (3, 4, 5)]

    first = await batches.run(ledger, shop, operations)
    before = await ledger_rows(db)
    again = await batches.run(ledger, shop, operations)

    assert again == first
    assert await ledger_rows(db) == before


async def test_a_batched_issuance_retried_alone_replays_the_batch_result(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)
    operation = issuance(member, 9)

    [batched, _] = await batches.run(ledger, shop, [operation, issuance(member, 1)])
    alone = await ledger.issue(
        merchant_id=shop,
        idempotency_key=operation["idempotency_key"],
        member_id=member,
        points=9,
        reference=operation["reference"],
    )

    assert alone.replayed
    assert alone.body == batched


async def test_a_key_reused_with_another_request_is_refused_in_place(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)
    taken = issuance(member, 2)
    await batches.run(ledger, shop, [taken, issuance(member, 1)])

    results = await batches.run(
        ledger, shop, [issuance(member, 1), {**taken, "points": 3}, issuance(member, 1)]
    )

    assert results[1]["code"] == "idempotency_key_reused"
    assert results[2]["balance_after"] == 5
    assert (await ledger.balance(member_id=member))["available"] == 5


async def test_a_key_repeated_within_a_batch_replays_its_first_result(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)
    operation = issuance(member, 4)

    results = await batches.run(
        ledger, shop, [operation, issuance(member, 1), operation, {**operation, "points": 5}]
    )

    assert results[2] == results[0]
    assert results[3]["code"] == "idempotency_key_reused"
    assert (await ledger.balance(member_id=member))["available"] == 5


async def test_a_redemption_between_issuances_sees_exactly_the_ones_before_it(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)

    results = await batches.run(
        ledger,
        shop,
        [
            issuance(member, 5),
            issuance(member, 5),
            {
                "op": "redeem",
                "idempotency_key": unique("k"),
                "member_id": member,
                "points": 11,
                "reference": "r",
            },
            issuance(member, 5),
        ],
    )

    assert results[2]["code"] == "insufficient_points"
    assert results[2]["available"] == 10
    assert results[3]["balance_after"] == 15


async def test_past_the_liability_limit_each_issuance_is_admitted_or_refused_on_its_own(db, ledger):
    shop = await make_merchant(db, liability_limit=10)
    member = await make_member(ledger)

    results = await batches.run(ledger, shop, [issuance(member, 4) for _ in range(4)])

    assert [result.get("code") for result in results] == [
        None,
        None,
        "liability_limit_exceeded",
        "liability_limit_exceeded",
    ]
    assert (await ledger.balance(member_id=member))["available"] == 8


async def test_a_key_held_by_a_request_in_flight_is_refused_and_the_rest_issued(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)
    busy = issuance(member, 7)
    async with db.transaction() as conn:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7))",
            shop,
            busy["idempotency_key"],
        )
        results = await batches.run(ledger, shop, [issuance(member, 1), busy, issuance(member, 2)])

    assert results[1]["code"] == "idempotency_key_in_flight"
    assert [results[0]["balance_after"], results[2]["balance_after"]] == [1, 3]


async def test_issue_many_issues_nothing_for_a_suspended_merchant(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)
    async with db.transaction() as conn:
        await conn.execute("UPDATE merchants SET status = 'suspended' WHERE merchant_id = $1", shop)

    results = await batches.run(ledger, shop, [issuance(member, 1), issuance(member, 2)])

    assert {result["code"] for result in results} == {"merchant_suspended"}
    assert (await ledger.balance(member_id=member))["available"] == 0


async def test_batches_racing_over_the_same_members_and_redemptions_all_complete(
    db, ledger: Ledger
):
    """Overlapping members in opposite orders, with single redemptions on them meanwhile: no
    deadlock surfaces, nothing is lost, and every member's balance is exactly its history."""
    shops = [await make_merchant(db) for _ in range(2)]
    members = [await make_member(ledger) for _ in range(20)]
    for member in members:
        await issue(ledger, shops[0], member, 100)

    async def batch(shop: str, order: list[str]) -> list[Any]:
        return await batches.run(ledger, shop, [issuance(member, 3) for member in order])

    async def spend(member: str) -> dict[str, object]:
        return await redeem(ledger, shops[1], member, 2)

    outcomes = await asyncio.gather(
        *(batch(shops[n % 2], members if n % 2 else members[::-1]) for n in range(6)),
        *(spend(member) for member in members),
    )

    issued = [result for batch_results in outcomes[:6] for result in batch_results]
    assert all("code" not in result for result in issued), issued
    assert len({result["transaction_id"] for result in issued}) == 6 * len(members)
    for member in members:
        assert (await ledger.balance(member_id=member))["available"] == 100 + 6 * 3 - 2


async def test_issue_many_answers_none_when_the_run_must_go_one_by_one(db, ledger):
    shop = await make_merchant(db, liability_limit=1)
    member = await make_member(ledger)

    answer = await ledger.issue_many(
        merchant_id=shop,
        requests=[
            IssueRequest(unique("k"), member, 1, "r"),
            IssueRequest(unique("k"), member, 1, "r"),
        ],
    )

    assert answer is None
    assert (await ledger.balance(member_id=member))["available"] == 0


async def test_a_run_of_issuances_is_written_in_one_database_transaction(db, ledger):
    shop = await make_merchant(db)
    member = await make_member(ledger)

    results = await batches.run(ledger, shop, [issuance(member, 1) for _ in range(50)])

    async with db.connection() as conn:
        writers = await conn.fetchval(
            "SELECT count(DISTINCT xact) FROM transactions WHERE transaction_id = ANY($1)",
            [result["transaction_id"] for result in results],
        )
    assert writers == 1
