"""Holds reserve points; capture (all or part, the rest released), void, or lapse at expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import NotFound, ValidationFailed
from core.limits import HOLD_LIFETIME_S_MAX
from exchange.errors import HoldNotActive, InsufficientPoints
from tests.exchange.helpers import (
    assert_books_balance,
    key,
    lots_of,
    obligations_of,
    ref,
    snapshot,
)
from tests.factories import issue, make_member, make_merchant, redeem

HOLD_LIFETIME = timedelta(seconds=900)


async def hold(ledger, merchant_id, member_id, points, **extra):
    outcome = await ledger.hold(
        merchant_id=merchant_id,
        idempotency_key=key(),
        member_id=member_id,
        points=points,
        reference=ref(),
        **extra,
    )
    return outcome.body


async def capture(ledger, merchant_id, hold_id, points=None):
    outcome = await ledger.capture(
        merchant_id=merchant_id, idempotency_key=key(), hold_id=hold_id, points=points
    )
    return outcome.body


async def void(ledger, merchant_id, hold_id):
    return (await ledger.void(merchant_id=merchant_id, idempotency_key=key(), hold_id=hold_id)).body


async def funded(db, ledger, points=100):
    """A merchant, an acceptor, and a member holding `points` of the first's points."""
    issuer, acceptor = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, issuer, member, points)
    return issuer, acceptor, member


async def test_hold_reserves_points_as_held_not_available(db, ledger, clock):
    issuer, acceptor, member = await funded(db, ledger)

    body = await hold(ledger, acceptor, member, 30)

    assert body["status"] == "active"
    assert body["points"] == 30
    assert body["merchant_id"] == acceptor
    assert body["expires_at"] == "2026-06-01T12:15:00.000000Z"  # default hold lifetime, 900 s
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (70, 30)
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 100  # a hold moves no point until it is captured


async def test_hold_with_its_own_lifetime(db, ledger, clock):
    _, acceptor, member = await funded(db, ledger)

    body = await hold(ledger, acceptor, member, 10, expires_in_seconds=60)

    assert body["expires_at"] == "2026-06-01T12:01:00.000000Z"


@pytest.mark.parametrize("seconds", [0, -1, HOLD_LIFETIME_S_MAX + 1, True])
async def test_hold_refuses_a_lifetime_out_of_range(db, ledger, seconds):
    _, acceptor, member = await funded(db, ledger)
    before = await snapshot(db, members=[member], merchants=[acceptor])

    with pytest.raises(ValidationFailed):
        await hold(ledger, acceptor, member, 10, expires_in_seconds=seconds)

    assert await snapshot(db, members=[member], merchants=[acceptor]) == before


async def test_hold_refused_whole_when_it_does_not_fit_and_nothing_changes(db, ledger):
    _, acceptor, member = await funded(db, ledger)
    await hold(ledger, acceptor, member, 60)
    before = await snapshot(db, members=[member], merchants=[acceptor])

    with pytest.raises(InsufficientPoints) as refused:
        await hold(ledger, acceptor, member, 41)

    assert refused.value.extra == {"available": 40}
    assert await snapshot(db, members=[member], merchants=[acceptor]) == before


async def test_held_points_are_not_available_to_any_other_merchant(db, ledger):
    issuer, acceptor, member = await funded(db, ledger)
    other = await make_merchant(db)
    await hold(ledger, acceptor, member, 90)

    for merchant in (issuer, acceptor, other):
        with pytest.raises(InsufficientPoints):
            await redeem(ledger, merchant, member, 11)
        with pytest.raises(InsufficientPoints):
            await hold(ledger, merchant, member, 11)

    assert (await redeem(ledger, other, member, 10))["balance_after"] == 0


async def test_capture_all_redeems_the_held_points(db, ledger):
    issuer, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)

    body = await capture(ledger, acceptor, held["hold_id"])

    assert body["kind"] == "redemption"
    assert body["points"] == 40
    assert body["hold_id"] == held["hold_id"]
    assert body["merchant_id"] == acceptor
    assert body["balance_after"] == 60
    assert body["reference"] == held["reference"]
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (60, 0)
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 60
    [obligation] = await obligations_of(db, body["transaction_id"])
    assert (obligation["debtor_id"], obligation["creditor_id"]) == (issuer, acceptor)
    assert (obligation["points"], obligation["gross_value"], obligation["fee"]) == (40, 40, 2)
    async with db.connection() as conn:
        row = await conn.fetchrow(
            """SELECT status, captured_points, capture_transaction_id FROM holds
               WHERE hold_id = $1""",
            held["hold_id"],
        )
    assert dict(row) == {
        "status": "captured",
        "captured_points": 40,
        "capture_transaction_id": body["transaction_id"],
    }
    await assert_books_balance(db, [member])


async def test_capture_part_releases_the_rest(db, ledger):
    _, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)

    body = await capture(ledger, acceptor, held["hold_id"], points=25)

    assert body["points"] == 25
    assert body["balance_after"] == 75
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (75, 0)
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 75
    await assert_books_balance(db, [member])


