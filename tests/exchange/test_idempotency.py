"""Idempotency keys: the same key and request replay the first result and change nothing.

Same key + different request -> IdempotencyKeyReused, nothing changes; keys are scoped to the
merchant; after the retention (7 days) a key is handled as new; malformed keys are refused.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import ValidationFailed
from core.limits import IDEMPOTENCY_RETENTION_S
from exchange.errors import IdempotencyKeyReused, InsufficientPoints
from exchange.idempotency import RefusalReplayed
from tests.exchange.helpers import count_transactions, key, ref, snapshot
from tests.factories import issue, make_member, make_merchant, redeem

RETENTION = timedelta(seconds=IDEMPOTENCY_RETENTION_S)


async def test_retention_is_at_least_a_day_and_documented_as_seven_days():
    assert timedelta(hours=24) <= RETENTION == timedelta(days=7)


async def test_same_key_same_issuance_replays_the_body_with_one_transaction(db, ledger):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    request = {"merchant_id": tea, "idempotency_key": key(), "member_id": member, "points": 50}
    request["reference"] = ref()

    first = await ledger.issue(**request)
    before = await snapshot(db, members=[member], merchants=[tea])
    second = await ledger.issue(**request)

    assert first.replayed is False
    assert second.replayed is True
    assert second.body == first.body
    assert await count_transactions(db, tea) == 1
    assert await snapshot(db, members=[member], merchants=[tea]) == before
    assert (await ledger.balance(member_id=member))["available"] == 50


async def test_replay_returns_the_first_body_even_after_later_changes(db, ledger):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    request = {
        "merchant_id": shop,
        "idempotency_key": key(),
        "member_id": member,
        "points": 40,
        "reference": ref(),
    }
    first = await ledger.redeem(**request)
    await redeem(ledger, shop, member, 10)
    before = await snapshot(db, members=[member], merchants=[tea, shop])

    replay = await ledger.redeem(**request)

    assert replay.replayed is True
    assert replay.body == first.body
    assert replay.body["balance_after"] == 60
    assert await snapshot(db, members=[member], merchants=[tea, shop]) == before
    assert (await ledger.balance(member_id=member))["available"] == 50


async def test_every_mutation_replays_under_its_key(db, ledger):
    tea, shop = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)

    async def twice(call, **request):
        first = await call(**request)
        before = await snapshot(db, members=[member], merchants=[tea, shop])
        second = await call(**request)
        assert (first.replayed, second.replayed) == (False, True)
        assert second.body == first.body
        assert await snapshot(db, members=[member], merchants=[tea, shop]) == before
        return first.body

    held = await twice(
        ledger.hold,
        merchant_id=shop,
        idempotency_key=key(),
        member_id=member,
        points=30,
        reference=ref(),
    )
    captured = await twice(
        ledger.capture, merchant_id=shop, idempotency_key=key(), hold_id=held["hold_id"], points=20
    )
    other = await twice(
        ledger.hold,
        merchant_id=shop,
        idempotency_key=key(),
        member_id=member,
        points=5,
        reference=ref(),
    )
    await twice(ledger.void, merchant_id=shop, idempotency_key=key(), hold_id=other["hold_id"])
    await twice(
        ledger.reverse,
        merchant_id=shop,
        idempotency_key=key(),
        transaction_id=captured["transaction_id"],
        reference=ref(),
        points=5,
    )
    assert (await ledger.balance(member_id=member))["available"] == 85


@pytest.mark.parametrize(
    "change",
    [{"points": 51}, {"reference": "another"}, {"member_id": None}, {"operation": "redeem"}],
)
async def test_same_key_with_a_different_request_is_refused_and_changes_nothing(db, ledger, change):
    tea = await make_merchant(db)
    member, other_member = await make_member(ledger), await make_member(ledger)
    request = {
        "merchant_id": tea,
        "idempotency_key": key(),
        "member_id": member,
        "points": 50,
        "reference": ref(),
    }
    first = await ledger.issue(**request)
    changed = dict(request)
    operation = ledger.redeem if change.pop("operation", None) else ledger.issue
    changed.update(change)
    if "member_id" in change:
        changed["member_id"] = other_member
    before = await snapshot(db, members=[member, other_member], merchants=[tea])

    with pytest.raises(IdempotencyKeyReused) as refused:
        await operation(**changed)

    assert refused.value.code == "idempotency_key_reused"
    assert await snapshot(db, members=[member, other_member], merchants=[tea]) == before
    assert (await ledger.issue(**request)).body == first.body


async def test_same_key_from_another_merchant_is_a_separate_key(db, ledger):
    tea, books = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    shared = key()

    first = await ledger.issue(
        merchant_id=tea, idempotency_key=shared, member_id=member, points=10, reference="same"
    )
    second = await ledger.issue(
        merchant_id=books, idempotency_key=shared, member_id=member, points=10, reference="same"
    )
    third = await ledger.issue(
        merchant_id=books, idempotency_key=shared, member_id=member, points=10, reference="same"
    )

    assert (first.replayed, second.replayed, third.replayed) == (False, False, True)
    assert second.body["transaction_id"] != first.body["transaction_id"]
    assert second.body["merchant_id"] == books  # nothing of tea's stored response leaks
    assert third.body == second.body
    assert (await ledger.balance(member_id=member))["available"] == 20
    assert (await count_transactions(db, tea), await count_transactions(db, books)) == (1, 1)


@pytest.mark.parametrize(
    "later", [timedelta(hours=23, minutes=59), timedelta(days=3), RETENTION - timedelta(seconds=1)]
)
async def test_same_key_replays_within_the_retention(db, ledger, clock, later):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    request = {
        "merchant_id": tea,
        "idempotency_key": key(),
        "member_id": member,
        "points": 50,
        "reference": ref(),
    }
    first = await ledger.issue(**request)
    clock.advance(later)

    replay = await ledger.issue(**request)

    assert replay.replayed is True
    assert replay.body == first.body
    assert await count_transactions(db, tea) == 1


@pytest.mark.parametrize("later", [RETENTION, RETENTION + timedelta(days=1)])
async def test_key_after_the_retention_is_handled_as_new(db, ledger, clock, later):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    request = {
        "merchant_id": tea,
        "idempotency_key": key(),
        "member_id": member,
        "points": 50,
        "reference": ref(),
    }
    first = await ledger.issue(**request)
    clock.advance(later)

    again = await ledger.issue(**request)
    replay_of_new = await ledger.issue(**request)

    assert again.replayed is False
    assert again.body["transaction_id"] != first.body["transaction_id"]
    assert replay_of_new.replayed is True  # the key is stored anew and replays from now on
    assert replay_of_new.body == again.body
    assert await count_transactions(db, tea) == 2
    assert (await ledger.balance(member_id=member))["available"] == 100


async def test_key_after_the_retention_accepts_a_different_request(db, ledger, clock):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    reused = key()
    await ledger.issue(
        merchant_id=tea, idempotency_key=reused, member_id=member, points=5, reference=ref()
    )
    clock.advance(RETENTION)

    later = await ledger.issue(
        merchant_id=tea, idempotency_key=reused, member_id=member, points=7, reference=ref()
    )

    assert later.replayed is False
    assert later.body["points"] == 7
    assert (await ledger.balance(member_id=member))["available"] == 12


@pytest.mark.parametrize(
    "bad_key",
    ["", " ", "has space", "tab\there", "new\nline", "ключ", "caf\u00e9", "x" * 256, "\x7f"],
)
async def test_malformed_key_is_refused_and_changes_nothing(db, ledger, bad_key):
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 10)
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(ValidationFailed) as refused:
        await ledger.issue(
            merchant_id=tea, idempotency_key=bad_key, member_id=member, points=5, reference=ref()
        )
    with pytest.raises(ValidationFailed):
        await ledger.redeem(
            merchant_id=tea, idempotency_key=bad_key, member_id=member, points=5, reference=ref()
        )

    assert refused.value.extra == {"fields": {"idempotency_key": "invalid"}}
    assert await snapshot(db, members=[member], merchants=[tea]) == before


@pytest.mark.parametrize("good_key", ["a", "!~", "x" * 255, "order-42/refund#1", '"quoted"'])
async def test_well_formed_key_is_accepted(db, ledger, good_key):
    tea = await make_merchant(db)
    member = await make_member(ledger)

    outcome = await ledger.issue(
        merchant_id=tea, idempotency_key=good_key, member_id=member, points=5, reference="r"
    )

    assert outcome.replayed is False


async def test_refused_request_replays_its_refusal_even_after_the_member_earned(db, ledger):
    """ADR 0013: a refusal by a ledger rule is the key's first response; a retry replays it
    (RefusalReplayed, same code, detail and members) and changes nothing, however the books
    moved since. tests/exchange/test_idempotent_refusals.py covers the rest of the rule."""
    tea = await make_merchant(db)
    member = await make_member(ledger)
    request = {
        "merchant_id": tea,
        "idempotency_key": key(),
        "member_id": member,
        "points": 30,
        "reference": ref(),
    }
    with pytest.raises(InsufficientPoints) as first:
        await ledger.redeem(**request)
    await issue(ledger, tea, member, 30)
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(RefusalReplayed) as retried:
        await ledger.redeem(**request)

    assert (retried.value.code, retried.value.detail, retried.value.extra) == (
        first.value.code,
        first.value.detail,
        first.value.extra,
    )
    assert await snapshot(db, members=[member], merchants=[tea]) == before
    assert (await ledger.balance(member_id=member))["available"] == 30
