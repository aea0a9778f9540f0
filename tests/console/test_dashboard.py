"""Dashboard figures: per-day totals (closed days cached, open days live), flow, liability."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from console import dashboard
from console.limits import DASHBOARD_DAYS
from core.clock import FixedClock
from core.database import Database
from exchange import exposure
from exchange.service import Ledger
from merchants import repository as merchant_repository
from tests.factories import DEFAULT_SETTINGS, issue, make_member, make_merchant, redeem

DAY_ONE = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, 1 June
TODAY = datetime(2026, 6, 3, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai, 3 June


@pytest.fixture
async def alliance(fresh_database_url: str):
    database = await Database.connect(fresh_database_url, min_size=1, max_size=4)
    async with database.transaction() as conn:
        await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
    yield database
    await database.close()


async def test_daily_totals_flow_and_liability(alliance: Database):
    clock = FixedClock(DAY_ONE)
    ledger = Ledger(alliance, clock)
    issuer = await make_merchant(alliance, name="Issuer")
    acceptor = await make_merchant(alliance, name="Acceptor")
    member = await make_member(ledger)
    await issue(ledger, issuer, member, 100)
    await redeem(ledger, acceptor, member, 40)
    clock.set(TODAY)
    await issue(ledger, issuer, member, 7)

    board = await dashboard.compute(alliance, TODAY)
    assert len(board.days) == DASHBOARD_DAYS
    assert board.days[-1] == date(2026, 6, 3)
    assert board.issued == {date(2026, 6, 1): 100, date(2026, 6, 3): 7}
    assert board.redeemed == {date(2026, 6, 1): 40}
    assert board.flow == {(issuer, acceptor): 40}  # 40 points at 1 fen, gross
    assert board.outstanding == {issuer: 67}
    assert board.cached_days == 0
    by_id = {e.merchant_id: e for e in board.exposures}
    assert by_id[issuer].outstanding_points == 67
    assert by_id[issuer].exposure == 67 + 40  # outstanding value + what it owes the acceptor
    assert by_id[acceptor].exposure == 0
    # The dashboard's grouped figures are the ledger's own exposure, merchant by merchant.
    async with alliance.connection() as conn:
        for merchant_id in (issuer, acceptor):
            measured = await exposure.measure(
                conn,
                merchant_id=merchant_id,
                liability_limit=by_id[merchant_id].limit,
                settings=board.settings,
                now=TODAY,
            )
            assert by_id[merchant_id].exposure == measured.total
            assert by_id[merchant_id].net_payable == measured.net_payable
            assert by_id[merchant_id].outstanding_value == measured.outstanding_value

    again = await dashboard.compute(alliance, TODAY)
    assert again.cached_days == DASHBOARD_DAYS - 1  # every day but today is closed
    assert again.issued == board.issued
    assert again.flow == board.flow
    async with alliance.connection() as conn:
        cached = await conn.fetch(
            "SELECT day, metric, amount FROM console_daily_totals WHERE day = '2026-06-01'"
        )
    assert sorted((r["metric"], r["amount"]) for r in cached) == [
        ("flow", 40),
        ("issued", 100),
        ("redeemed", 40),
    ]


async def test_breakage_is_counted_per_issuer_on_the_day_it_is_written_off(alliance: Database):
    clock = FixedClock(DAY_ONE)
    ledger = Ledger(alliance, clock)
    issuer = await make_merchant(alliance)
    member = await make_member(ledger)
    await issue(ledger, issuer, member, 25, expires_at=datetime(2026, 6, 2, 0, 0, tzinfo=UTC))
    clock.set(TODAY)
    before = await dashboard.compute(alliance, TODAY)
    assert before.expired_unposted == 25  # expired, not yet written off
    await ledger.expire()
    after = await dashboard.compute(alliance, TODAY)
    assert after.breakage_by_issuer == {issuer: 25}
    assert after.breakage_by_day == {date(2026, 6, 3): {issuer: 25}}
    assert after.expired_unposted == 0
