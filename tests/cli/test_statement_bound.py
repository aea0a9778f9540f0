"""The server's pool bounds each statement; operator commands (settle, expire, verify) do not,
since their statements span whole periods (core.limits.STATEMENT_TIMEOUT_S)."""

from __future__ import annotations

import pytest

from cli.runtime import open_database
from core.database import Database

SLEEP_S = 0.5


async def test_a_statement_past_the_pool_bound_is_cut_off(database_url):
    db = await Database.connect(database_url, min_size=1, max_size=1, statement_timeout_s=0.1)
    try:
        async with db.connection() as conn:
            with pytest.raises(TimeoutError):
                await conn.execute(f"SELECT pg_sleep({SLEEP_S})")
    finally:
        await db.close()


async def test_operator_commands_run_statements_without_a_bound(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    async with open_database() as db, db.connection() as conn:
        # asyncpg's own bound, as the pool configured it: None is no client-side limit.
        assert conn._config.command_timeout is None
        await conn.execute(f"SELECT pg_sleep({SLEEP_S})")