async def test_capture_of_more_than_held_is_refused_and_the_hold_stays(db, ledger):
    _, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)
    before = await snapshot(db, members=[member], merchants=[acceptor])

    with pytest.raises(InsufficientPoints):
        await capture(ledger, acceptor, held["hold_id"], points=41)
    with pytest.raises(ValidationFailed):
        await capture(ledger, acceptor, held["hold_id"], points=0)

    assert await snapshot(db, members=[member], merchants=[acceptor]) == before
    assert (await capture(ledger, acceptor, held["hold_id"], points=40))["points"] == 40


async def test_void_releases_the_held_points(db, ledger):
    _, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)

    body = await void(ledger, acceptor, held["hold_id"])

    assert body["status"] == "voided"
    assert body["hold_id"] == held["hold_id"]
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (100, 0)
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 100
    async with db.connection() as conn:
        transactions = await conn.fetchval(
            "SELECT count(*) FROM transactions WHERE merchant_id = $1", acceptor
        )
    assert transactions == 0


@pytest.mark.parametrize("first", ["capture", "void"])
@pytest.mark.parametrize("then", ["capture", "void"])
async def test_closed_hold_cannot_be_captured_or_voided_again(db, ledger, first, then):
    _, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)
    closers = {
        "capture": lambda: capture(ledger, acceptor, held["hold_id"]),
        "void": lambda: void(ledger, acceptor, held["hold_id"]),
    }
    await closers[first]()
    before = await snapshot(db, members=[member], merchants=[acceptor])

    with pytest.raises(HoldNotActive) as refused:
        await closers[then]()

    expected = {"capture": "captured", "void": "voided"}[first]
    assert refused.value.extra == {"hold_status": expected}
    assert await snapshot(db, members=[member], merchants=[acceptor]) == before


async def test_hold_lapses_at_its_expiry_without_any_job(db, ledger, clock):
    _, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)

    clock.advance(HOLD_LIFETIME - timedelta(microseconds=1))
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (60, 40)

    clock.advance(timedelta(microseconds=1))
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (100, 0)
    before = await snapshot(db, members=[member], merchants=[acceptor])
    for close in (capture, void):
        with pytest.raises(HoldNotActive) as refused:
            await close(ledger, acceptor, held["hold_id"])
        assert refused.value.extra == {"hold_status": "lapsed"}
    assert await snapshot(db, members=[member], merchants=[acceptor]) == before
    assert (await redeem(ledger, acceptor, member, 100))["balance_after"] == 0


async def test_lapsed_hold_stays_lapsed_after_the_expiry_job(db, ledger, clock):
    _, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)
    clock.advance(HOLD_LIFETIME)
    await ledger.expire()

    with pytest.raises(HoldNotActive) as refused:
        await capture(ledger, acceptor, held["hold_id"])

    assert refused.value.extra == {"hold_status": "lapsed"}
    assert (await ledger.balance(member_id=member))["available"] == 100


async def test_hold_of_another_merchant_is_not_found(db, ledger):
    issuer, acceptor, member = await funded(db, ledger)
    held = await hold(ledger, acceptor, member, 40)
    before = await snapshot(db, members=[member], merchants=[issuer, acceptor])

    with pytest.raises(NotFound):
        await capture(ledger, issuer, held["hold_id"])
    with pytest.raises(NotFound):
        await void(ledger, issuer, held["hold_id"])

    assert await snapshot(db, members=[member], merchants=[issuer, acceptor]) == before
    assert (await capture(ledger, acceptor, held["hold_id"]))["points"] == 40


async def test_unknown_hold_is_not_found(db, ledger):
    acceptor = await make_merchant(db)
    with pytest.raises(NotFound):
        await capture(ledger, acceptor, "hld_nothing")
    with pytest.raises(NotFound):
        await void(ledger, acceptor, "hld_nothing")


async def test_capture_consumes_lots_in_the_fixed_order(db, ledger, clock):
    late, soon, acceptor = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    await issue(ledger, late, member, 50, expires_at=clock.now() + timedelta(days=30))
    await issue(ledger, soon, member, 50, expires_at=clock.now() + timedelta(days=3))
    held = await hold(ledger, acceptor, member, 70)

    body = await capture(ledger, acceptor, held["hold_id"])

    got = {(o["debtor_id"], o["points"]) for o in await obligations_of(db, body["transaction_id"])}
    assert got == {(soon, 50), (late, 20)}
    await assert_books_balance(db, [member])


async def test_two_holds_and_a_redemption_share_the_balance_exactly(db, ledger):
    _, acceptor, member = await funded(db, ledger)
    first = await hold(ledger, acceptor, member, 30)
    second = await hold(ledger, acceptor, member, 50)
    await redeem(ledger, acceptor, member, 20)

    with pytest.raises(InsufficientPoints):
        await hold(ledger, acceptor, member, 1)
    await capture(ledger, acceptor, first["hold_id"], points=10)
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (20, 50)
    await capture(ledger, acceptor, second["hold_id"])
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (20, 0)
    await assert_books_balance(db, [member])
