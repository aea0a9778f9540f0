"""A refusal by a ledger rule is the key's first response, and its retries replay it (ADR 0013).

Recorded (and replayed as `RefusalReplayed`, with the first refusal's code, detail and members):
insufficient_points, not_found, liability_limit_exceeded, hold_not_active,
reversal_exceeds_original. Not recorded: validation_error, idempotency_key_in_flight and _reused,
merchant_suspended. The races run on the real PostgreSQL: the key is held from the claim until
the refusal is recorded, so a concurrent retry is in flight or replays, and never runs anew.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from core.errors import DomainError, NotFound, ValidationFailed
from core.limits import IDEMPOTENCY_RETENTION_S
from exchange import idempotency
from exchange.bulk import IssueRequest
from exchange.errors import (
    HoldNotActive,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InsufficientPoints,
    LiabilityLimitExceeded,
    MerchantSuspended,
    ReversalExceedsOriginal,
)
from exchange.idempotency import RefusalReplayed
from exchange.service import Outcome
from merchants import service as merchants
from tests.exchange.helpers import key, ref, snapshot
from tests.factories import issue, make_member, make_merchant, redeem

RETENTION = timedelta(seconds=IDEMPOTENCY_RETENTION_S)


async def records(db, merchant_id: str, idempotency_key: str) -> list[tuple[bool, str]]:
    """The key's records, as (refused, response JSON)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT refused, response FROM idempotency_records
               WHERE merchant_id = $1 AND idempotency_key = $2""",
            merchant_id,
            idempotency_key,
        )
    return [(row["refused"], row["response"]) for row in rows]


def same_refusal(replayed: DomainError, first: DomainError) -> None:
    assert isinstance(replayed, RefusalReplayed)
    assert (replayed.code, replayed.detail, replayed.extra) == (
        first.code,
        first.detail,
        first.extra,
    )


async def refused_then_replayed(
    db, call: Callable[[], Awaitable[Outcome]], expected: type[DomainError], members, merchants_
) -> DomainError:
    """`call` is refused with `expected`; called again it replays that and changes nothing."""
    with pytest.raises(expected) as first:
        await call()
    assert not isinstance(first.value, RefusalReplayed)
    before = await snapshot(db, members=members, merchants=merchants_)
    for _ in range(2):
        with pytest.raises(RefusalReplayed) as again:
            await call()
        same_refusal(again.value, first.value)
    assert await snapshot(db, members=members, merchants=merchants_) == before
    return first.value


async def test_insufficient_points_replays_after_the_member_earned(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 20)
    request = {"merchant_id": tea, "idempotency_key": key(), "member_id": member, "points": 30}
    request["reference"] = ref()

    with pytest.raises(InsufficientPoints) as first:
        await ledger.redeem(**request)
    await issue(ledger, tea, member, 100)  # now it would fit
    with pytest.raises(RefusalReplayed) as retried:
        await ledger.redeem(**request)

    same_refusal(retried.value, first.value)
    assert retried.value.extra == {"available": 20}
    assert (await ledger.balance(member_id=member))["available"] == 120
    [(refused, _)] = await records(db, tea, request["idempotency_key"])
    assert refused is True


async def test_each_recorded_refusal_replays_and_changes_nothing(db, ledger):
    tea, shop = await make_merchant(db), await make_merchant(db)
    small = await make_merchant(db, liability_limit=10)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 50)
    stranger = "mbr_" + "0" * 26
    everyone = {"members": [member], "merchants_": [tea, shop, small]}

    # not_found: a member, a hold, a transaction that do not exist (or are another's).
    unknown_member = {"merchant_id": tea, "idempotency_key": key(), "member_id": stranger}
    await refused_then_replayed(
        db, lambda: ledger.issue(**unknown_member, points=5, reference="r"), NotFound, **everyone
    )
    held = (
        await ledger.hold(
            merchant_id=shop, idempotency_key=key(), member_id=member, points=10, reference="h"
        )
    ).body
    foreign_capture = {"merchant_id": tea, "idempotency_key": key(), "hold_id": held["hold_id"]}
    await refused_then_replayed(db, lambda: ledger.capture(**foreign_capture), NotFound, **everyone)
    # insufficient_points: a hold beyond the balance, a capture beyond the hold.
    too_much = {"merchant_id": shop, "idempotency_key": key(), "member_id": member, "points": 41}
    await refused_then_replayed(
        db, lambda: ledger.hold(**too_much, reference="h2"), InsufficientPoints, **everyone
    )
    over = {"merchant_id": shop, "idempotency_key": key(), "hold_id": held["hold_id"]}
    await refused_then_replayed(
        db, lambda: ledger.capture(**over, points=11), InsufficientPoints, **everyone
    )
    # hold_not_active: a void of a voided hold, replayed even once a new hold exists.
    await ledger.void(merchant_id=shop, idempotency_key=key(), hold_id=held["hold_id"])
    void_again = {"merchant_id": shop, "idempotency_key": key(), "hold_id": held["hold_id"]}
    refusal = await refused_then_replayed(
        db, lambda: ledger.void(**void_again), HoldNotActive, **everyone
    )
    assert refusal.extra == {"hold_status": "voided"}
    # reversal_exceeds_original.
    spent = await redeem(ledger, shop, member, 10)
    beyond = {
        "merchant_id": shop,
        "idempotency_key": key(),
        "transaction_id": spent["transaction_id"],
    }
    await refused_then_replayed(
        db,
        lambda: ledger.reverse(**beyond, points=11, reference="rv"),
        ReversalExceedsOriginal,
        **everyone,
    )
    # liability_limit_exceeded: replayed even after the limit was raised.
    past_limit = {"merchant_id": small, "idempotency_key": key(), "member_id": member}
    first = await refused_then_replayed(
        db,
        lambda: ledger.issue(**past_limit, points=11, reference="l"),
        LiabilityLimitExceeded,
        **everyone,
    )
    await merchants.set_liability_limit(db, small, 1000, ledger.clock.now())
    with pytest.raises(RefusalReplayed) as after_raise:
        await ledger.issue(**past_limit, points=11, reference="l")
    same_refusal(after_raise.value, first)


async def test_same_key_with_another_body_after_a_refusal_is_reused(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    request = {"merchant_id": tea, "idempotency_key": key(), "member_id": member, "points": 30}
    with pytest.raises(InsufficientPoints):
        await ledger.redeem(**request, reference="first")
    await issue(ledger, tea, member, 100)
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(IdempotencyKeyReused):
        await ledger.redeem(**request, reference="second")
    with pytest.raises(IdempotencyKeyReused):
        await ledger.issue(**request, reference="first")

    assert await snapshot(db, members=[member], merchants=[tea]) == before
    [(refused, _)] = await records(db, tea, request["idempotency_key"])
    assert refused is True


async def test_validation_error_is_not_recorded_so_the_corrected_request_runs(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    reused = key()
    with pytest.raises(ValidationFailed):
        await ledger.redeem(
            merchant_id=tea, idempotency_key=reused, member_id=member, points=0, reference="r"
        )
    assert await records(db, tea, reused) == []

    corrected = await ledger.redeem(
        merchant_id=tea, idempotency_key=reused, member_id=member, points=10, reference="r"
    )

    assert corrected.replayed is False
    assert corrected.body["balance_after"] == 90


async def test_validation_error_met_while_running_is_not_recorded(db, ledger):
    """A reversal of a reversal is malformed, though only the ledger can tell: not recorded."""
    tea = await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    reversal = (
        await ledger.reverse(
            merchant_id=tea,
            idempotency_key=key(),
            transaction_id=str(issued["transaction_id"]),
            reference="rv",
        )
    ).body
    request = {"merchant_id": tea, "idempotency_key": key(), "reference": "again"}
    request["transaction_id"] = reversal["transaction_id"]

    for _ in range(2):
        with pytest.raises(ValidationFailed) as refused:
            await ledger.reverse(**request)
        assert not isinstance(refused.value, RefusalReplayed)
    assert await records(db, tea, request["idempotency_key"]) == []


async def test_merchant_suspended_is_not_recorded_so_a_reactivated_merchant_retries(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    request = {"merchant_id": tea, "idempotency_key": key(), "member_id": member, "points": 10}
    request["reference"] = ref()
    await merchants.suspend(db, tea, ledger.clock.now())

    with pytest.raises(MerchantSuspended):
        await ledger.redeem(**request)
    assert await records(db, tea, request["idempotency_key"]) == []
    await merchants.reactivate(db, tea, ledger.clock.now())
    retried = await ledger.redeem(**request)

    assert retried.replayed is False
    assert retried.body["balance_after"] == 90


async def test_refusal_is_kept_for_the_retention_then_the_key_is_new(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    request = {"merchant_id": tea, "idempotency_key": key(), "member_id": member, "points": 30}
    request["reference"] = ref()
    with pytest.raises(InsufficientPoints):
        await ledger.redeem(**request)
    await issue(ledger, tea, member, 30)

    clock.advance(RETENTION - timedelta(seconds=1))
    with pytest.raises(RefusalReplayed):
        await ledger.redeem(**request)
    clock.advance(timedelta(seconds=1))
    again = await ledger.redeem(**request)  # the expired refusal is replaced by this result
    replay = await ledger.redeem(**request)

    assert again.replayed is False
    assert (replay.replayed, replay.body) == (True, again.body)
    assert [refused for refused, _ in await records(db, tea, request["idempotency_key"])] == [False]


# --- races, on the real database ------------------------------------------------------------


async def test_retry_while_the_refusal_is_being_recorded_is_in_flight(db, ledger, monkeypatch):
    """The window between the refused request's rollback and its record: the key is still held,
    so a retry (even one that would now succeed) is in flight, then replays the refusal."""
    tea = await make_merchant(db)
    member = await make_member(ledger)
    request = {"merchant_id": tea, "idempotency_key": key(), "member_id": member, "points": 30}
    request["reference"] = ref()
    rolled_back, go_on = asyncio.Event(), asyncio.Event()
    record_refusal = idempotency.record_refusal

    async def slow_record_refusal(*args: Any, **kwargs: Any) -> None:
        rolled_back.set()
        await go_on.wait()
        await record_refusal(*args, **kwargs)

    monkeypatch.setattr(idempotency, "record_refusal", slow_record_refusal)
    first = asyncio.create_task(ledger.redeem(**request))
    await asyncio.wait_for(rolled_back.wait(), 10)
    await issue(ledger, tea, member, 100)  # the retry would fit now
    outcomes = await asyncio.gather(
        *(ledger.redeem(**request) for _ in range(3)), return_exceptions=True
    )
    go_on.set()

    assert all(isinstance(outcome, IdempotencyKeyInFlight) for outcome in outcomes), outcomes
    with pytest.raises(InsufficientPoints) as refused:
        await first
    with pytest.raises(RefusalReplayed) as replayed:
        await ledger.redeem(**request)
    same_refusal(replayed.value, refused.value)
    assert (await ledger.balance(member_id=member))["available"] == 100


async def test_concurrent_requests_with_one_key_have_one_first_response(db, ledger):
    """Rounds of four requests with one key, racing an issuance that makes them fit: exactly one
    runs (refused or accepted), the others are in flight or replay it, and the key's record and
    the books agree with that one response."""
    tea = await make_merchant(db)
    for _ in range(12):
        member = await make_member(ledger)
        request = {"merchant_id": tea, "idempotency_key": key(), "member_id": member}
        request.update(points=30, reference=ref())
        outcomes = await asyncio.gather(
            *(ledger.redeem(**request) for _ in range(4)),
            issue(ledger, tea, member, 30),
            return_exceptions=True,
        )
        redemptions = outcomes[:4]
        assert not any(isinstance(o, BaseException) for o in outcomes[4:]), outcomes
        fresh = [
            outcome
            for outcome in redemptions
            if (isinstance(outcome, Outcome) and not outcome.replayed)
            or isinstance(outcome, InsufficientPoints)
        ]
        assert len(fresh) == 1, redemptions
        for outcome in redemptions:
            if isinstance(outcome, RefusalReplayed):
                assert isinstance(fresh[0], InsufficientPoints)
                same_refusal(outcome, fresh[0])
            elif isinstance(outcome, Outcome) and outcome.replayed:
                assert isinstance(fresh[0], Outcome)
                assert outcome.body == fresh[0].body
            else:
                assert outcome is fresh[0] or isinstance(outcome, IdempotencyKeyInFlight)
        [(refused, _)] = await records(db, tea, request["idempotency_key"])
        available = (await ledger.balance(member_id=member))["available"]
        if isinstance(fresh[0], InsufficientPoints):
            assert (refused, available) == (True, 30)
            with pytest.raises(RefusalReplayed):
                await ledger.redeem(**request)
        else:
            assert (refused, available) == (False, 0)
            assert (await ledger.redeem(**request)).replayed is True


# --- batches: set-based runs and one by one ---------------------------------------------------


async def test_issuance_refused_in_a_run_replays_in_a_later_run_and_alone(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    stranger = "mbr_" + "1" * 26
    refused_key, issued_key = key(), key()
    run = [
        IssueRequest(issued_key, member, 10, "a"),
        IssueRequest(refused_key, stranger, 10, "b"),
    ]
    first = await ledger.issue_many(merchant_id=tea, requests=run)
    assert first is not None
    issued, refusal = first
    assert isinstance(issued, Outcome)
    assert isinstance(refusal, NotFound)
    [(refused, _)] = await records(db, tea, refused_key)
    assert refused is True
    before = await snapshot(db, members=[member], merchants=[tea])

    again = await ledger.issue_many(merchant_id=tea, requests=list(reversed(run)))
    with pytest.raises(RefusalReplayed) as alone:
        await ledger.issue(
            merchant_id=tea,
            idempotency_key=refused_key,
            member_id=stranger,
            points=10,
            reference="b",
        )

    assert again is not None
    replayed_refusal, replayed_issue = again
    assert isinstance(replayed_refusal, RefusalReplayed)
    same_refusal(replayed_refusal, refusal)
    same_refusal(alone.value, refusal)
    assert isinstance(replayed_issue, Outcome)
    assert replayed_issue.replayed
    assert await snapshot(db, members=[member], merchants=[tea]) == before


async def test_refusal_of_one_by_one_issuance_replays_in_a_run(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    stranger = "mbr_" + "2" * 26
    refused_key = key()
    with pytest.raises(NotFound) as first:
        await ledger.issue(
            merchant_id=tea,
            idempotency_key=refused_key,
            member_id=stranger,
            points=5,
            reference="x",
        )

    results = await ledger.issue_many(
        merchant_id=tea,
        requests=[
            IssueRequest(refused_key, stranger, 5, "x"),
            IssueRequest(key(), member, 5, "y"),
            IssueRequest(key(), stranger, 6, "z"),
        ],
    )

    assert results is not None
    replayed, issued, refused = results
    assert isinstance(replayed, RefusalReplayed)
    same_refusal(replayed, first.value)
    assert isinstance(issued, Outcome)
    assert not issued.replayed
    assert isinstance(refused, NotFound)
    assert not isinstance(refused, RefusalReplayed)


async def test_run_and_single_issuance_race_on_one_key(db, ledger):
    """A run and a one-by-one issuance of the same refused key, at once: one runs and records
    the refusal, the other is in flight (the run gives up: None) or replays it."""
    tea = await make_merchant(db)
    member = await make_member(ledger)
    for _ in range(8):
        stranger = "mbr_" + key().replace("-", "").replace("_", "")[-26:]
        shared = key()
        run = [IssueRequest(key(), member, 1, "a"), IssueRequest(shared, stranger, 1, "b")]
        bulk, single = await asyncio.gather(
            ledger.issue_many(merchant_id=tea, requests=run),
            ledger.issue(
                merchant_id=tea,
                idempotency_key=shared,
                member_id=stranger,
                points=1,
                reference="b",
            ),
            return_exceptions=True,
        )
        outcomes = [single] if bulk is None else [single, bulk[1]]
        fresh = [
            o for o in outcomes if isinstance(o, NotFound) and not isinstance(o, RefusalReplayed)
        ]
        assert len(fresh) == 1, (bulk, single)
        for outcome in outcomes:
            assert outcome is fresh[0] or isinstance(
                outcome, RefusalReplayed | IdempotencyKeyInFlight
            ), outcomes
        [(refused, _)] = await records(db, tea, shared)
        assert refused is True
