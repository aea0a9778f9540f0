"""Obligations: accepting another merchant's points makes the issuer owe the acceptor their value.

Debtor = issuer, creditor = acceptor; gross = points x point value at the redemption instant
(half-even to the minor unit); fee = gross x alliance fee (half-even); settlement value = gross -
fee. Redeeming one's own points makes none.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.exchange.helpers import (
    assert_books_balance,
    at,
    obligations_of,
    use_settings,
)
from tests.factories import issue, make_member, make_merchant, redeem


async def test_cross_merchant_redemption_makes_the_issuer_owe_the_acceptor(db, ledger, clock):
    issuer, acceptor = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, issuer, member, 100)

    body = await redeem(ledger, acceptor, member, 40)

    [obligation] = await obligations_of(db, body["transaction_id"])
    assert obligation["debtor_id"] == issuer
    assert obligation["creditor_id"] == acceptor
    assert obligation["points"] == 40
    assert obligation["gross_value"] == 40
    assert obligation["fee"] == 2
    assert obligation["reverses_obligation_id"] is None
    assert body["settlement_value"] == 38
    async with db.connection() as conn:
        created_at = await conn.fetchval(
            "SELECT created_at FROM obligations WHERE obligation_id = $1",
            obligation["obligation_id"],
        )
    assert created_at == clock.now()
    await assert_books_balance(db, [member])


@pytest.mark.parametrize(
    ("points", "fee"),
    [(10, 0), (30, 2), (50, 2), (70, 4), (90, 4), (110, 6), (19, 1), (29, 1), (1, 0)],
)
async def test_fee_is_five_percent_rounded_half_to_even(db, ledger, points, fee):
    issuer, acceptor = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, issuer, member, points)

    body = await redeem(ledger, acceptor, member, points)

    [obligation] = await obligations_of(db, body["transaction_id"])
    assert (obligation["gross_value"], obligation["fee"]) == (points, fee)
    assert body["settlement_value"] == points - fee


async def test_redemption_of_own_points_makes_no_obligation(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)

    body = await redeem(ledger, tea, member, 60)

    assert await obligations_of(db, body["transaction_id"]) == []
    assert body["settlement_value"] == 0


async def test_redemption_across_issuers_makes_one_obligation_per_foreign_issuer(db, ledger, clock):
    a, b, shop = [await make_merchant(db) for _ in range(3)]
    member = await make_member(ledger)
    day = timedelta(days=1)
    await issue(ledger, a, member, 30, expires_at=clock.now() + day)
    await issue(ledger, shop, member, 25, expires_at=clock.now() + 2 * day)
    await issue(ledger, b, member, 40, expires_at=clock.now() + 3 * day)
    await issue(ledger, a, member, 20, expires_at=clock.now() + 4 * day)

    body = await redeem(ledger, shop, member, 115)

    got = {
        (o["debtor_id"], o["creditor_id"], o["points"], o["gross_value"], o["fee"])
        for o in await obligations_of(db, body["transaction_id"])
    }
    # a: 30 + 20 = 50 points in one obligation (fee 2.5 -> 2); b: 40 (fee 2); shop's own: none.
    assert got == {(a, shop, 50, 50, 2), (b, shop, 40, 40, 2)}
    assert body["settlement_value"] == 48 + 38
    await assert_books_balance(db, [member])


async def test_obligation_value_uses_the_point_value_at_the_redemption_instant(db, ledger, clock):
    await use_settings(db, at(2039, 3, 1), point_value=Decimal("2"))
    await use_settings(db, at(2039, 3, 15), point_value=Decimal("3.5"), fee_rate=Decimal("0.1"))
    clock.set(at(2039, 3, 8))
    issuer, acceptor = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, issuer, member, 100)
    before_change = await redeem(ledger, acceptor, member, 10)
    clock.set(at(2039, 3, 15))

    after_change = await redeem(ledger, acceptor, member, 11)

    [first] = await obligations_of(db, before_change["transaction_id"])
    [second] = await obligations_of(db, after_change["transaction_id"])
    assert (first["gross_value"], first["fee"]) == (20, 1)  # 20 x 5% = 1
    # 11 x 3.5 = 38.5 -> 38 (half-even); fee 10% of 38 = 3.8 -> 4.
    assert (second["gross_value"], second["fee"]) == (38, 4)
    assert after_change["settlement_value"] == 34


@pytest.mark.parametrize(
    ("day", "point_value", "points", "gross"),
    [
        (1, "0.5", 1, 0),  # 0.5 -> 0
        (2, "0.5", 3, 2),  # 1.5 -> 2
        (3, "0.5", 5, 2),  # 2.5 -> 2
        (4, "1.25", 2, 2),  # 2.5 -> 2
        (5, "1.25", 6, 8),  # 7.5 -> 8
        (6, "0.1", 7, 1),  # 0.7 -> 1
    ],
)
async def test_gross_value_rounds_half_to_even_at_a_fractional_point_value(
    db, ledger, clock, day, point_value, points, gross
):
    # Each case has a settings version of its own, on its own day.
    instant = at(2039, 4, day)
    await use_settings(db, instant, point_value=Decimal(point_value), fee_rate=Decimal("0.5"))
    clock.set(instant + timedelta(minutes=1))
    issuer, acceptor = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, issuer, member, points)

    body = await redeem(ledger, acceptor, member, points)

    obligations = await obligations_of(db, body["transaction_id"])
    [obligation] = obligations
    fee = int((Decimal(gross) * Decimal("0.5")).quantize(Decimal(1), rounding="ROUND_HALF_EVEN"))
    assert (obligation["points"], obligation["gross_value"], obligation["fee"]) == (
        points,
        gross,
        fee,
    )
    assert body["settlement_value"] == gross - fee


async def test_issuer_and_acceptor_each_see_only_their_side(db, ledger):
    issuer, acceptor = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, issuer, member, 100)
    await redeem(ledger, acceptor, member, 40)

    issuer_view = await ledger.transactions(merchant_id=issuer, member_id=member)
    acceptor_view = await ledger.transactions(merchant_id=acceptor, member_id=member)

    assert [t["kind"] for t in issuer_view["data"]] == ["issuance"]
    assert [t["kind"] for t in acceptor_view["data"]] == ["redemption"]
