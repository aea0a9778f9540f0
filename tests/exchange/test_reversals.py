"""Reversals (refunds) of issuances and redemptions, in full or in parts, never beyond the original.

Policy under test (exchange/refund.py, DOMAIN.md): an issuance reversal takes back only what is
left of the issuance's own lot and not held; the rest is the issuer's shortfall
(`shortfall_points`), and no point is created or lost. A redemption reversal gives the member back
the very lots it consumed, with their original expiry, and cancels its obligations.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from core.errors import NotFound, ValidationFailed
from exchange.errors import InsufficientPoints, ReversalExceedsOriginal
from tests.exchange.helpers import (
    assert_books_balance,
    at,
    key,
    lots_of,
    make_currency,
    obligations_between,
    obligations_of,
    postings_of,
    ref,
    remaining_by_issuer,
    snapshot,
    use_settings,
)
from tests.factories import issue, make_member, make_merchant, redeem

DAY = timedelta(days=1)


async def reverse(ledger, merchant_id, transaction_id, points=None):
    outcome = await ledger.reverse(
        merchant_id=merchant_id,
        idempotency_key=key(),
        transaction_id=transaction_id,
        reference=ref(),
        points=points,
    )
    return outcome.body


# --- issuances -------------------------------------------------------------------------------


async def test_full_reversal_of_an_issuance_takes_the_points_back(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)

    body = await reverse(ledger, tea, issued["transaction_id"])

    assert body["kind"] == "reversal"
    assert body["reverses"] == issued["transaction_id"]
    assert (body["points"], body["requested_points"], body["shortfall_points"]) == (100, 100, 0)
    assert body["balance_after"] == 0
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 0
    assert await postings_of(db, body["transaction_id"]) == [
        {"account": f"member:{member}", "currency": "AP", "amount": -100, "lot_id": lot["lot_id"]},
        {"account": f"issuer:{tea}", "currency": "AP", "amount": 100, "lot_id": None},
    ]
    await assert_books_balance(db, [member])


async def test_partial_reversals_of_an_issuance_then_the_rest(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)

    first = await reverse(ledger, tea, issued["transaction_id"], points=30)
    second = await reverse(ledger, tea, issued["transaction_id"], points=25)
    rest = await reverse(ledger, tea, issued["transaction_id"])

    assert [first["points"], second["points"], rest["points"]] == [30, 25, 45]
    assert [first["balance_after"], second["balance_after"], rest["balance_after"]] == [70, 45, 0]
    with pytest.raises(ReversalExceedsOriginal):
        await reverse(ledger, tea, issued["transaction_id"], points=1)
    await assert_books_balance(db, [member])


async def test_issuance_reversal_after_the_points_were_spent_records_the_shortfall(db, ledger):
    tea, books = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    redeemed = await redeem(ledger, books, member, 70)

    body = await reverse(ledger, tea, issued["transaction_id"])

    assert (body["points"], body["requested_points"], body["shortfall_points"]) == (30, 100, 70)
    assert body["balance_after"] == 0
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 0
    # The spent points stay spent: the obligation for them stands, uncancelled.
    [obligation] = await obligations_of(db, redeemed["transaction_id"])
    assert (obligation["debtor_id"], obligation["points"]) == (tea, 70)
    assert await obligations_between(db, tea, books) == {
        "points": 70,
        "gross_value": 70,
        "fee": 4,
        "rows": 1,
    }
    # No point created or lost: issued = redeemed + taken back + what the member still has.
    assert 100 == 70 + body["points"] + (await ledger.balance(member_id=member))["available"]
    with pytest.raises(ReversalExceedsOriginal):
        await reverse(ledger, tea, issued["transaction_id"], points=1)
    await assert_books_balance(db, [member])


async def test_issuance_reversals_in_parts_take_what_is_left_and_count_the_shortfall(db, ledger):
    tea, books = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    await redeem(ledger, books, member, 70)

    first = await reverse(ledger, tea, issued["transaction_id"], points=20)
    second = await reverse(ledger, tea, issued["transaction_id"], points=50)
    third = await reverse(ledger, tea, issued["transaction_id"], points=30)

    assert [(r["points"], r["shortfall_points"]) for r in (first, second, third)] == [
        (20, 0),
        (10, 40),
        (0, 30),
    ]
    assert sum(r["requested_points"] for r in (first, second, third)) == 100
    balance = await ledger.balance(member_id=member)
    assert balance["available"] == 0
    with pytest.raises(ReversalExceedsOriginal):
        await reverse(ledger, tea, issued["transaction_id"], points=1)
    await assert_books_balance(db, [member])


async def test_issuance_reversal_takes_only_from_its_own_lot(db, ledger):
    tea, books, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 50)
    await issue(ledger, books, member, 50)
    await redeem(ledger, shop, member, 60)  # tea's lot first (issued first): tea 0, books 40

    body = await reverse(ledger, tea, issued["transaction_id"])

    assert (body["points"], body["shortfall_points"]) == (0, 50)
    assert await remaining_by_issuer(db, member) == {tea: 0, books: 40}
    assert (await ledger.balance(member_id=member))["available"] == 40
    await assert_books_balance(db, [member])


async def test_issuance_reversal_never_takes_held_points(db, ledger):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    held = await ledger.hold(
        merchant_id=shop, idempotency_key=key(), member_id=member, points=80, reference=ref()
    )

    body = await reverse(ledger, tea, issued["transaction_id"])

    assert (body["points"], body["shortfall_points"]) == (20, 80)
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (0, 80)
    captured = await ledger.capture(
        merchant_id=shop, idempotency_key=key(), hold_id=held.body["hold_id"]
    )
    assert captured.body["points"] == 80
    assert (await ledger.balance(member_id=member))["available"] == 0
    await assert_books_balance(db, [member])


# --- redemptions -----------------------------------------------------------------------------


async def test_reversal_of_a_redemption_gives_back_the_very_lots_with_their_expiry(
    db, ledger, clock
):
    a, b, shop, later = [await make_merchant(db) for _ in range(4)]
    member = await make_member(ledger)
    await issue(ledger, a, member, 10, expires_at=clock.now() + 10 * DAY)
    await issue(ledger, b, member, 20, expires_at=clock.now() + 20 * DAY)
    redeemed = await redeem(ledger, shop, member, 15)
    clock.advance(DAY)
    await issue(ledger, later, member, 5)
    lots_before = await lots_of(db, member)

    body = await reverse(ledger, shop, redeemed["transaction_id"])

    assert (body["points"], body["reverses"], body["balance_after"]) == (
        15,
        redeemed["transaction_id"],
        35,
    )
    lots_after = await lots_of(db, member)
    assert len(lots_after) == len(lots_before)  # no new lot: the very lots come back
    for before, after in zip(lots_before, lots_after, strict=True):
        assert (after["lot_id"], after["issuer_id"], after["expires_at"]) == (
            before["lot_id"],
            before["issuer_id"],
            before["expires_at"],
        )
    assert [lot["remaining_points"] for lot in lots_after] == [10, 20, 5]
    await assert_books_balance(db, [member])


async def test_reversal_of_a_redemption_cancels_its_obligations(db, ledger):
    a, b, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    await issue(ledger, a, member, 30)
    await issue(ledger, b, member, 50)
    await issue(ledger, shop, member, 20)
    redeemed = await redeem(ledger, shop, member, 100)
    originals = await obligations_of(db, redeemed["transaction_id"])
    assert {(o["debtor_id"], o["points"], o["gross_value"], o["fee"]) for o in originals} == {
        (a, 30, 30, 2),
        (b, 50, 50, 2),
    }

    body = await reverse(ledger, shop, redeemed["transaction_id"])

    cancellations = await obligations_of(db, body["transaction_id"])
    by_original = {o["reverses_obligation_id"]: o for o in cancellations}
    assert set(by_original) == {o["obligation_id"] for o in originals}
    for original in originals:
        cancel = by_original[original["obligation_id"]]
        assert (cancel["debtor_id"], cancel["creditor_id"]) == (original["debtor_id"], shop)
        assert (cancel["points"], cancel["gross_value"], cancel["fee"]) == (
            -original["points"],
            -original["gross_value"],
            -original["fee"],
        )
    for debtor in (a, b):
        totals = await obligations_between(db, debtor, shop)
        assert (totals["points"], totals["gross_value"], totals["fee"]) == (0, 0, 0)
    assert body["settlement_value"] == -redeemed["settlement_value"]
    assert await remaining_by_issuer(db, member) == {a: 30, b: 50, shop: 20}
    await assert_books_balance(db, [member])


async def test_partial_reversal_of_a_redemption_restores_the_last_consumed_lot_first(
    db, ledger, clock
):
    a, b, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    await issue(ledger, a, member, 10, expires_at=clock.now() + 10 * DAY)
    await issue(ledger, b, member, 10, expires_at=clock.now() + 20 * DAY)
    redeemed = await redeem(ledger, shop, member, 15)  # a 10, then b 5

    await reverse(ledger, shop, redeemed["transaction_id"], points=4)
    assert await remaining_by_issuer(db, member) == {a: 0, b: 9}
    await reverse(ledger, shop, redeemed["transaction_id"], points=3)
    assert await remaining_by_issuer(db, member) == {a: 2, b: 10}
    assert await obligations_between(db, a, shop) == {
        "points": 8,
        "gross_value": 8,
        "fee": 0,
        "rows": 2,
    }
    await reverse(ledger, shop, redeemed["transaction_id"])
    assert await remaining_by_issuer(db, member) == {a: 10, b: 10}
    for debtor in (a, b):
        totals = await obligations_between(db, debtor, shop)
        assert (totals["points"], totals["gross_value"], totals["fee"]) == (0, 0, 0)
    await assert_books_balance(db, [member])


async def test_partial_reversals_add_up_to_exactly_the_original_gross_and_fee(db, ledger, clock):
    # 3 points at 2.5 minor units = 7.5 -> 8 (half-even); fee 30% of 8 = 2.4 -> 2.
    await use_settings(db, at(2039, 2, 1), point_value=Decimal("2.5"), fee_rate=Decimal("0.3"))
    clock.set(at(2039, 2, 1, 0, 1))
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 3)
    redeemed = await redeem(ledger, shop, member, 3)
    [original] = await obligations_of(db, redeemed["transaction_id"])
    assert (original["points"], original["gross_value"], original["fee"]) == (3, 8, 2)
    assert redeemed["settlement_value"] == 6

    parts = [await reverse(ledger, shop, redeemed["transaction_id"], points=1) for _ in range(3)]

    cancels = [(await obligations_of(db, part["transaction_id"]))[0] for part in parts]
    # Cumulative rounding: 1/3 of 8 = 2.67 -> 3, 2/3 = 5.33 -> 5, 3/3 = 8;
    # fee 2/3 = 0.67 -> 1, 4/3 = 1.33 -> 1, 2.
    assert [(c["points"], c["gross_value"], c["fee"]) for c in cancels] == [
        (-1, -3, -1),
        (-1, -2, 0),
        (-1, -3, -1),
    ]
    assert sum(c["gross_value"] for c in cancels) == -original["gross_value"]
    assert sum(c["fee"] for c in cancels) == -original["fee"]
    assert sum(part["settlement_value"] for part in parts) == -redeemed["settlement_value"]
    totals = await obligations_between(db, tea, shop)
    assert (totals["points"], totals["gross_value"], totals["fee"]) == (0, 0, 0)
    with pytest.raises(ReversalExceedsOriginal):
        await reverse(ledger, shop, redeemed["transaction_id"], points=1)
    await assert_books_balance(db, [member])


@pytest.mark.parametrize("parts", [[10, 10, 10], [1, 1, 28], [7, 13, 9, 1], [29, 1]])
async def test_partial_reversals_in_any_split_cancel_exactly_the_fee(db, ledger, parts):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 30)
    redeemed = await redeem(ledger, shop, member, 30)  # gross 30, fee 1.5 -> 2

    for points in parts:
        await reverse(ledger, shop, redeemed["transaction_id"], points=points)

    assert await obligations_between(db, tea, shop) == {
        "points": 0,
        "gross_value": 0,
        "fee": 0,
        "rows": 1 + len(parts),
    }
    await assert_books_balance(db, [member])


async def test_partial_reversals_across_several_issuers_cancel_exactly(db, ledger, clock):
    a, b, c, shop = [await make_merchant(db) for _ in range(4)]
    member = await make_member(ledger)
    for issuer, points, days in ((a, 13, 5), (b, 11, 6), (shop, 4, 7), (c, 9, 8)):
        await issue(ledger, issuer, member, points, expires_at=clock.now() + days * DAY)
    redeemed = await redeem(ledger, shop, member, 37)

    for points in (5, 11, 1, 20):
        await reverse(ledger, shop, redeemed["transaction_id"], points=points)

    for debtor in (a, b, c):
        totals = await obligations_between(db, debtor, shop)
        assert (totals["points"], totals["gross_value"], totals["fee"]) == (0, 0, 0)
    assert await remaining_by_issuer(db, member) == {a: 13, b: 11, shop: 4, c: 9}
    await assert_books_balance(db, [member])


async def test_reversal_of_a_redemption_of_own_points_makes_no_obligation(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 40)
    redeemed = await redeem(ledger, tea, member, 40)

    body = await reverse(ledger, tea, redeemed["transaction_id"])

    assert await obligations_of(db, body["transaction_id"]) == []
    assert body["settlement_value"] == 0
    assert body["balance_after"] == 40


async def test_reversal_of_a_captured_hold_gives_the_points_back(db, ledger):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 50)
    held = await ledger.hold(
        merchant_id=shop, idempotency_key=key(), member_id=member, points=30, reference=ref()
    )
    captured = await ledger.capture(
        merchant_id=shop, idempotency_key=key(), hold_id=held.body["hold_id"], points=20
    )

    body = await reverse(ledger, shop, captured.body["transaction_id"])

    assert body["balance_after"] == 50
    totals = await obligations_between(db, tea, shop)
    assert (totals["points"], totals["gross_value"], totals["fee"]) == (0, 0, 0)
    await assert_books_balance(db, [member])


async def test_redemption_reversal_after_expiry_gives_back_points_that_stay_expired(
    db, ledger, clock
):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    expires_at = clock.now() + DAY
    await issue(ledger, tea, member, 40, expires_at=expires_at)
    redeemed = await redeem(ledger, shop, member, 30)
    clock.set(expires_at + DAY)
    await ledger.expire()

    body = await reverse(ledger, shop, redeemed["transaction_id"])

    assert body["points"] == 30
    assert body["balance_after"] == 0  # the lot's original expiry still applies
    [lot] = await lots_of(db, member)
    assert (lot["remaining_points"], lot["expires_at"]) == (30, expires_at)
    with pytest.raises(InsufficientPoints):
        await redeem(ledger, shop, member, 1)
    report = await ledger.expire()
    assert report.breakage_by_issuer[(tea, "AP")] == 30
    await assert_books_balance(db, [member])


# --- limits and scope ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["issuance", "redemption"])
async def test_reversal_beyond_the_original_in_one_go_is_refused(db, ledger, kind):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    redeemed = await redeem(ledger, shop, member, 40)
    merchant, original = (tea, issued) if kind == "issuance" else (shop, redeemed)
    before = await snapshot(db, members=[member], merchants=[tea, shop])

    with pytest.raises(ReversalExceedsOriginal) as refused:
        await reverse(ledger, merchant, original["transaction_id"], points=original["points"] + 1)

    assert refused.value.code == "reversal_exceeds_original"
    assert await snapshot(db, members=[member], merchants=[tea, shop]) == before


@pytest.mark.parametrize("kind", ["issuance", "redemption"])
async def test_many_partial_reversals_never_add_up_to_more_than_the_original(db, ledger, kind):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    redeemed = await redeem(ledger, shop, member, 30)
    merchant, original = (tea, issued) if kind == "issuance" else (shop, redeemed)
    total = original["points"]

    done = 0
    while done + 7 <= total:
        await reverse(ledger, merchant, original["transaction_id"], points=7)
        done += 7
    before = await snapshot(db, members=[member], merchants=[tea, shop])
    with pytest.raises(ReversalExceedsOriginal) as refused:
        await reverse(ledger, merchant, original["transaction_id"], points=7)
    assert refused.value.extra == {"reversed_points": done, "original_points": total}
    assert await snapshot(db, members=[member], merchants=[tea, shop]) == before

    await reverse(ledger, merchant, original["transaction_id"], points=total - done)
    for points in (None, 1):
        with pytest.raises(ReversalExceedsOriginal):
            await reverse(ledger, merchant, original["transaction_id"], points=points)
    await assert_books_balance(db, [member])


async def test_reversal_of_another_merchants_transaction_is_not_found(db, ledger):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)
    redeemed = await redeem(ledger, shop, member, 40)
    before = await snapshot(db, members=[member], merchants=[tea, shop])

    with pytest.raises(NotFound):
        await reverse(ledger, shop, issued["transaction_id"])
    with pytest.raises(NotFound):
        await reverse(ledger, tea, redeemed["transaction_id"])
    with pytest.raises(NotFound):
        await reverse(ledger, tea, "txn_nothing")

    assert await snapshot(db, members=[member], merchants=[tea, shop]) == before


async def test_reversal_of_a_reversal_an_expiry_or_a_conversion_is_refused(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    code = await make_currency(db, tea, to_own=Decimal(1), to_ap=Decimal(1))
    issued = await issue(ledger, tea, member, 100, expires_at=clock.now() + DAY)
    reversal = await reverse(ledger, tea, issued["transaction_id"], points=10)
    converted = await ledger.convert(
        merchant_id=tea,
        idempotency_key=key(),
        member_id=member,
        points=10,
        source_currency="AP",
        target_currency=code,
        reference=ref(),
    )
    clock.advance(DAY)
    await ledger.expire()
    async with db.connection() as conn:
        expiry_id = await conn.fetchval(
            "SELECT transaction_id FROM transactions WHERE member_id = $1 AND kind = 'expiry'",
            member,
        )
    before = await snapshot(db, members=[member], merchants=[tea])

    for transaction_id in (reversal["transaction_id"], converted.body["transaction_id"]):
        with pytest.raises(ValidationFailed):
            await reverse(ledger, tea, transaction_id)
    with pytest.raises(NotFound):  # an expiry is nobody's transaction
        await reverse(ledger, tea, expiry_id)

    assert await snapshot(db, members=[member], merchants=[tea]) == before


async def test_partial_reversals_at_a_sub_unit_point_value_cancel_exactly(db, ledger, clock):
    # 1,100 points at 0.01 minor units each: gross 11, fee 5% = 0.55 -> 1. Cumulatively, half
    # the points cancel gross 5.5 -> 6 and fee 0.5 -> 0; one point more cancels gross 5.51 -> 6
    # (nothing more) and fee 0.5009 -> 1: a part whose fee share is larger than its gross share.
    await use_settings(db, at(2039, 5, 1), point_value=Decimal("0.01"))
    clock.set(at(2039, 5, 1, 0, 1))
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 1100)
    redeemed = await redeem(ledger, shop, member, 1100)
    [original] = await obligations_of(db, redeemed["transaction_id"])
    assert (original["gross_value"], original["fee"]) == (11, 1)

    for points in (550, 1, 549):
        await reverse(ledger, shop, redeemed["transaction_id"], points=points)

    totals = await obligations_between(db, tea, shop)
    assert (totals["points"], totals["gross_value"], totals["fee"]) == (0, 0, 0)
    assert (await ledger.balance(member_id=member))["available"] == 1100
    await assert_books_balance(db, [member])
