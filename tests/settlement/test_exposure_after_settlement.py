"""An issuer's exposure counts only unsettled payables: settlement frees its headroom, and an
obligation committed too late for a run still counts until the next run settles it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exchange.errors import LiabilityLimitExceeded
from settlement import service
from tests.exchange.helpers import measured
from tests.factories import issue, make_member, make_merchant, redeem

DAY_ONE_CLOSES = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


async def test_settling_a_payable_frees_the_issuers_headroom(
    alliance_db, alliance_ledger, day_clock
):
    tea = await make_merchant(alliance_db, liability_limit=1000)
    books = await make_merchant(alliance_db)
    ann = await make_member(alliance_ledger)
    await issue(alliance_ledger, tea, ann, 1000)
    await redeem(alliance_ledger, books, ann, 400)  # Tea: 600 outstanding + 400 payable
    before = await measured(alliance_db, day_clock, tea)
    assert (before.outstanding_value, before.net_payable) == (600, 400)
    with pytest.raises(LiabilityLimitExceeded):
        await issue(alliance_ledger, tea, ann, 1)

    day_clock.set(DAY_ONE_CLOSES + timedelta(minutes=1))
    await service.settle_due(alliance_db, day_clock)

    after = await measured(alliance_db, day_clock, tea)
    assert (after.outstanding_value, after.net_payable) == (600, 0)
    await issue(alliance_ledger, tea, ann, 400)
    with pytest.raises(LiabilityLimitExceeded):
        await issue(alliance_ledger, tea, ann, 1)
