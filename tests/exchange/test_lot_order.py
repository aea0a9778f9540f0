"""Lots are consumed soonest expiry first, then oldest issue, then lowest lot id; never last."""

from __future__ import annotations

from datetime import timedelta

from tests.exchange.helpers import (
    assert_books_balance,
    at,
    lots_of,
    obligations_of,
    remaining_by_issuer,
    use_settings,
)
from tests.factories import issue, make_member, make_merchant, redeem

DAY = timedelta(days=1)


async def test_redemption_consumes_soonest_expiry_first_across_issuers(db, ledger, clock):
    late, soon, middle, shop = [await make_merchant(db) for _ in range(4)]
    member = await make_member(ledger)
    now = clock.now()
    await issue(ledger, late, member, 10, expires_at=now + 30 * DAY)
    await issue(ledger, soon, member, 10, expires_at=now + 10 * DAY)
    await issue(ledger, middle, member, 10, expires_at=now + 20 * DAY)

    body = await redeem(ledger, shop, member, 15)

    assert await remaining_by_issuer(db, member) == {late: 10, soon: 0, middle: 5}
    debtors = {
        (o["debtor_id"], o["points"]) for o in await obligations_of(db, body["transaction_id"])
    }
    assert debtors == {(soon, 10), (middle, 5)}
    await assert_books_balance(db, [member])


async def test_redemption_consumes_oldest_issue_first_when_expiry_ties(db, ledger, clock):
    older, newer, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    start = clock.now()
    expires_at = start + 30 * DAY
    # The newer lot is written first, so it has the lower lot id: only the issue instant decides.
    clock.set(start + timedelta(hours=2))
    await issue(ledger, newer, member, 10, expires_at=expires_at)
    clock.set(start + timedelta(hours=1))
    await issue(ledger, older, member, 10, expires_at=expires_at)
    clock.set(start + timedelta(hours=3))
    lots = await lots_of(db, member)
    assert [lot["issuer_id"] for lot in lots] == [newer, older]

    body = await redeem(ledger, shop, member, 6)

    assert await remaining_by_issuer(db, member) == {older: 4, newer: 10}
    [obligation] = await obligations_of(db, body["transaction_id"])
    assert (obligation["debtor_id"], obligation["points"]) == (older, 6)


async def test_redemption_consumes_lowest_lot_id_first_when_expiry_and_issue_tie(db, ledger, clock):
    first, second, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    expires_at = clock.now() + 30 * DAY
    await issue(ledger, first, member, 10, expires_at=expires_at)
    await issue(ledger, second, member, 10, expires_at=expires_at)

    body = await redeem(ledger, shop, member, 12)

    assert await remaining_by_issuer(db, member) == {first: 0, second: 8}
    got = [(o["debtor_id"], o["points"]) for o in await obligations_of(db, body["transaction_id"])]
    assert sorted(got) == sorted([(first, 10), (second, 2)])


async def test_redemption_consumes_never_expiring_lots_last(db, ledger, clock):
    # Points never expire only under settings without a default lifetime: a year of its own.
    await use_settings(db, at(2039, 1, 1), points_lifetime_s=None)
    clock.set(at(2039, 1, 1, 0, 1))
    forever, dated, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    await issue(ledger, forever, member, 10)  # oldest issue, lowest lot id, no expiry
    clock.advance(timedelta(hours=1))
    await issue(ledger, dated, member, 10, expires_at=clock.now() + 3000 * DAY)
    lots = await lots_of(db, member)
    assert [(lot["issuer_id"], lot["expires_at"]) for lot in lots][0] == (forever, None)

    await redeem(ledger, shop, member, 6)
    assert await remaining_by_issuer(db, member) == {forever: 10, dated: 4}

    body = await redeem(ledger, shop, member, 7)
    assert await remaining_by_issuer(db, member) == {forever: 7, dated: 0}
    got = {(o["debtor_id"], o["points"]) for o in await obligations_of(db, body["transaction_id"])}
    assert got == {(forever, 3), (dated, 4)}
    await assert_books_balance(db, [member])


async def test_redemption_skips_expired_lots_even_before_the_expiry_job(db, ledger, clock):
    expired, live, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    await issue(ledger, expired, member, 10, expires_at=clock.now() + DAY)
    await issue(ledger, live, member, 10, expires_at=clock.now() + 5 * DAY)
    clock.advance(DAY)

    body = await redeem(ledger, shop, member, 10)

    assert await remaining_by_issuer(db, member) == {expired: 10, live: 0}
    [obligation] = await obligations_of(db, body["transaction_id"])
    assert obligation["debtor_id"] == live


async def test_consumption_walks_lots_one_by_one_in_the_fixed_order(db, ledger, clock):
    a, b, c, shop = [await make_merchant(db) for _ in range(4)]
    member = await make_member(ledger)
    start = clock.now()
    # (issuer, issue instant offset in hours, expiry offset in days), written in this order.
    plan = [(a, 5, 40), (b, 1, 20), (c, 3, 20), (a, 3, 20), (b, 0, 60), (c, 2, 10)]
    for issuer, hours, days in plan:
        clock.set(start + timedelta(hours=hours))
        await issue(ledger, issuer, member, 2, expires_at=start + days * DAY)
    clock.set(start + timedelta(hours=6))
    lots = {lot["lot_id"]: lot for lot in await lots_of(db, member)}
    ids = sorted(lots)
    # Expected order: c@10d; then the 20d lots by issue instant b@1h, then the two 3h lots by id
    # (c before a, as c was written first); then a@40d; then b@60d.
    expected = [ids[5], ids[1], ids[2], ids[3], ids[0], ids[4]]

    consumed = []
    for _ in range(len(expected)):
        before = {lot_id: lot["remaining_points"] for lot_id, lot in lots.items()}
        await redeem(ledger, shop, member, 2)
        lots = {lot["lot_id"]: lot for lot in await lots_of(db, member)}
        [changed] = [i for i in lots if lots[i]["remaining_points"] != before[i]]
        consumed.append(changed)

    assert consumed == expected
    await assert_books_balance(db, [member])


async def test_partial_lot_then_next_lot_in_one_redemption(db, ledger, clock):
    a, b, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    await issue(ledger, a, member, 7, expires_at=clock.now() + DAY)
    await issue(ledger, b, member, 7, expires_at=clock.now() + 2 * DAY)
    await redeem(ledger, shop, member, 3)

    body = await redeem(ledger, shop, member, 6)

    assert await remaining_by_issuer(db, member) == {a: 0, b: 5}
    got = {(o["debtor_id"], o["points"]) for o in await obligations_of(db, body["transaction_id"])}
    assert got == {(a, 4), (b, 2)}
    await assert_books_balance(db, [member])
