"""Settlement claims every unsettled row of the database, so each test gets an alliance of its
own: a fresh migrated database with the default settings, and a clock that moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from core.clock import FixedClock
from core.database import Database
from exchange.service import Ledger
from merchants import repository as merchant_repository
from tests.factories import DEFAULT_SETTINGS

# 10:00 in Shanghai on 2026-06-01: business date 2026-06-01, which closes at 16:00 UTC.
MORNING = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
async def alliance_db(fresh_database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(fresh_database_url, min_size=1, max_size=12)
    async with database.transaction() as conn:
        await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
    yield database
    await database.close()


@pytest.fixture
def day_clock() -> FixedClock:
    return FixedClock(MORNING)


@pytest.fixture
def alliance_ledger(alliance_db: Database, day_clock: FixedClock) -> Ledger:
    return Ledger(alliance_db, day_clock)
