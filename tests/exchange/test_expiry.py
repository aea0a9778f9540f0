"""Expiry: points are unavailable from the instant of expiry; the job writes them off (breakage).

The expiry job is alliance-wide: it also writes off what other tests left to expire, so these
tests look only at their own members and issuers, never at global totals.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from exchange.errors import InsufficientPoints
from tests.exchange.helpers import (
    assert_books_balance,
    key,
    lots_of,
    make_currency,
    measured,
    postings_of,
    ref,
    snapshot,
    transactions_of,
)
from tests.factories import issue, make_member, make_merchant, redeem

DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)


async def test_points_available_until_just_before_the_expiry_instant(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    expires_at = clock.now() + DAY
    await issue(ledger, tea, member, 100, expires_at=expires_at)
    clock.set(expires_at - TICK)

    balance = await ledger.balance(member_id=member)

    assert balance["available"] == 100
    assert balance["next_expiry"] == {"points": 100, "at": "2026-06-02T12:00:00.000000Z"}
    assert (await redeem(ledger, tea, member, 100))["balance_after"] == 0


async def test_points_unavailable_at_the_exact_expiry_instant_before_the_job(db, ledger, clock):
    tea = await make_merchant(db)
    shop = await make_merchant(db)
    member = await make_member(ledger)
    expires_at = clock.now() + DAY
    await issue(ledger, tea, member, 100, expires_at=expires_at)
    clock.set(expires_at)
    before = await snapshot(db, members=[member], merchants=[tea, shop])

    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"], balance["next_expiry"]) == (0, 0, None)
    with pytest.raises(InsufficientPoints):
        await redeem(ledger, shop, member, 1)
    with pytest.raises(InsufficientPoints):
        await ledger.hold(
            merchant_id=shop, idempotency_key=key(), member_id=member, points=1, reference=ref()
        )

    assert await snapshot(db, members=[member], merchants=[tea, shop]) == before
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 100  # not yet written off: unavailable all the same


async def test_expired_points_do_not_count_but_live_ones_do(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 30, expires_at=clock.now() + DAY)
    await issue(ledger, tea, member, 20, expires_at=clock.now() + 2 * DAY)
    clock.advance(DAY)

    balance = await ledger.balance(member_id=member)

    assert balance["available"] == 20
    assert balance["next_expiry"] == {"points": 20, "at": "2026-06-03T12:00:00.000000Z"}
    with pytest.raises(InsufficientPoints) as refused:
        await redeem(ledger, tea, member, 21)
    assert refused.value.extra == {"available": 20}


async def test_expire_writes_off_expired_lots_with_an_expiry_transaction(db, ledger, clock):
    first, second, later, shop = [await make_merchant(db) for _ in range(4)]
    member = await make_member(ledger)
    expires_at = clock.now() + DAY
    await issue(ledger, first, member, 30, expires_at=expires_at)
    await issue(ledger, second, member, 20, expires_at=expires_at)
    await issue(ledger, later, member, 50, expires_at=expires_at + 10 * DAY)
    await redeem(ledger, shop, member, 10)  # from `first`: same expiry, issued first
    clock.set(expires_at)

    report = await ledger.expire()

    assert report.breakage_by_issuer[(first, "AP")] == 20
    assert report.breakage_by_issuer[(second, "AP")] == 20
    assert (later, "AP") not in report.breakage_by_issuer
    expiries = [t for t in await transactions_of(db, member) if t["kind"] == "expiry"]
    assert len(expiries) == 1
    [written_off] = expiries
    assert written_off["merchant_id"] is None
    assert written_off["points"] == 40
    assert written_off["created_at"] == expires_at
    assert written_off["balance_after"] == 50
    lots = {lot["issuer_id"]: lot for lot in await lots_of(db, member)}
    assert lots[first]["remaining_points"] == 0
    assert lots[second]["remaining_points"] == 0
    assert lots[later]["remaining_points"] == 50
    postings = await postings_of(db, written_off["transaction_id"])
    assert sorted((p["account"], p["amount"]) for p in postings) == sorted(
        [
            (f"member:{member}", -20),
            (f"issuer:{first}", 20),
            (f"member:{member}", -20),
            (f"issuer:{second}", 20),
        ]
    )
    balance = await ledger.balance(member_id=member)
    assert balance["available"] == 50
    async with db.connection() as conn:
        obligations = await conn.fetchval(
            "SELECT count(*) FROM obligations WHERE transaction_id = $1",
            written_off["transaction_id"],
        )
    assert obligations == 0
    await assert_books_balance(db, [member])


async def test_expire_reports_breakage_by_issuer_across_members(db, ledger, clock):
    tea, books = await make_merchant(db), await make_merchant(db)
    members = [await make_member(ledger) for _ in range(3)]
    expires_at = clock.now() + DAY
    for index, member in enumerate(members):
        await issue(ledger, tea, member, 10 + index, expires_at=expires_at)
        await issue(ledger, books, member, 5, expires_at=expires_at)
    clock.set(expires_at + timedelta(minutes=1))
    progress: list[tuple[int, int]] = []

    report = await ledger.expire(on_progress=lambda done, points: progress.append((done, points)))

    assert report.breakage_by_issuer[(tea, "AP")] == 10 + 11 + 12
    assert report.breakage_by_issuer[(books, "AP")] == 15
    assert report.members >= 3
    assert report.points >= 48
    assert progress
    assert progress[-1] == (report.members, report.points)
    for member in members:
        assert (await ledger.balance(member_id=member))["available"] == 0
    await assert_books_balance(db, members)


async def test_expire_twice_changes_nothing_the_second_time(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 25, expires_at=clock.now() + DAY)
    await issue(ledger, tea, member, 25, expires_at=clock.now() + 9 * DAY)
    clock.advance(2 * DAY)
    first = await ledger.expire()
    assert first.breakage_by_issuer[(tea, "AP")] == 25
    after_first = await snapshot(db, members=[member], merchants=[tea])

    second = await ledger.expire()

    assert (second.members, second.lots, second.points) == (0, 0, 0)
    assert second.breakage_by_issuer == {}
    assert await snapshot(db, members=[member], merchants=[tea]) == after_first
    assert (await ledger.balance(member_id=member))["available"] == 25


async def test_expire_ends_the_issuers_liability(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 40, expires_at=clock.now() + DAY)
    await issue(ledger, tea, member, 60, expires_at=clock.now() + 3 * DAY)

    async def outstanding() -> int:
        return (await measured(db, clock, tea)).outstanding_points

    async def issuer_account() -> int:
        async with db.connection() as conn:
            total: int = await conn.fetchval(
                "SELECT coalesce(sum(amount), 0) FROM postings WHERE account = $1",
                f"issuer:{tea}",
            )
        return total

    assert (await outstanding(), await issuer_account()) == (100, -100)
    clock.advance(DAY)
    assert await outstanding() == 60  # from the instant of expiry, job or no job
    await ledger.expire()
    assert (await outstanding(), await issuer_account()) == (60, -60)


async def test_expire_writes_off_each_point_currency_separately(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    code = await make_currency(db, tea, to_own=Decimal(2), to_ap=Decimal("0.5"))
    expires_at = clock.now() + DAY
    await issue(ledger, tea, member, 10, expires_at=expires_at)
    await issue(ledger, tea, member, 7, expires_at=expires_at, currency=code)
    clock.set(expires_at)

    report = await ledger.expire()

    assert report.breakage_by_issuer[(tea, "AP")] == 10
    assert report.breakage_by_issuer[(tea, code)] == 7
    expiries = [t for t in await transactions_of(db, member) if t["kind"] == "expiry"]
    assert sorted((t["currency"], t["points"]) for t in expiries) == sorted([("AP", 10), (code, 7)])
    assert (await ledger.balance(member_id=member, currency=code))["available"] == 0
    await assert_books_balance(db, [member])


async def test_expire_closes_lapsed_holds_which_already_reserved_nothing(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 50)
    held = await ledger.hold(
        merchant_id=tea, idempotency_key=key(), member_id=member, points=20, reference=ref()
    )
    clock.advance(timedelta(seconds=900))
    assert (await ledger.balance(member_id=member))["available"] == 50

    report = await ledger.expire()

    assert report.holds_lapsed >= 1
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT status, closed_at, expires_at FROM holds WHERE hold_id = $1",
            held.body["hold_id"],
        )
    assert row["status"] == "lapsed"
    assert row["closed_at"] == row["expires_at"]
    assert (await ledger.balance(member_id=member))["available"] == 50


async def test_available_balance_never_negative_when_held_points_expire(db, ledger, clock):
    """A hold reserves points of lots; when those lots expire the member has none left.

    "Never below zero" (DOMAIN.md): the available balance bottoms out at zero and the hold can no
    longer be captured, rather than the balance reading as minus the held points.
    """
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100, expires_at=clock.now() + timedelta(minutes=5))
    held = await ledger.hold(
        merchant_id=tea, idempotency_key=key(), member_id=member, points=60, reference=ref()
    )
    clock.advance(timedelta(minutes=5))

    balance = await ledger.balance(member_id=member)

    assert balance["available"] == 0
    with pytest.raises(InsufficientPoints):
        await ledger.capture(merchant_id=tea, idempotency_key=key(), hold_id=held.body["hold_id"])
