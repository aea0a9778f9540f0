"""Exactly once: every obligation is settled by one run, never two, never none — whatever
commits while a run reads, and whatever commits late with an instant before the cut-off."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from core.clock import FixedClock
from settlement import service
from tests.factories import issue, make_member, make_merchant, redeem, unique
from tests.settlement.conftest import MORNING

# For each obligation, the runs whose claim predicate takes it (computed from the stored runs).
CLAIMS_PER_OBLIGATION = """
WITH runs AS (
    SELECT run_id, period_end, snapshot,
           lag(period_end) OVER (ORDER BY period_end) AS previous_end,
           lag(snapshot) OVER (ORDER BY period_end) AS previous_snapshot
    FROM settlement_runs)
SELECT o.obligation_id, count(r.run_id) AS claims, min(r.run_id) AS run_id
FROM obligations o
LEFT JOIN runs r
  ON o.created_at < r.period_end AND pg_visible_in_snapshot(o.xact, r.snapshot)
 AND NOT (r.previous_end IS NOT NULL AND o.created_at < r.previous_end
          AND pg_visible_in_snapshot(o.xact, r.previous_snapshot))
GROUP BY o.obligation_id
"""


async def claims(db) -> dict[int, tuple[int, str | None]]:
    async with db.connection() as conn:
        rows = await conn.fetch(CLAIMS_PER_OBLIGATION)
    return {row["obligation_id"]: (row["claims"], row["run_id"]) for row in rows}


async def committed_obligations(db) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM obligations")
    return count


async def obligations_by_run(db) -> dict[str, int]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT run_id, obligations FROM settlement_runs")
    return {row["run_id"]: row["obligations"] for row in rows}


async def test_obligations_committed_during_a_run_are_settled_once_across_two_periods(
    alliance_db, alliance_ledger, day_clock
):
    tea, books = await make_merchant(alliance_db), await make_merchant(alliance_db)
    members = [await make_member(alliance_ledger) for _ in range(40)]
    for member in members:
        await issue(alliance_ledger, tea, member, 1000)
    # Every redemption is stamped at `stamped`, before both cut-offs; which run takes it depends
    # only on whether it committed before the first run took its snapshot.
    stamped = MORNING + timedelta(hours=1)
    day_clock.set(stamped)
    settlement_clock = FixedClock(stamped + timedelta(minutes=1))

    async def till(member: str) -> None:
        for _ in range(10):
            await redeem(alliance_ledger, books, member, 7)

    async def settle_midway() -> None:
        while await committed_obligations(alliance_db) < 50:
            await asyncio.sleep(0.005)
        await service.settle_cutoff(alliance_db, settlement_clock, stamped + timedelta(seconds=30))

    await asyncio.gather(*(till(member) for member in members[:30]), settle_midway())
    await service.settle_cutoff(alliance_db, settlement_clock, stamped + timedelta(seconds=45))

    taken = await claims(alliance_db)
    assert len(taken) == 300
    assert {count for count, _ in taken.values()} == {1}, "each obligation in exactly one run"
    per_run = await obligations_by_run(alliance_db)
    assert min(per_run.values()) > 0, "each run settled some: the first run read mid-stream"
    assert sum(per_run.values()) == 300
    for run_id, count in per_run.items():
        assert count == sum(1 for _, r in taken.values() if r == run_id)
    assert await service.verify(alliance_db) == []


async def test_a_transaction_that_commits_after_the_run_read_is_settled_next_time(
    alliance_db, alliance_ledger, day_clock
):
    tea, books = await make_merchant(alliance_db), await make_merchant(alliance_db)
    ann = await make_member(alliance_ledger)
    await issue(alliance_ledger, tea, ann, 100)
    key = unique("key")
    async with alliance_db.connection() as blocker:
        # Hold the idempotency key's row: the redemption does all its work, then waits to
        # record its response — it has not committed when the run takes its snapshot.
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute(
            """INSERT INTO idempotency_records (merchant_id, idempotency_key, request_hash,
                                                response, created_at)
               VALUES ($1, $2, '\\x00', '{}', $3)""",
            books,
            key,
            day_clock.now(),
        )
        late = asyncio.create_task(
            alliance_ledger.redeem(
                merchant_id=books, idempotency_key=key, member_id=ann, points=40, reference="r"
            )
        )
        await asyncio.sleep(0.3)
        assert not late.done()
        day_clock.advance(timedelta(minutes=1))
        first = await service.settle_cutoff(alliance_db, day_clock, day_clock.now())
        await blocking.rollback()
    outcome = await late
    assert outcome.body["settlement_value"] == 38  # 40 fen less the 5 % fee

    day_clock.advance(timedelta(minutes=1))
    second = await service.settle_cutoff(alliance_db, day_clock, day_clock.now())

    assert first.run.obligations == 0, "created before the cut-off, but not committed"
    assert second.run.obligations == 1
    assert {count for count, _ in (await claims(alliance_db)).values()} == {1}
    assert await service.verify(alliance_db) == []
