"""Every test runs on a real PostgreSQL: `TEST_DATABASE_URL` if set, else the embedded server.

Each test session creates a fresh database on that server, applies the real migrations, and drops it
at the end, so runs never see each other's rows. Tests make their own merchants and members (unique
ids), so they need no cleanup between them, and the whole-ledger reconciliation at the end of the
session checks everything every test left behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import asyncpg
import pytest

from core.clock import FixedClock
from core.database import Database, asyncpg_dsn, embedded_database_url
from core.migrations import upgrade_to_head_async
from exchange.service import Ledger

pytest_plugins = ["tests.log_scan"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _server_url() -> str:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        return asyncpg_dsn(configured)
    return embedded_database_url(PROJECT_ROOT / ".data" / "test")


def _with_database(url: str, name: str) -> str:
    parsed = urlparse(url)
    return urlunparse(parsed._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def temporary_database(template: str | None = None) -> AsyncIterator[str]:
    """A new database on the test server (a copy of `template`'s, when named, which must have
    no connections); dropped afterwards."""
    server_url = _server_url()
    name = f"alliance_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await admin.close()
    try:
        yield _with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def migrated_database() -> AsyncIterator[str]:
    """A new database on the test server, at the latest migration; dropped afterwards."""
    async with temporary_database() as url:
        await upgrade_to_head_async(url)
        yield url


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


@pytest.fixture
async def fresh_database_url() -> AsyncIterator[str]:
    """For tests that break the books on purpose or need an empty alliance."""
    async with migrated_database() as url:
        yield url


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    """The shared test database. When the session ends, every test's leftovers must reconcile."""
    # Leaves room on a 100-connection server for the tests that open pools and servers of
    # their own; 200 tasks racing over 40 connections still race. TEST_POOL_MAX lowers it when
    # several suites share one server.
    pool_max = int(os.environ.get("TEST_POOL_MAX", "40"))
    database = await Database.connect(database_url, min_size=2, max_size=pool_max)
    yield database
    from exchange.reconcile import verify

    breaks = await verify(database)
    await database.close()
    assert breaks == [], f"the shared test ledger does not reconcile: {breaks}"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(scope="session", autouse=True)
async def alliance_settings(db: Database) -> None:
    from merchants import repository as merchant_repository
    from tests.factories import DEFAULT_SETTINGS

    async with db.transaction() as conn:
        await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)


@pytest.fixture
def ledger(db: Database, clock: FixedClock) -> Ledger:
    return Ledger(db, clock)
