"""Two schedulers at once: pgqueuer's tables are installed once, and every period is settled
exactly once however many settlement jobs fire together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from settlement import scheduler
from tests.factories import issue, make_member, make_merchant, redeem

DAY_ONE_CLOSES = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


async def test_concurrent_settlement_jobs_settle_each_period_once(
    alliance_db, alliance_ledger, day_clock
):
    tea, books = await make_merchant(alliance_db), await make_merchant(alliance_db)
    ann = await make_member(alliance_ledger)
    await issue(alliance_ledger, tea, ann, 100)
    await redeem(alliance_ledger, books, ann, 60)
    day_clock.set(DAY_ONE_CLOSES + timedelta(days=3, minutes=5))

    results = await asyncio.gather(
        *(scheduler.settle_job(alliance_db, day_clock) for _ in range(4))
    )

    async with alliance_db.connection() as conn:
        dates = [
            r["period_date"]
            for r in await conn.fetch("SELECT period_date FROM settlement_runs ORDER BY period_end")
        ]
        settled = await conn.fetchval("SELECT sum(obligations) FROM settlement_runs")
    assert [d.isoformat() for d in dates] == [
        "2026-06-01",
        "2026-06-02",
        "2026-06-03",
        "2026-06-04",
    ]
    assert settled == 1
    # A job that met another's lock stops (the other finishes the list); a period two jobs
    # reached is published by one and returned as settled to the other.
    assert len({r.run.run_id for job in results for r in job}) <= 4


async def test_two_schedulers_starting_together_install_pgqueuer_once(fresh_database_url):
    connections = [await asyncpg.connect(fresh_database_url) for _ in range(2)]
    try:
        await asyncio.gather(*(scheduler.install(c) for c in connections))
        tables = await connections[0].fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pgqueuer%'"
        )
    finally:
        for connection in connections:
            await connection.close()
    assert tables >= 3
