"""Merchant keys: validity windows, revocation, and finding the key a request names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import FixedClock
from core.database import Database
from merchants import service
from merchants.errors import (
    DuplicateKey,
    InvalidField,
    InvalidPublicKey,
    KeyNotFound,
    MerchantClosed,
    MerchantNotFound,
)
from merchants.models import KeyCounts, MerchantStatus
from tests.merchants.conftest import MakeMerchant, raw_public_key, unique

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)


async def test_new_key_is_usable_from_now_by_default(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    raw = raw_public_key()
    key = await service.add_key(
        db, merchant_id=merchant.merchant_id, public_key=raw, now=clock.now()
    )
    assert key.key_id.startswith("key_")
    assert key.not_before == clock.now()
    assert key.not_after is None
    found = await service.find_usable_key(db, key.key_id, clock.now())
    assert found == (merchant, key)
    assert found[1].public_key == raw


async def test_key_outside_validity_window_is_not_usable(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    start, end = clock.now() + DAY, clock.now() + 2 * DAY
    key = await service.add_key(
        db,
        merchant_id=merchant.merchant_id,
        public_key=raw_public_key(),
        not_before=start,
        not_after=end,
        now=clock.now(),
    )
    assert await service.find_usable_key(db, key.key_id, start - SECOND) is None
    assert await service.find_usable_key(db, key.key_id, start) is not None
    assert await service.find_usable_key(db, key.key_id, end - SECOND) is not None
    assert await service.find_usable_key(db, key.key_id, end) is None  # not_after is exclusive


async def test_revoked_key_is_not_usable(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    key = await service.add_key(
        db, merchant_id=merchant.merchant_id, public_key=raw_public_key(), now=clock.now()
    )
    clock.advance(DAY)
    revoked = await service.revoke_key(
        db, merchant_id=merchant.merchant_id, key_id=key.key_id, now=clock.now()
    )
    assert revoked.revoked_at == clock.now()
    assert await service.find_usable_key(db, key.key_id, clock.now()) is None
    # Effective from its instant: a request signed and checked just before still stood.
    assert await service.find_usable_key(db, key.key_id, clock.now() - SECOND) is not None


async def test_revoked_key_cannot_be_unrevoked_or_re_revoked_later(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    key = await service.add_key(
        db, merchant_id=merchant.merchant_id, public_key=raw_public_key(), now=clock.now()
    )
    first = clock.now()
    await service.revoke_key(db, merchant_id=merchant.merchant_id, key_id=key.key_id, now=first)
    clock.advance(DAY)
    again = await service.revoke_key(
        db, merchant_id=merchant.merchant_id, key_id=key.key_id, now=clock.now()
    )
    assert again.revoked_at == first
    found = await service.find_key(db, key.key_id)
    assert found is not None
    assert found[1].revoked_at == first


async def test_another_merchants_key_is_not_found(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    owner, other = await make_merchant(), await make_merchant()
    key = await service.add_key(
        db, merchant_id=owner.merchant_id, public_key=raw_public_key(), now=clock.now()
    )
    with pytest.raises(KeyNotFound) as caught:
        await service.revoke_key(
            db, merchant_id=other.merchant_id, key_id=key.key_id, now=clock.now()
        )
    assert caught.value.code == "not_found"
    assert await service.find_usable_key(db, key.key_id, clock.now()) is not None


async def test_unknown_key_is_not_found(db: Database, clock: FixedClock) -> None:
    assert await service.find_usable_key(db, "key_nobody", clock.now()) is None
    assert await service.find_key(db, "not a valid key id") is None


async def test_suspended_merchants_key_is_found_with_its_status(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    key = await service.add_key(
        db, merchant_id=merchant.merchant_id, public_key=raw_public_key(), now=clock.now()
    )
    await service.suspend(db, merchant.merchant_id, clock.now())
    found = await service.find_usable_key(db, key.key_id, clock.now())
    assert found is not None
    assert found[0].status is MerchantStatus.SUSPENDED  # the caller refuses it


async def test_caller_chosen_key_id_must_be_unique(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    first, second = await make_merchant(), await make_merchant()
    key_id = unique("key_chosen")
    await service.add_key(
        db,
        merchant_id=first.merchant_id,
        public_key=raw_public_key(),
        key_id=key_id,
        now=clock.now(),
    )
    with pytest.raises(DuplicateKey):
        await service.add_key(
            db,
            merchant_id=second.merchant_id,
            public_key=raw_public_key(),
            key_id=key_id,
            now=clock.now(),
        )


async def test_key_window_must_end_after_it_starts_and_after_now(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    with pytest.raises(InvalidField, match="later than not_before"):
        await service.add_key(
            db,
            merchant_id=merchant.merchant_id,
            public_key=raw_public_key(),
            not_before=clock.now() + DAY,
            not_after=clock.now() + DAY,
            now=clock.now(),
        )
    with pytest.raises(InvalidField, match="already past"):
        await service.add_key(
            db,
            merchant_id=merchant.merchant_id,
            public_key=raw_public_key(),
            not_before=clock.now() - 2 * DAY,
            not_after=clock.now() - DAY,
            now=clock.now(),
        )


async def test_naive_times_are_refused(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    with pytest.raises(InvalidField, match="timezone"):
        await service.add_key(
            db,
            merchant_id=merchant.merchant_id,
            public_key=raw_public_key(),
            not_before=clock.now().replace(tzinfo=None),
            now=clock.now(),
        )


async def test_public_key_must_be_32_raw_bytes(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    with pytest.raises(InvalidPublicKey):
        await service.add_key(
            db, merchant_id=merchant.merchant_id, public_key=bytes(31), now=clock.now()
        )


async def test_closed_merchant_cannot_get_keys(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    with pytest.raises(MerchantClosed):
        await service.add_key(
            db, merchant_id=merchant.merchant_id, public_key=raw_public_key(), now=clock.now()
        )


async def test_key_for_unknown_merchant_is_refused(db: Database, clock: FixedClock) -> None:
    with pytest.raises(MerchantNotFound):
        await service.add_key(
            db, merchant_id="mer_nobody", public_key=raw_public_key(), now=clock.now()
        )


async def test_key_counts_tell_usable_from_all(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    mid, now = merchant.merchant_id, clock.now()
    usable = await service.add_key(db, merchant_id=mid, public_key=raw_public_key(), now=now)
    later = await service.add_key(
        db, merchant_id=mid, public_key=raw_public_key(), not_before=now + DAY, now=now
    )
    revoked = await service.add_key(db, merchant_id=mid, public_key=raw_public_key(), now=now)
    await service.revoke_key(db, merchant_id=mid, key_id=revoked.key_id, now=now)

    assert (await service.key_counts(db, now))[mid] == KeyCounts(total=3, usable=1)
    listed = {key.key_id for key in await service.list_keys(db, mid)}
    assert listed == {usable.key_id, later.key_id, revoked.key_id}
