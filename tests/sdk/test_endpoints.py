"""Every method of both clients against a live exchange on PostgreSQL: what PROTOCOL.md promises
is what the SDK hands back, typed, with every answer's signature checked on the way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.database import Database
from sdk import (
    HoldNotActiveError,
    IdempotencyKeyReusedError,
    InsufficientPointsError,
    IssueOperation,
    NotFoundError,
    RedeemOperation,
    ReversalExceedsOriginalError,
    ReverseOperation,
    ValidationError,
)
from tests.factories import unique
from tests.sdk.conftest import Api, ApiFactory, Partner, Waits, count_transactions, make_partner


async def enrolled(api: Api, points: int = 0) -> str:
    member = await api.enrol_member(external_ref=unique("card"))
    if points:
        await api.issue(member_id=member.member_id, points=points, reference=unique("seed"))
    return str(member.member_id)


async def test_enrol_member_returns_the_same_member_for_the_same_reference(
    connect: ApiFactory, partner: Partner, db: Database
):
    reference = unique("card")
    first = await connect(partner).enrol_member(external_ref=reference)
    other_merchant = await make_partner(db)
    again = await connect(other_merchant).enrol_member(external_ref=reference)

    assert first.created is True
    assert first.external_ref == reference
    assert again.member_id == first.member_id
    assert again.created is False


async def test_issue_then_balance_shows_points_and_their_expiry(api: Api, waits: Waits):
    member_id = await enrolled(api)
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)

    issued = await api.issue(
        member_id=member_id, points=500, reference="till-7/receipt-1042", expires_at=expires_at
    )
    balance = await api.get_balance(member_id=member_id)

    assert (issued.kind, issued.points, issued.balance_after) == ("issuance", 500, 500)
    assert issued.reference == "till-7/receipt-1042"
    assert issued.merchant_id is not None
    assert issued.created_at.tzinfo is not None
    assert (balance.available, balance.held) == (500, 0)
    assert balance.next_expiry is not None
    assert (balance.next_expiry.points, balance.next_expiry.at) == (500, expires_at)
    assert waits == []  # nothing was retried


async def test_redeem_at_another_merchant_carries_its_settlement_value(
    connect: ApiFactory, partner: Partner, db: Database
):
    issuer, redeemer = connect(partner), connect(await make_partner(db))
    member_id = await enrolled(issuer, points=300)

    redemption = await redeemer.redeem(member_id=member_id, points=120, reference=unique("buy"))

    assert (redemption.kind, redemption.points, redemption.balance_after) == (
        "redemption",
        120,
        180,
    )
    assert 0 < redemption.settlement_value <= 120
    fetched = await redeemer.get_transaction(transaction_id=redemption.transaction_id)
    assert fetched == redemption


async def test_hold_capture_and_void(api: Api):
    member_id = await enrolled(api, points=200)

    hold = await api.hold(
        member_id=member_id, points=80, reference="order-9", expires_in_seconds=600
    )
    assert (hold.status, hold.points) == ("active", 80)
    assert (await api.get_balance(member_id=member_id)).held == 80

    captured = await api.capture(hold_id=hold.hold_id, points=50)
    assert (captured.kind, captured.points) == ("redemption", 50)

    second = await api.hold(member_id=member_id, points=30, reference="order-10")
    voided = await api.void(hold_id=second.hold_id)
    assert (voided.hold_id, voided.status) == (second.hold_id, "voided")

    with pytest.raises(HoldNotActiveError) as refused:
        await api.capture(hold_id=second.hold_id)
    assert refused.value.hold_status == "voided"
    assert refused.value.status == 409
    balance = await api.get_balance(member_id=member_id)
    assert (balance.available, balance.held) == (150, 0)


async def test_reverse_in_part_then_refuse_more_than_the_original(api: Api):
    member_id = await enrolled(api, points=100)
    redemption = await api.redeem(member_id=member_id, points=60, reference=unique("buy"))

    refund = await api.reverse(
        transaction_id=redemption.transaction_id, reference="refund-1", points=20
    )
    assert (refund.kind, refund.points, refund.reverses) == (
        "reversal",
        20,
        redemption.transaction_id,
    )
    assert refund.balance_after == 60

    with pytest.raises(ReversalExceedsOriginalError):
        await api.reverse(transaction_id=redemption.transaction_id, reference="refund-2", points=41)
    rest = await api.reverse(transaction_id=redemption.transaction_id, reference="refund-3")
    assert rest.points == 40


async def test_transactions_page_and_iterate_newest_first(api: Api):
    member_id = await enrolled(api)
    issued = [
        await api.issue(member_id=member_id, points=n, reference=f"r{n}") for n in range(1, 8)
    ]
    newest_first = [t.transaction_id for t in reversed(issued)]

    page = await api.list_transactions(member_id=member_id, limit=3)
    assert [t.transaction_id for t in page.data] == newest_first[:3]
    assert page.next_cursor is not None
    second = await api.list_transactions(member_id=member_id, limit=3, cursor=page.next_cursor)
    assert [t.transaction_id for t in second.data] == newest_first[3:6]

    everything = await api.iter_transactions(member_id=member_id, page_size=2)
    assert [t.transaction_id for t in everything] == newest_first


async def test_another_merchants_transaction_is_not_found(
    connect: ApiFactory, partner: Partner, db: Database
):
    mine = connect(partner)
    member_id = await enrolled(mine)
    issued = await mine.issue(member_id=member_id, points=5, reference=unique("r"))
    theirs = connect(await make_partner(db))

    with pytest.raises(NotFoundError) as refused:
        await theirs.get_transaction(transaction_id=issued.transaction_id)
    assert (refused.value.status, refused.value.code) == (404, "not_found")
    assert refused.value.request_id  # the exchange's X-Request-Id, for support


async def test_batch_gives_one_result_per_operation_in_order(api: Api, partner: Partner, db):
    member_id = await enrolled(api, points=10)
    original = await api.issue(member_id=member_id, points=40, reference=unique("r"))
    reference = unique("batch")
    operations = [
        IssueOperation(member_id=member_id, points=5, reference=reference),
        RedeemOperation(member_id=member_id, points=10**6, reference=unique("too-much")),
        ReverseOperation(transaction_id=original.transaction_id, reference="undo", points=15),
    ]

    results = await api.batch(operations)

    assert [r.ok for r in results] == [True, False, True]
    assert [r.operation for r in results] == operations
    assert results[0].transaction is not None
    assert results[0].transaction.points == 5
    assert isinstance(results[1].error, InsufficientPointsError)
    assert results[1].error.idempotency_key == operations[1].idempotency_key
    assert results[2].transaction is not None
    assert results[2].transaction.kind == "reversal"

    # The same operations again, in a new batch: each replays, nothing is applied twice.
    again = await api.batch(operations)
    assert again[0].transaction == results[0].transaction
    assert await count_transactions(db, merchant_id=partner.merchant_id, reference=reference) == 1


async def test_batch_all_splits_into_batches_and_keeps_the_order(api: Api):
    member_id = await enrolled(api)
    operations = [
        IssueOperation(member_id=member_id, points=n, reference=f"b{n}") for n in range(1, 6)
    ]

    results = await api.batch_all(operations, chunk_size=2)

    assert [r.transaction.points for r in results if r.transaction] == [1, 2, 3, 4, 5]
    assert (await api.get_balance(member_id=member_id)).available == 15


async def test_statements_list_iterate_and_get(api: Api):
    # Nothing settled for a brand-new merchant: an empty page, and no such statement. (Real
    # statements are read in test_examples.py, after a settlement of the demo alliance.)
    page = await api.list_statements(period="2026-06-01", limit=10)
    assert (page.data, page.next_cursor) == ([], None)
    assert await api.iter_statements() == []
    with pytest.raises(NotFoundError):
        await api.get_statement(statement_id="stm_01M83EN0P7W4R1X9ZK2D5QH3VA")


async def test_exchange_keys_are_the_ones_the_exchange_signs_with(api: Api, exchange_key):
    keys = await api.get_exchange_keys()

    published = {key.key_id: key.public_key for key in keys}
    assert published[exchange_key.key_id] == exchange_key.public_key


async def test_an_explicit_idempotency_key_replays_and_refuses_another_body(api: Api):
    member_id = await enrolled(api)
    key = unique("till-7/receipt")

    first = await api.issue(member_id=member_id, points=7, reference="r", idempotency_key=key)
    replay = await api.issue(member_id=member_id, points=7, reference="r", idempotency_key=key)
    assert replay == first

    with pytest.raises(IdempotencyKeyReusedError) as refused:
        await api.issue(member_id=member_id, points=8, reference="r", idempotency_key=key)
    assert refused.value.idempotency_key == key
    assert (await api.get_balance(member_id=member_id)).available == 7


async def test_a_malformed_request_is_a_validation_error_with_its_fields(api: Api):
    member_id = await enrolled(api)

    with pytest.raises(ValidationError) as refused:
        await api.issue(member_id=member_id, points=0, reference="r")

    assert refused.value.status == 422
    assert "points" in refused.value.fields


async def test_insufficient_points_says_what_is_available(api: Api):
    member_id = await enrolled(api, points=30)

    with pytest.raises(InsufficientPointsError) as refused:
        await api.redeem(member_id=member_id, points=31, reference=unique("r"))

    assert refused.value.available == 30
    assert refused.value.idempotency_key is not None
