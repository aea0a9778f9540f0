"""Issue (earn) and redeem (burn): lots, balances, double entry, refusals that change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import NotFound, ValidationFailed
from core.limits import POINTS_PER_OPERATION_MAX
from exchange.errors import InsufficientPoints, MerchantSuspended
from merchants import repository as merchant_repository
from merchants.models import MerchantStatus
from tests.exchange.helpers import (
    assert_books_balance,
    key,
    lots_of,
    postings_of,
    ref,
    snapshot,
    transactions_of,
)
from tests.factories import issue, make_member, make_merchant, redeem, unique

YEAR = timedelta(days=365)


async def test_issue_creates_lot_of_the_issuer_with_default_lifetime(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)

    body = await issue(ledger, tea, member, 100)

    assert body["kind"] == "issuance"
    assert body["merchant_id"] == tea
    assert body["member_id"] == member
    assert body["points"] == 100
    assert body["balance_after"] == 100
    assert body["settlement_value"] == 0
    [lot] = await lots_of(db, member)
    assert lot["issuer_id"] == tea
    assert (lot["issued_points"], lot["remaining_points"]) == (100, 100)
    assert lot["issued_at"] == clock.now()
    assert lot["expires_at"] == clock.now() + YEAR
    balance = await ledger.balance(member_id=member)
    assert (balance["available"], balance["held"]) == (100, 0)
    await assert_books_balance(db, [member])


async def test_issue_with_expiry_gives_the_lot_that_expiry(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    expires_at = clock.now() + timedelta(days=3)

    await issue(ledger, tea, member, 10, expires_at=expires_at)

    [lot] = await lots_of(db, member)
    assert lot["expires_at"] == expires_at


async def test_issue_posts_balanced_entries_member_and_issuer(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)

    body = await issue(ledger, tea, member, 70)

    [lot] = await lots_of(db, member)
    assert await postings_of(db, body["transaction_id"]) == [
        {"account": f"member:{member}", "currency": "AP", "amount": 70, "lot_id": lot["lot_id"]},
        {"account": f"issuer:{tea}", "currency": "AP", "amount": -70, "lot_id": None},
    ]


async def test_redeem_takes_points_and_posts_them_back_to_the_issuer(db, ledger):
    tea = await make_merchant(db)
    books = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)

    body = await redeem(ledger, books, member, 40)

    assert body["kind"] == "redemption"
    assert body["merchant_id"] == books
    assert body["points"] == 40
    assert body["balance_after"] == 60
    [lot] = await lots_of(db, member)
    assert lot["remaining_points"] == 60
    assert await postings_of(db, body["transaction_id"]) == [
        {"account": f"member:{member}", "currency": "AP", "amount": -40, "lot_id": lot["lot_id"]},
        {"account": f"issuer:{tea}", "currency": "AP", "amount": 40, "lot_id": None},
    ]
    assert (await ledger.balance(member_id=member))["available"] == 60
    await assert_books_balance(db, [member])


async def test_redeem_of_the_whole_balance_leaves_zero(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 30)
    await issue(ledger, tea, member, 20)

    body = await redeem(ledger, tea, member, 50)

    assert body["balance_after"] == 0
    assert [lot["remaining_points"] for lot in await lots_of(db, member)] == [0, 0]
    await assert_books_balance(db, [member])


async def test_redeem_refused_whole_when_it_does_not_fit_and_nothing_changes(db, ledger):
    tea = await make_merchant(db)
    books = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 30)
    await issue(ledger, books, member, 20)
    before = await snapshot(db, members=[member], merchants=[tea, books])
    balance_before = await ledger.balance(member_id=member)

    with pytest.raises(InsufficientPoints) as refused:
        await redeem(ledger, books, member, 51)

    assert refused.value.code == "insufficient_points"
    assert refused.value.extra == {"available": 50}
    assert await snapshot(db, members=[member], merchants=[tea, books]) == before
    assert await ledger.balance(member_id=member) == balance_before


async def test_redeem_refused_for_a_member_without_points(db, ledger):
    books = await make_merchant(db)
    member = await make_member(ledger)
    before = await snapshot(db, members=[member], merchants=[books])

    with pytest.raises(InsufficientPoints):
        await redeem(ledger, books, member, 1)

    assert await snapshot(db, members=[member], merchants=[books]) == before
    assert (await ledger.balance(member_id=member))["available"] == 0


async def test_redeem_refused_when_the_points_are_held(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    await ledger.hold(
        merchant_id=tea, idempotency_key=key(), member_id=member, points=80, reference=ref()
    )
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(InsufficientPoints) as refused:
        await redeem(ledger, tea, member, 21)

    assert refused.value.extra == {"available": 20}
    assert await snapshot(db, members=[member], merchants=[tea]) == before
    assert (await redeem(ledger, tea, member, 20))["balance_after"] == 0


@pytest.mark.parametrize("points", [0, -1, -100, True, 1.5, "10", POINTS_PER_OPERATION_MAX + 1])
async def test_issue_refuses_points_that_are_not_a_positive_integer(db, ledger, points):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(ValidationFailed):
        await issue(ledger, tea, member, points)

    assert await snapshot(db, members=[member], merchants=[tea]) == before


@pytest.mark.parametrize("points", [0, -5, False, 2.0])
async def test_redeem_refuses_points_that_are_not_a_positive_integer(db, ledger, points):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 10)
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(ValidationFailed):
        await redeem(ledger, tea, member, points)

    assert await snapshot(db, members=[member], merchants=[tea]) == before


async def test_issue_accepts_the_largest_amount_per_operation(db, ledger):
    tea = await make_merchant(db, liability_limit=POINTS_PER_OPERATION_MAX)
    member = await make_member(ledger)

    body = await issue(ledger, tea, member, POINTS_PER_OPERATION_MAX)

    assert body["balance_after"] == POINTS_PER_OPERATION_MAX


async def test_issue_refuses_an_expiry_in_the_past_or_now_or_without_time_zone(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    before = await snapshot(db, members=[member], merchants=[tea])

    for expires_at in (
        clock.now() - timedelta(seconds=1),
        clock.now(),
        datetime(2027, 1, 1),  # naive
    ):
        with pytest.raises(ValidationFailed):
            await issue(ledger, tea, member, 10, expires_at=expires_at)

    assert await snapshot(db, members=[member], merchants=[tea]) == before


async def test_issue_refuses_a_missing_or_overlong_reference(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    for reference in ("", "r" * 256):
        with pytest.raises(ValidationFailed):
            await ledger.issue(
                merchant_id=tea,
                idempotency_key=key(),
                member_id=member,
                points=10,
                reference=reference,
            )
    assert (await ledger.balance(member_id=member))["available"] == 0


async def test_issue_and_redeem_for_an_unknown_member_are_not_found(db, ledger):
    tea = await make_merchant(db)
    with pytest.raises(NotFound):
        await issue(ledger, tea, "mbr_nobody", 10)
    with pytest.raises(NotFound):
        await redeem(ledger, tea, "mbr_nobody", 10)
    with pytest.raises(NotFound):
        await ledger.balance(member_id="mbr_nobody")


async def test_unknown_merchant_is_not_found(db, ledger):
    member = await make_member(ledger)
    with pytest.raises(NotFound):
        await issue(ledger, "mer_nobody", member, 10)


async def test_suspended_or_closed_merchant_can_neither_issue_nor_redeem(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 50)
    for status in (MerchantStatus.SUSPENDED, MerchantStatus.CLOSED):
        async with db.transaction() as conn:
            await merchant_repository.set_status(conn, tea, status, clock.now())
        before = await snapshot(db, members=[member], merchants=[tea])
        with pytest.raises(MerchantSuspended):
            await issue(ledger, tea, member, 10)
        with pytest.raises(MerchantSuspended):
            await redeem(ledger, tea, member, 10)
        assert await snapshot(db, members=[member], merchants=[tea]) == before


async def test_other_currency_issuance_of_a_foreign_programme_is_refused(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    with pytest.raises(ValidationFailed):
        await issue(ledger, tea, member, 10, currency="NOSUCH")


async def test_register_member_same_reference_is_the_same_member(db, ledger):
    reference = unique("card")

    first = await ledger.register_member(external_ref=reference)
    second = await ledger.register_member(external_ref=reference)

    assert first.created is True
    assert second.created is False
    assert second.member_id == first.member_id
    with pytest.raises(ValidationFailed):
        await ledger.register_member(external_ref="")


async def test_transaction_is_visible_to_its_merchant_only(db, ledger):
    tea = await make_merchant(db)
    books = await make_merchant(db)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 10)
    redeemed = await redeem(ledger, books, member, 4)

    assert await ledger.transaction(merchant_id=tea, transaction_id=issued["transaction_id"]) == (
        issued
    )
    with pytest.raises(NotFound):
        await ledger.transaction(merchant_id=books, transaction_id=issued["transaction_id"])
    with pytest.raises(NotFound):
        await ledger.transaction(merchant_id=tea, transaction_id=redeemed["transaction_id"])
    listed = await ledger.transactions(merchant_id=tea, member_id=member)
    assert [item["transaction_id"] for item in listed["data"]] == [issued["transaction_id"]]


async def test_transactions_page_newest_first_with_cursor(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    ids = []
    for _ in range(5):
        ids.append((await issue(ledger, tea, member, 1))["transaction_id"])
        clock.advance(timedelta(seconds=1))

    first = await ledger.transactions(merchant_id=tea, limit=3)
    second = await ledger.transactions(merchant_id=tea, limit=3, cursor=first["next_cursor"])

    assert [item["transaction_id"] for item in first["data"]] == ids[::-1][:3]
    assert [item["transaction_id"] for item in second["data"]] == ids[::-1][3:]
    assert second["next_cursor"] is None


async def test_points_are_conserved_across_issuers_and_acceptors(db, ledger):
    tea, books, cafe = [await make_merchant(db) for _ in range(3)]
    members = [await make_member(ledger) for _ in range(3)]
    for index, member in enumerate(members):
        await issue(ledger, tea, member, 40 + index)
        await issue(ledger, books, member, 25)
        await redeem(ledger, cafe, member, 50)
        await redeem(ledger, tea, member, 5)
    for member in members:
        history = await transactions_of(db, member)
        issued = sum(t["points"] for t in history if t["kind"] == "issuance")
        spent = sum(t["points"] for t in history if t["kind"] == "redemption")
        available = (await ledger.balance(member_id=member))["available"]
        assert issued - spent == available
    await assert_books_balance(db, members)


async def test_clock_is_the_instant_of_the_transaction(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    clock.set(datetime(2026, 7, 4, 9, 30, tzinfo=UTC))

    body = await issue(ledger, tea, member, 1)

    assert body["created_at"] == "2026-07-04T09:30:00.000000Z"


async def test_transactions_pages_cover_each_transaction_once_at_one_instant(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    ids = {(await issue(ledger, tea, member, 1))["transaction_id"] for _ in range(7)}

    seen: list[str] = []
    cursor = None
    while True:
        page = await ledger.transactions(merchant_id=tea, limit=3, cursor=cursor)
        seen += [item["transaction_id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize("limit", [0, 101])
async def test_transactions_refuses_a_page_size_out_of_range(db, ledger, limit):
    tea = await make_merchant(db)
    with pytest.raises(ValidationFailed):
        await ledger.transactions(merchant_id=tea, limit=limit)
    with pytest.raises(ValidationFailed):
        await ledger.transactions(merchant_id=tea, cursor="not a cursor!")
