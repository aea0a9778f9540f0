"""The settlement page on an alliance of its own (a run settles every finished period of the
database): the periods due, starting a run, and the runs paged by keyset."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from console import repository
from console.users import Role
from core.clock import FixedClock
from core.database import Database
from exchange.service import Ledger
from merchants import repository as merchant_repository
from server.main import create_app
from tests.console.conftest import make_user, sign_in, token_for
from tests.factories import DEFAULT_SETTINGS, issue, make_member, make_merchant, redeem

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
TRADING_DAYS = 3


@pytest.fixture
async def alliance(fresh_database_url: str) -> AsyncIterator[tuple[Database, FixedClock, str]]:
    database = await Database.connect(fresh_database_url, min_size=1, max_size=4)
    async with database.transaction() as conn:
        await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
    clock = FixedClock(START)
    ledger = Ledger(database, clock)
    issuer, acceptor = await make_merchant(database), await make_merchant(database)
    member = await make_member(ledger)
    for _ in range(TRADING_DAYS):
        await issue(ledger, issuer, member, 100)
        await redeem(ledger, acceptor, member, 40)
        clock.advance(timedelta(days=1))
    yield database, clock, acceptor
    await database.close()


@pytest.fixture
async def operator_web(
    alliance: tuple[Database, FixedClock, str],
) -> AsyncIterator[httpx.AsyncClient]:
    database, clock, _ = alliance
    operator = (await make_user(database, Role.OPERATOR, now=clock.now()))[0]
    application = create_app(database=database, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as web:
            assert (await sign_in(web, operator.username)).status_code == 303
            yield web


async def test_the_page_names_the_periods_due_and_a_run_settles_them(
    operator_web: httpx.AsyncClient, alliance: tuple[Database, FixedClock, str]
):
    database, _, acceptor = alliance
    page = await operator_web.get("/console/settlement")
    assert page.status_code == 200
    due = re.findall(r'data-period="([0-9-]+)"', page.text)
    assert due == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert "(3 now)" in page.text

    started = await operator_web.post(
        "/console/settlement/run",
        data={"confirm": "yes", "csrftoken": await token_for(operator_web, "/console/settlement")},
    )
    assert started.status_code == 303
    after = await operator_web.get("/console/settlement")
    assert "every finished period is settled" in after.text
    async with database.connection() as conn:
        runs = [
            row["run_id"]
            for row in await conn.fetch(
                "SELECT run_id FROM settlement_runs ORDER BY period_end DESC"
            )
        ]
    assert len(runs) == TRADING_DAYS
    assert not re.findall(r'data-period="([0-9-]+)"', after.text)
    runs_table = after.text.split('data-testid="runs"')[1].split("</table>")[0]
    positions = [runs_table.index(run) for run in runs]
    assert positions == sorted(positions)

    # Each merchant's page lists its statements, one per run, newest period first.
    merchant = await operator_web.get(f"/console/merchants/{acceptor}")
    statements = merchant.text.split('data-testid="merchant-statements"')[1].split("</table>")[0]
    positions = [statements.index(run) for run in runs]
    assert positions == sorted(positions)
    assert statements.count("receive") == TRADING_DAYS


async def test_runs_are_paged_newest_period_first(
    operator_web: httpx.AsyncClient, alliance: tuple[Database, FixedClock, str]
):
    database, _, _ = alliance
    started = await operator_web.post(
        "/console/settlement/run",
        data={"confirm": "yes", "csrftoken": await token_for(operator_web, "/console/settlement")},
    )
    assert started.status_code == 303
    async with database.connection() as conn:
        newest_first = "SELECT run_id FROM settlement_runs ORDER BY period_end DESC"
        expected = [row["run_id"] for row in await conn.fetch(newest_first)]
        seen: list[str] = []
        cursor = None
        while True:
            page = await repository.runs_page(conn, cursor=cursor, limit=2)
            assert len(page.rows) <= 2
            seen += [row["run_id"] for row in page.rows]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert len(expected) == TRADING_DAYS
    assert seen == expected
