"""Liability limit: an issuance that would take the issuer's exposure past its limit is refused.

Exposure = value of the issuer's outstanding unexpired points + its unsettled net payables. With
the default point value of 1 minor unit, one point is one unit of exposure.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from core.limits import EXPOSURE_SLOTS
from exchange.errors import LiabilityLimitExceeded
from merchants import repository as merchant_repository
from tests.exchange.helpers import at, escrowed, key, measured, ref, snapshot, use_settings
from tests.factories import issue, make_member, make_merchant, redeem


async def test_issuance_allowed_exactly_up_to_the_limit(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=100)
    member = await make_member(ledger)

    await issue(ledger, tea, member, 60)
    await issue(ledger, tea, member, 40)

    assert (await measured(db, clock, tea)).total == 100
    assert (await ledger.balance(member_id=member))["available"] == 100


async def test_single_issuance_of_exactly_the_limit_is_allowed(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=250)
    member = await make_member(ledger)

    await issue(ledger, tea, member, 250)

    assert (await measured(db, clock, tea)).headroom == 0


async def test_issuance_past_the_limit_is_refused_and_changes_nothing(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=100)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 60)
    before = await snapshot(db, members=[member], merchants=[tea])

    with pytest.raises(LiabilityLimitExceeded) as refused:
        await issue(ledger, tea, member, 41)

    assert refused.value.code == "liability_limit_exceeded"
    assert refused.value.extra == {"exposure": 60, "limit": 100, "requested_value": 41}
    assert await snapshot(db, members=[member], merchants=[tea]) == before
    await issue(ledger, tea, member, 40)
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)
    assert (await measured(db, clock, tea)).total == 100


async def test_zero_limit_refuses_any_issuance(db, ledger):
    tea = await make_merchant(db, liability_limit=0)
    member = await make_member(ledger)

    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)

    assert (await ledger.balance(member_id=member))["available"] == 0


async def test_limit_counts_points_issued_to_every_member(db, ledger):
    tea = await make_merchant(db, liability_limit=90)
    members = [await make_member(ledger) for _ in range(3)]
    for member in members:
        await issue(ledger, tea, member, 30)

    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, await make_member(ledger), 1)


async def test_redemption_at_the_issuer_frees_headroom(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=100)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)

    await redeem(ledger, tea, member, 30)

    assert (await measured(db, clock, tea)).total == 70
    await issue(ledger, tea, member, 30)  # the slots rebalance and find the freed headroom
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)


async def test_redemption_elsewhere_keeps_the_exposure_as_a_payable(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=100)
    shop = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)

    await redeem(ledger, shop, member, 40)

    exposed = await measured(db, clock, tea)
    assert (exposed.outstanding_value, exposed.net_payable, exposed.total) == (60, 40, 100)
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)


async def test_receivables_offset_payables_in_the_net(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=100)
    shop = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 60)
    await issue(ledger, shop, member, 40, expires_at=clock.now() + timedelta(days=10))
    await redeem(ledger, tea, member, 40)  # shop's points, sooner to expire: tea receives 40 - 2
    exposed = await measured(db, clock, tea)
    assert (exposed.outstanding_value, exposed.net_payable) == (60, 0)

    await redeem(ledger, shop, member, 50)  # tea's points: tea owes 50, less the 38 it is owed

    exposed = await measured(db, clock, tea)
    assert (exposed.outstanding_value, exposed.net_payable, exposed.total) == (10, 12, 22)
    await issue(ledger, tea, member, 78)
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)


async def test_expired_points_free_headroom_without_the_expiry_job(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=100)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100, expires_at=clock.now() + timedelta(days=1))
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)

    clock.advance(timedelta(days=1))

    await issue(ledger, tea, member, 100)
    assert (await measured(db, clock, tea)).total == 100


async def test_issuance_reversal_frees_headroom(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=100)
    member = await make_member(ledger)
    issued = await issue(ledger, tea, member, 100)

    await ledger.reverse(
        merchant_id=tea,
        idempotency_key=key(),
        transaction_id=issued["transaction_id"],
        reference=ref(),
        points=70,
    )

    await issue(ledger, tea, member, 70)
    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)


async def test_escrowed_headroom_never_exceeds_limit_less_exposure(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=1000)
    shop = await make_merchant(db)
    members = [await make_member(ledger) for _ in range(5)]
    for index, member in enumerate(members):
        await issue(ledger, tea, member, 37 + index)
        assert await escrowed(db, tea) <= (await measured(db, clock, tea)).headroom
        await redeem(ledger, shop, member, 10)
        assert await escrowed(db, tea) <= (await measured(db, clock, tea)).headroom
    async with db.connection() as conn:
        slots = await conn.fetchval(
            "SELECT count(*) FROM exposure_slots WHERE merchant_id = $1", tea
        )
    assert slots == EXPOSURE_SLOTS


async def test_lowered_limit_applies_once_slots_are_reset(db, ledger, clock):
    tea = await make_merchant(db, liability_limit=1000)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    async with db.transaction() as conn:
        await merchant_repository.set_liability_limit(conn, tea, 150, clock.now())
        await merchant_repository.reset_exposure_slots(conn, tea)

    await issue(ledger, tea, member, 50)

    with pytest.raises(LiabilityLimitExceeded):
        await issue(ledger, tea, member, 1)


async def test_exposure_never_passes_the_limit_at_a_fractional_point_value(db, ledger, clock):
    # At 0.5 minor units a point, 9 outstanding points are worth ceil(4.5) = 5, but three
    # redemptions of 3 of them elsewhere owe 3 x round(1.5) = 6: accepting the points elsewhere
    # raised the issuer's exposure, by rounding alone. The limit must hold all the same.
    await use_settings(db, at(2039, 6, 1), point_value=Decimal("0.5"))
    clock.set(at(2039, 6, 1, 0, 1))
    tea = await make_merchant(db, liability_limit=10)
    shop = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 9)
    for _ in range(3):
        await redeem(ledger, shop, member, 3)
    exposed = await measured(db, clock, tea)
    assert (exposed.outstanding_value, exposed.net_payable) == (0, 6)

    for _ in range(6):
        try:
            await issue(ledger, tea, member, 2)  # worth 1 each
        except LiabilityLimitExceeded:
            break

    assert (await measured(db, clock, tea)).total <= 10
