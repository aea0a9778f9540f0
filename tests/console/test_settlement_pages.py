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
from settlement import service as settlement_service
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


SERVER_BOUND_S = 1.0


async def test_a_run_started_from_the_console_is_not_cut_off_by_the_servers_statement_bound(
    fresh_database_url: str, alliance: tuple[Database, FixedClock, str], monkeypatch
):
    """The server's pool cuts off any statement after its bound; a run started from the
    console gets a pool without one, as `alliance settle` does (10M obligations outlast 60 s)."""
    _, clock, _ = alliance
    bounded = await Database.connect(
        fresh_database_url, min_size=1, max_size=4, statement_timeout_s=SERVER_BOUND_S
    )
    real_run = settlement_service.run_settlement
    slow_statements: list[float | None] = []

    async def run_with_a_long_statement(
        db: Database, clock: FixedClock, *, cutoff: datetime | None = None
    ) -> dict[str, object]:
        async with db.connection() as conn:
            slow_statements.append(conn._config.command_timeout)
            await conn.execute(f"SELECT pg_sleep({SERVER_BOUND_S * 1.5})")
        return await real_run(db, clock, cutoff=cutoff)

    monkeypatch.setattr(settlement_service, "run_settlement", run_with_a_long_statement)
    operator = (await make_user(bounded, Role.OPERATOR, now=clock.now()))[0]
    application = create_app(database=bounded, clock=clock)
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://console.test"
            ) as web:
                assert (await sign_in(web, operator.username)).status_code == 303
                started = await web.post(
                    "/console/settlement/run",
                    data={
                        "confirm": "yes",
                        "csrftoken": await token_for(web, "/console/settlement"),
                    },
                )
        assert started.status_code == 303
        assert slow_statements == [None]
        async with bounded.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == TRADING_DAYS
            with pytest.raises(TimeoutError):  # the server's own pool still bounds statements
                await conn.execute(f"SELECT pg_sleep({SERVER_BOUND_S * 1.5})")
    finally:
        await bounded.close()
