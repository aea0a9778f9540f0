"""A run killed with SIGKILL in the middle of publishing leaves nothing, and the next run
finishes the period. The run is held at a known point — writing statements waits on a merchant
row this test locks — so the kill lands mid-run every time, not by luck of timing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

from core.clock import SystemClock
from settlement import service
from settlement.runs import RunInProgress
from tests.conftest import PROJECT_ROOT
from tests.factories import issue, make_member, make_merchant, redeem

CUTOFF = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


async def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_run_killed_while_publishing_leaves_nothing_and_a_rerun_finishes(
    alliance_db, alliance_ledger, fresh_database_url
):
    tea, books = await make_merchant(alliance_db), await make_merchant(alliance_db)
    ann = await make_member(alliance_ledger)
    await issue(alliance_ledger, tea, ann, 1000)
    await redeem(alliance_ledger, books, ann, 400)

    async with alliance_db.connection() as holder:
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT 1 FROM merchants WHERE merchant_id = $1 FOR UPDATE", books)
        process = subprocess.Popen(
            [sys.executable, "-c", "from cli.app import main; main()", "settle", "--cutoff",
             CUTOFF.isoformat()],
            cwd=PROJECT_ROOT,
            env={**os.environ, "DATABASE_URL": fresh_database_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

        async def run_is_blocked_writing_statements() -> bool:
            async with alliance_db.connection() as conn:
                waiting: int = await conn.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE wait_event_type = 'Lock' AND query ILIKE 'COPY%statements%'"""
                )
            return waiting == 1

        try:
            await wait_for(run_is_blocked_writing_statements)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        await hold.rollback()

    async def nothing_was_published() -> bool:
        async with alliance_db.connection() as conn:
            runs = await conn.fetchval("SELECT count(*) FROM settlement_runs")
            statements = await conn.fetchval("SELECT count(*) FROM statements")
            orphans = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            )
        assert (runs, statements) == (0, 0)
        return orphans == 0  # the killed run's backend has gone, and its lock with it

    await wait_for(nothing_was_published)

    while True:
        try:
            result = await service.settle_cutoff(alliance_db, SystemClock(), CUTOFF)
            break
        except RunInProgress:
            await asyncio.sleep(0.05)
    assert not result.replayed
    assert (result.run.obligations, result.run.gross_total, result.run.fee_total) == (1, 400, 20)
    assert await service.verify(alliance_db) == []
