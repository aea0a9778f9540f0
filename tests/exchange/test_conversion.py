"""Conversion between the alliance point (AP) and a merchant's own programme, rounded down.

One balanced multi-asset transaction: postings sum to zero in each currency. AP -> own points is
an acceptance of AP (obligations to foreign issuers as for a redemption) plus an issuance of own
points; own points -> AP is a take-back plus an issuance of AP within the liability limit.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest

from core.errors import ValidationFailed
from exchange.errors import InsufficientPoints, LiabilityLimitExceeded
from merchants import repository as merchant_repository
from tests.exchange.helpers import (
    assert_books_balance,
    key,
    lots_of,
    make_currency,
    obligations_of,
    postings_of,
    ref,
    snapshot,
)
from tests.factories import issue, make_member, make_merchant

TO_OWN = Decimal("2.5")
TO_AP = Decimal("0.4")


async def convert(ledger, merchant_id, member_id, points, source, target):
    outcome = await ledger.convert(
        merchant_id=merchant_id,
        idempotency_key=key(),
        member_id=member_id,
        points=points,
        source_currency=source,
        target_currency=target,
        reference=ref(),
    )
    return outcome.body


async def programme(db, ledger, *, liability_limit=10**12):
    tea = await make_merchant(db, liability_limit=liability_limit)
    code = await make_currency(db, tea, to_own=TO_OWN, to_ap=TO_AP)
    member = await make_member(ledger)
    return tea, code, member


def totals_by_currency(postings):
    totals = defaultdict(int)
    for posting in postings:
        totals[posting["currency"]] += posting["amount"]
    return dict(totals)


async def test_convert_alliance_points_to_own_points_rounds_down(db, ledger, clock):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 10)

    body = await convert(ledger, tea, member, 7, "AP", code)  # 7 x 2.5 = 17.5 -> 17

    assert body["kind"] == "conversion"
    assert (body["currency"], body["points"]) == ("AP", 7)
    assert (body["target_currency"], body["target_points"]) == (code, 17)
    assert body["balance_after"] == 3
    assert (await ledger.balance(member_id=member))["available"] == 3
    assert (await ledger.balance(member_id=member, currency=code))["available"] == 17
    [own_lot] = await lots_of(db, member, code)
    assert (own_lot["issuer_id"], own_lot["remaining_points"]) == (tea, 17)
    assert own_lot["expires_at"] == clock.now() + timedelta(days=365)
    await assert_books_balance(db, [member])


async def test_conversion_postings_balance_in_each_currency(db, ledger):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 10)

    body = await convert(ledger, tea, member, 7, "AP", code)

    postings = await postings_of(db, body["transaction_id"])
    assert totals_by_currency(postings) == {"AP": 0, code: 0}
    [ap_lot] = await lots_of(db, member)
    [own_lot] = await lots_of(db, member, code)
    assert sorted((p["account"], p["currency"], p["amount"], p["lot_id"]) for p in postings) == (
        sorted(
            [
                (f"member:{member}", "AP", -7, ap_lot["lot_id"]),
                (f"issuer:{tea}", "AP", 7, None),
                (f"member:{member}", code, 17, own_lot["lot_id"]),
                (f"issuer:{tea}", code, -17, None),
            ]
        )
    )


async def test_convert_own_points_to_alliance_points_rounds_down(db, ledger, clock):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 17, currency=code)

    body = await convert(ledger, tea, member, 17, code, "AP")  # 17 x 0.4 = 6.8 -> 6

    assert (body["currency"], body["points"]) == (code, 17)
    assert (body["target_currency"], body["target_points"]) == ("AP", 6)
    assert body["balance_after"] == 0
    assert (await ledger.balance(member_id=member, currency=code))["available"] == 0
    assert (await ledger.balance(member_id=member))["available"] == 6
    [ap_lot] = await lots_of(db, member)
    assert (ap_lot["issuer_id"], ap_lot["issued_points"]) == (tea, 6)
    assert ap_lot["expires_at"] == clock.now() + timedelta(days=365)
    postings = await postings_of(db, body["transaction_id"])
    assert totals_by_currency(postings) == {"AP": 0, code: 0}
    await assert_books_balance(db, [member])


async def test_round_trip_never_creates_points(db, ledger):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 11)

    there = await convert(ledger, tea, member, 11, "AP", code)  # 27.5 -> 27
    back = await convert(ledger, tea, member, there["target_points"], code, "AP")  # 10.8 -> 10

    assert (there["target_points"], back["target_points"]) == (27, 10)
    assert (await ledger.balance(member_id=member))["available"] == 10
    assert (await ledger.balance(member_id=member, currency=code))["available"] == 0
    await assert_books_balance(db, [member])


async def test_conversion_of_another_issuers_points_makes_an_obligation(db, ledger):
    tea, code, member = await programme(db, ledger)
    books = await make_merchant(db)
    await issue(ledger, books, member, 40)

    body = await convert(ledger, tea, member, 20, "AP", code)

    [obligation] = await obligations_of(db, body["transaction_id"])
    assert (obligation["debtor_id"], obligation["creditor_id"]) == (books, tea)
    assert (obligation["points"], obligation["gross_value"], obligation["fee"]) == (20, 20, 1)
    assert body["settlement_value"] == 19
    await assert_books_balance(db, [member])


async def test_conversion_refused_when_it_does_not_fit_and_nothing_changes(db, ledger):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 10)
    await ledger.hold(
        merchant_id=tea, idempotency_key=key(), member_id=member, points=4, reference=ref()
    )
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(InsufficientPoints) as refused:
        await convert(ledger, tea, member, 7, "AP", code)

    assert refused.value.extra == {"available": 6}
    assert await snapshot(db, members=[member], merchants=[tea]) == before


async def test_conversion_yielding_no_point_is_refused(db, ledger):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 5, currency=code)
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(ValidationFailed):
        await convert(ledger, tea, member, 2, code, "AP")  # 0.8 -> 0

    assert await snapshot(db, members=[member], merchants=[tea]) == before


async def test_conversion_into_another_merchants_programme_is_refused(db, ledger):
    tea, code, member = await programme(db, ledger)
    books = await make_merchant(db)
    await issue(ledger, books, member, 10)
    before = await snapshot(db, members=[member], merchants=[tea, books])

    with pytest.raises(ValidationFailed):
        await convert(ledger, books, member, 4, "AP", code)
    with pytest.raises(ValidationFailed):
        await convert(ledger, books, member, 4, code, "AP")

    assert await snapshot(db, members=[member], merchants=[tea, books]) == before


async def test_conversion_must_pair_the_alliance_point_with_one_programme(db, ledger):
    tea, code, member = await programme(db, ledger)
    other = await make_currency(db, tea, to_own=Decimal(1), to_ap=Decimal(1))
    await issue(ledger, tea, member, 10, currency=code)
    await issue(ledger, tea, member, 10)

    for source, target in ((code, other), ("AP", "AP"), (code, code), ("AP", "NOSUCH")):
        with pytest.raises(ValidationFailed):
            await convert(ledger, tea, member, 4, source, target)


async def test_conversion_without_a_rate_is_refused(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    code = "N" + uuid.uuid4().hex[:10].upper()
    async with db.transaction() as conn:
        await merchant_repository.insert_currency(
            conn, currency=code, name="No rates", owner_merchant_id=tea
        )
    await issue(ledger, tea, member, 10)

    with pytest.raises(ValidationFailed):
        await convert(ledger, tea, member, 4, "AP", code)


async def test_conversion_to_alliance_points_counts_against_the_liability_limit(db, ledger):
    tea, code, member = await programme(db, ledger, liability_limit=30)
    await issue(ledger, tea, member, 100, currency=code)  # own points: not AP exposure
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(LiabilityLimitExceeded):
        await convert(ledger, tea, member, 100, code, "AP")  # 40 AP > 30

    assert await snapshot(db, members=[member], merchants=[tea]) == before
    body = await convert(ledger, tea, member, 75, code, "AP")  # exactly 30 AP
    assert body["target_points"] == 30
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)


async def test_only_the_owner_issues_its_programme_points(db, ledger):
    tea, code, member = await programme(db, ledger)
    books = await make_merchant(db)

    with pytest.raises(ValidationFailed):
        await issue(ledger, books, member, 10, currency=code)

    assert (await ledger.balance(member_id=member, currency=code))["available"] == 0


async def test_own_points_redemption_makes_no_obligation_and_keeps_currencies_apart(db, ledger):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 10, currency=code)
    await issue(ledger, tea, member, 3)

    body = await ledger.redeem(
        merchant_id=tea,
        idempotency_key=key(),
        member_id=member,
        points=8,
        reference=ref(),
        currency=code,
    )

    assert body.body["balance_after"] == 2
    assert await obligations_of(db, body.body["transaction_id"]) == []
    assert (await ledger.balance(member_id=member))["available"] == 3
    with pytest.raises(InsufficientPoints):
        await ledger.redeem(
            merchant_id=tea,
            idempotency_key=key(),
            member_id=member,
            points=3,
            reference=ref(),
            currency=code,
        )
    await assert_books_balance(db, [member])


async def test_conversion_replays_under_its_idempotency_key(db, ledger):
    tea, code, member = await programme(db, ledger)
    await issue(ledger, tea, member, 10)
    request = {
        "merchant_id": tea,
        "idempotency_key": key(),
        "member_id": member,
        "points": 4,
        "source_currency": "AP",
        "target_currency": code,
        "reference": ref(),
    }

    first = await ledger.convert(**request)
    second = await ledger.convert(**request)

    assert second.replayed is True
    assert second.body == first.body
    assert (await ledger.balance(member_id=member, currency=code))["available"] == 10
