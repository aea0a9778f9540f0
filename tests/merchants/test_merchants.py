"""Merchant lifecycle and liability limits, on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import FixedClock
from core.database import Database
from merchants import service
from merchants.errors import DuplicateMerchant, InvalidField, MerchantClosed, MerchantNotFound
from merchants.models import MerchantStatus
from tests.merchants.conftest import MakeMerchant, unique


async def test_created_merchant_is_active_with_a_mer_id(db: Database, clock: FixedClock) -> None:
    name = unique("Tea House")
    merchant = await service.create_merchant(
        db,
        name=name,
        liability_limit=5_000_000,
        webhook_url="https://tea.example/hooks",
        now=clock.now(),
    )
    assert merchant.merchant_id.startswith("mer_")
    assert merchant.status is MerchantStatus.ACTIVE
    assert merchant.created_at == clock.now()
    assert await service.get_merchant(db, merchant.merchant_id) == merchant


async def test_caller_may_choose_the_merchant_id(make_merchant: MakeMerchant) -> None:
    chosen = unique("mer_chosen")
    assert (await make_merchant(merchant_id=chosen)).merchant_id == chosen


async def test_merchant_names_are_unique_regardless_of_case(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    first = await make_merchant()
    with pytest.raises(DuplicateMerchant) as caught:
        await service.create_merchant(
            db, name=first.name.upper(), liability_limit=1, now=clock.now()
        )
    assert caught.value.code == "validation_error"
    assert caught.value.extra["field"] == "name"


async def test_merchant_ids_are_unique(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    first = await make_merchant()
    with pytest.raises(DuplicateMerchant, match="already taken") as caught:
        await service.create_merchant(
            db,
            name=unique("Other"),
            liability_limit=1,
            merchant_id=first.merchant_id,
            now=clock.now(),
        )
    assert caught.value.extra["field"] == "merchant_id"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("liability_limit", {"liability_limit": -1}),
        ("liability_limit", {"liability_limit": 2**63}),
        ("name", {"name": "   "}),
        ("webhook_url", {"webhook_url": "http://tea.example/hooks"}),
        ("webhook_url", {"webhook_url": "ftp://tea.example"}),
        ("merchant_id", {"merchant_id": "has space"}),
    ],
)
async def test_malformed_merchant_is_refused(
    db: Database, clock: FixedClock, field: str, kwargs: dict[str, object]
) -> None:
    arguments: dict[str, object] = {"name": unique("Shop"), "liability_limit": 1, **kwargs}
    with pytest.raises(InvalidField) as caught:
        await service.create_merchant(db, now=clock.now(), **arguments)  # type: ignore[arg-type]
    assert caught.value.extra["field"] == field


async def test_plain_http_webhook_is_allowed_on_loopback(make_merchant: MakeMerchant) -> None:
    merchant = await make_merchant(webhook_url="http://127.0.0.1:9000/hooks")
    assert merchant.webhook_url == "http://127.0.0.1:9000/hooks"


async def test_unknown_merchant_is_not_found(db: Database, clock: FixedClock) -> None:
    with pytest.raises(MerchantNotFound) as caught:
        await service.suspend(db, "mer_nobody", clock.now())
    assert caught.value.code == "not_found"


async def test_suspended_merchant_can_be_reactivated(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    suspended = await service.suspend(db, merchant.merchant_id, clock.now())
    assert suspended.status is MerchantStatus.SUSPENDED
    assert (await service.get_merchant(db, merchant.merchant_id)).status is MerchantStatus.SUSPENDED
    reactivated = await service.reactivate(db, merchant.merchant_id, clock.now())
    assert reactivated.status is MerchantStatus.ACTIVE
    assert (await service.get_merchant(db, merchant.merchant_id)).status is MerchantStatus.ACTIVE


async def test_closed_merchant_cannot_be_reactivated(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    with pytest.raises(MerchantClosed) as caught:
        await service.reactivate(db, merchant.merchant_id, clock.now())
    assert caught.value.code == "merchant_closed"
    with pytest.raises(MerchantClosed):
        await service.suspend(db, merchant.merchant_id, clock.now())
    assert (await service.get_merchant(db, merchant.merchant_id)).status is MerchantStatus.CLOSED


async def test_closing_a_closed_merchant_changes_nothing(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    again = await service.close(db, merchant.merchant_id, clock.now())
    assert again.status is MerchantStatus.CLOSED


async def test_closed_merchant_limit_cannot_change(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    with pytest.raises(MerchantClosed):
        await service.set_liability_limit(db, merchant.merchant_id, 5, clock.now())


async def _slots(db: Database, merchant_id: str) -> list[int]:
    async with db.transaction() as conn:
        rows = await conn.fetch(
            "SELECT headroom FROM exposure_slots WHERE merchant_id = $1 ORDER BY slot",
            merchant_id,
        )
    return [row["headroom"] for row in rows]


async def _escrow(db: Database, merchant_id: str, headrooms: list[int]) -> None:
    """Stand in for the ledger, which escrows headroom into these rows on issuance."""
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO exposure_slots (merchant_id, slot, headroom) VALUES ($1, $2, $3)",
            [(merchant_id, slot, headroom) for slot, headroom in enumerate(headrooms)],
        )


async def test_liability_limit_change_resets_escrowed_headroom(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant(liability_limit=1_000)
    bystander = await make_merchant(liability_limit=1_000)
    await _escrow(db, merchant.merchant_id, [300, 200, 100])
    await _escrow(db, bystander.merchant_id, [400, 100])
    clock.advance(timedelta(minutes=1))

    changed = await service.set_liability_limit(db, merchant.merchant_id, 250, clock.now())

    assert changed.liability_limit == 250
    assert (await service.get_merchant(db, merchant.merchant_id)).liability_limit == 250
    assert await _slots(db, merchant.merchant_id) == [0, 0, 0]  # rows kept, headroom emptied
    assert await _slots(db, bystander.merchant_id) == [400, 100]


async def test_negative_liability_limit_is_refused(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    with pytest.raises(InvalidField):
        await service.set_liability_limit(db, merchant.merchant_id, -1, clock.now())


async def test_list_merchants_includes_new_merchants(
    db: Database, make_merchant: MakeMerchant
) -> None:
    made = {(await make_merchant()).merchant_id for _ in range(2)}
    listed = {merchant.merchant_id for merchant in await service.list_merchants(db)}
    assert made <= listed
