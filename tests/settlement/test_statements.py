"""Statements of a small alliance, computed by hand, across two periods with a reversal that
crosses the cut-off. Settings: 1 fen per point, 5 % fee, half-to-even, cut-off 00:00 Shanghai."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from core.errors import ValidationFailed
from settlement import service
from settlement.runs import PeriodClosed, ReconciliationFailed
from tests.factories import DEFAULT_SETTINGS, issue, make_member, make_merchant, redeem, unique
from tests.settlement.conftest import MORNING

DAY_ONE_CLOSES = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)
DAY_TWO_CLOSES = datetime(2026, 6, 2, 16, 0, tzinfo=UTC)


def by_merchant(detail):
    return {s["merchant_id"]: s for s in detail["statements"]}


def lines(statement):
    return {
        line["counterparty_id"]: (line["receivable"], line["payable"], line["fees"], line["net"])
        for line in statement["lines"]
    }


@pytest.fixture
async def day_one(alliance_db, alliance_ledger):
    """Tea, Books and Shop; two members; three cross-merchant redemptions and one at home."""
    tea, books, shop = [
        await make_merchant(alliance_db, name=unique(n)) for n in ("tea", "books", "shop")
    ]
    ann, bo = await make_member(alliance_ledger), await make_member(alliance_ledger)
    await issue(alliance_ledger, tea, ann, 1000)
    await issue(alliance_ledger, books, bo, 500)
    await issue(alliance_ledger, shop, ann, 300)
    big = await redeem(alliance_ledger, books, ann, 400)  # Tea's points: Tea owes Books 400, fee 20
    await redeem(alliance_ledger, tea, bo, 130)  # Books owes Tea 130, fee 6.5 -> 6 (half-even)
    await redeem(alliance_ledger, shop, ann, 50)  # Tea owes Shop 50, fee 2.5 -> 2 (half-even)
    await redeem(alliance_ledger, books, bo, 10)  # Books' own points: no obligation
    return {"tea": tea, "books": books, "shop": shop, "ann": ann, "bo": bo, "big": big}


async def test_a_day_nets_to_the_hand_computed_statements(alliance_db, day_clock, day_one):
    tea, books, shop = day_one["tea"], day_one["books"], day_one["shop"]
    day_clock.set(DAY_ONE_CLOSES + timedelta(minutes=5))

    [result] = await service.settle_due(alliance_db, day_clock)

    assert result.run.period_end == DAY_ONE_CLOSES
    assert result.run.period_date == date(2026, 6, 1)
    assert result.run.obligations == 3
    assert (result.run.gross_total, result.run.fee_total) == (580, 28)
    assert result.run.fee_residue == Decimal("-1.00")  # 28 charged against 29.00 exact
    statements = by_merchant(await service.run_detail(alliance_db, result.run.run_id))
    assert {
        m: (s["receivable"], s["payable"], s["fees"], s["net"]) for m, s in statements.items()
    } == {
        tea: (130, 450, 6, -326),
        books: (400, 130, 20, 250),
        shop: (50, 0, 2, 48),
    }
    assert lines(statements[tea]) == {books: (130, 400, 6, -276), shop: (0, 50, 0, -50)}
    assert lines(statements[books]) == {tea: (400, 130, 20, 250)}
    assert lines(statements[shop]) == {tea: (50, 0, 2, 48)}
    assert [statements[m]["direction"] for m in (tea, books, shop)] == ["pay", "receive", "receive"]
    assert (statements[tea]["issued_points"], statements[tea]["redeemed_points"]) == (1000, 130)
    assert (statements[books]["issued_points"], statements[books]["redeemed_points"]) == (500, 410)
    assert sum(s["net"] + s["fees"] for s in statements.values()) == 0


async def test_a_reversal_of_a_settled_redemption_lands_in_the_next_period(
    alliance_db, alliance_ledger, day_clock, day_one
):
    tea, books = day_one["tea"], day_one["books"]
    day_clock.set(DAY_ONE_CLOSES + timedelta(minutes=5))
    [first] = await service.settle_due(alliance_db, day_clock)
    before = by_merchant(await service.run_detail(alliance_db, first.run.run_id))
    # A first period starts with the alliance (PROTOCOL: a period is two RFC 3339 instants).
    assert first.run.period_start == DEFAULT_SETTINGS.effective_from
    assert all(
        statement["period"]["start"] == "2020-01-01T00:00:00.000000Z"
        for statement in before.values()
    )

    # The next morning Books refunds 100 of the 400 it accepted yesterday.
    day_clock.set(MORNING + timedelta(days=1))
    await alliance_ledger.reverse(
        merchant_id=books,
        idempotency_key=unique("key"),
        transaction_id=str(day_one["big"]["transaction_id"]),
        reference=unique("refund"),
        points=100,
    )
    day_clock.set(DAY_TWO_CLOSES + timedelta(minutes=5))
    [second] = await service.settle_due(alliance_db, day_clock)

    statements = by_merchant(await service.run_detail(alliance_db, second.run.run_id))
    assert second.run.period_start == DAY_ONE_CLOSES
    assert {
        m: (s["receivable"], s["payable"], s["fees"], s["net"]) for m, s in statements.items()
    } == {
        tea: (0, -100, 0, 100),
        books: (-100, 0, -5, -95),
    }
    assert statements[books]["reversed_points"] == 100
    # The closed period is unchanged.
    assert by_merchant(await service.run_detail(alliance_db, first.run.run_id)) == before


async def test_settling_a_settled_period_again_returns_the_same_run(
    alliance_db, day_clock, day_one
):
    day_clock.set(DAY_ONE_CLOSES + timedelta(hours=1))
    first = await service.settle_date(alliance_db, day_clock, date(2026, 6, 1))
    again = await service.settle_date(alliance_db, day_clock, date(2026, 6, 1))
    assert again.replayed
    assert again.run == first.run
    assert await service.settle_due(alliance_db, day_clock) == []


async def test_an_intraday_run_splits_the_day_and_the_nightly_run_takes_the_rest(
    alliance_db, alliance_ledger, day_clock, day_one
):
    tea, shop, ann = day_one["tea"], day_one["shop"], day_one["ann"]
    midday = MORNING + timedelta(hours=2)
    day_clock.set(midday)
    intraday = await service.settle_cutoff(alliance_db, day_clock, midday)
    await redeem(alliance_ledger, shop, ann, 20)  # Tea owes Shop 20 more, fee 1
    day_clock.set(DAY_ONE_CLOSES + timedelta(minutes=1))
    [nightly] = await service.settle_due(alliance_db, day_clock)

    assert intraday.run.kind == "adhoc"
    assert intraday.run.obligations == 3
    assert (nightly.run.period_start, nightly.run.period_end) == (midday, DAY_ONE_CLOSES)
    assert nightly.run.obligations == 1
    assert by_merchant(await service.run_detail(alliance_db, nightly.run.run_id))[tea]["net"] == -20
    assert intraday.run.period_date == nightly.run.period_date == date(2026, 6, 1)


async def test_a_cutoff_in_the_future_or_inside_a_settled_period_is_refused(
    alliance_db, day_clock, day_one
):
    with pytest.raises(ValidationFailed):
        await service.settle_cutoff(alliance_db, day_clock, day_clock.now() + timedelta(seconds=1))
    day_clock.set(DAY_ONE_CLOSES + timedelta(hours=1))
    await service.settle_date(alliance_db, day_clock, date(2026, 6, 1))
    with pytest.raises(PeriodClosed):
        await service.settle_cutoff(alliance_db, day_clock, MORNING + timedelta(hours=1))
    async with alliance_db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == 1


async def test_nothing_to_settle_before_the_first_transaction(alliance_db, day_clock):
    assert await service.settle_due(alliance_db, day_clock) == []


async def test_every_finished_day_is_settled_in_order_with_empty_days_in_between(
    alliance_db, day_clock, day_one
):
    day_clock.set(DAY_ONE_CLOSES + timedelta(days=2, minutes=1))
    results = await service.settle_due(alliance_db, day_clock)
    assert [r.run.period_date for r in results] == [
        date(2026, 6, 1),
        date(2026, 6, 2),
        date(2026, 6, 3),
    ]
    assert [r.run.obligations for r in results] == [3, 0, 0]
    assert [r.merchants for r in results] == [3, 0, 0]
    assert await service.verify(alliance_db) == []


async def test_a_ledger_break_publishes_nothing_and_names_the_rows(alliance_db, day_clock, day_one):
    """The ledger's reconciliation runs beside the run; its break still stops the commit."""
    async with alliance_db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")  # past the triggers
        await conn.execute(
            "UPDATE member_accounts SET posted_points = posted_points + 1 WHERE member_id = $1",
            day_one["ann"],
        )
    day_clock.set(DAY_ONE_CLOSES + timedelta(minutes=5))

    with pytest.raises(ReconciliationFailed) as failure:
        await service.settle_due(alliance_db, day_clock)

    [found] = failure.value.breaks
    assert found.check == "member_balance_equals_lots"
    assert [row["member_id"] for row in found.rows] == [day_one["ann"]]
    async with alliance_db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == 0
        assert await conn.fetchval("SELECT count(*) FROM statements") == 0
        locks = """SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = database
                   WHERE locktype = 'advisory' AND granted AND d.datname = current_database()"""
        assert await conn.fetchval(locks) == 0
