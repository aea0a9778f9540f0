"""The nightly schedule: settlement and expiry on pgqueuer's cron scheduler (ADR 0009).

The jobs run hourly rather than at the cut-off: `settle_due` settles whatever periods have
finished (none, most hours), so the schedule needs no knowledge of the alliance's timezone, and
a scheduler that was down catches up on its next tick. pgqueuer hands each tick to one scheduler
(its schedules table is claimed with FOR UPDATE SKIP LOCKED); behind that, the run's advisory
lock and settled periods being returned as settled mean two schedulers can never settle a
period twice even if both fire.

Webhooks go out every minute (`deliver_webhooks_job`, ADR 0022): a settlement run's
`statement.published` events reach merchants within a minute or so of its commit, and retries
are due on the minute after their backoff. Two deliverers never send one event at once (FOR
UPDATE SKIP LOCKED and a lease), so a tick that overlaps the previous one is harmless.
"""

from __future__ import annotations

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, SchedulerManager
from pgqueuer.models import Schedule

from core.clock import Clock
from core.database import Database
from exchange.expiry import ExpiryReport
from exchange.service import Ledger
from settlement import service
from settlement.runs import RunInProgress, RunResult
from settlement.webhooks import delivery

SETTLE_CRON = "5 * * * *"
EXPIRE_CRON = "20 * * * *"
WEBHOOKS_CRON = "* * * * *"
INSTALL_LOCK_KEY = 0x5E7715  # one scheduler installs pgqueuer's tables


async def settle_job(db: Database, clock: Clock) -> list[RunResult]:
    """The scheduled settlement: every finished period; a run already going is left to finish."""
    try:
        return await service.settle_due(db, clock)
    except RunInProgress:
        return []


async def expire_job(db: Database, clock: Clock) -> ExpiryReport:
    return await Ledger(db, clock).expire()


async def deliver_webhooks_job(db: Database, clock: Clock) -> delivery.DeliveryReport:
    """The scheduled delivery: every webhook due now (new events and retries whose time came)."""
    return await delivery.deliver_due(db, clock)


async def install(connection: asyncpg.Connection) -> Queries:
    """pgqueuer's tables, created once whatever the number of schedulers starting together."""
    queries = Queries(AsyncpgDriver(connection))
    await connection.execute("SELECT pg_advisory_lock($1)", INSTALL_LOCK_KEY)
    try:
        if not await queries.has_table(queries.qbe.settings.schedules_table):
            await queries.install()
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", INSTALL_LOCK_KEY)
    return queries


async def run(db: Database, clock: Clock, dsn: str) -> None:
    """Run the scheduler until cancelled."""
    connection = await asyncpg.connect(dsn)
    try:
        manager = SchedulerManager(await install(connection))

        @manager.schedule("alliance.settle", SETTLE_CRON)
        async def settle(schedule: Schedule) -> None:
            await settle_job(db, clock)

        @manager.schedule("alliance.expire", EXPIRE_CRON)
        async def expire(schedule: Schedule) -> None:
            await expire_job(db, clock)

        @manager.schedule("alliance.webhooks", WEBHOOKS_CRON)
        async def webhooks(schedule: Schedule) -> None:
            await deliver_webhooks_job(db, clock)

        await manager.run()
    finally:
        await connection.close()
