"""The settlement page on an alliance of its own (a run settles every finished period of the
database): the periods due, starting a run, and the runs paged by keyset."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
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
JOB_WAIT_S = 60


async def job_ended(database: Database) -> asyncpg.Record:
    """The latest settlement job, once it has ended (runs started from the console are jobs)."""
    deadline = asyncio.get_running_loop().time() + JOB_WAIT_S
    while True:
        async with database.connection() as conn:
            job = await conn.fetchrow(
                "SELECT * FROM settlement_jobs ORDER BY started_at DESC LIMIT 1"
            )
        if job is not None and job["finished_at"] is not None:
            return job
        assert asyncio.get_running_loop().time() < deadline, f"the job did not end: {job}"
        await asyncio.sleep(0.05)


async def start_run(web: httpx.AsyncClient, **fields: str) -> httpx.Response:
    token = await token_for(web, "/console/settlement")
    return await web.post(
        "/console/settlement/run", data={"confirm": "yes", "csrftoken": token, **fields}
    )


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

    started = await start_run(operator_web)
    assert started.status_code == 303
    job = await job_ended(database)
    assert job["outcome"] == "settled", job
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
    assert sorted(job["runs"]) == sorted(runs)
    assert 'data-job-state="settled"' in after.text
    assert all(f"/console/settlement/runs/{run}" in after.text for run in runs)
    async with database.connection() as conn:
        actions = [
            (row["action"], row["target"])
            for row in await conn.fetch(
                "SELECT action, target FROM audit_log WHERE target = $1 ORDER BY seq",
                job["job_id"],
            )
        ]
    assert actions == [("settlement.run_started", job["job_id"]), ("settlement.run", job["job_id"])]
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
    started = await start_run(operator_web)
    assert started.status_code == 303
    assert (await job_ended(database))["outcome"] == "settled"
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
        db: Database, clock: FixedClock, *, cutoff: datetime | None = None, progress: Any
    ) -> dict[str, object]:
        async with db.connection() as conn:
            slow_statements.append(conn._config.command_timeout)
            await conn.execute(f"SELECT pg_sleep({SERVER_BOUND_S * 1.5})")
        return await real_run(db, clock, cutoff=cutoff, progress=progress)

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
                started = await start_run(web)
                job = await job_ended(bounded)
        assert started.status_code == 303
        assert job["outcome"] == "settled", job
        assert slow_statements == [None]
        async with bounded.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == TRADING_DAYS
            with pytest.raises(TimeoutError):  # the server's own pool still bounds statements
                await conn.execute(f"SELECT pg_sleep({SERVER_BOUND_S * 1.5})")
    finally:
        await bounded.close()


async def test_a_run_in_progress_shows_its_phase_and_a_second_start_is_refused(
    operator_web: httpx.AsyncClient,
    alliance: tuple[Database, FixedClock, str],
    monkeypatch: pytest.MonkeyPatch,
):
    database, _, _ = alliance
    real_run = settlement_service.run_settlement
    reached_merkle, release = asyncio.Event(), asyncio.Event()

    async def run_that_waits_in_the_merkle_phase(
        db: Database, clock: FixedClock, *, cutoff: datetime | None = None, progress: Any
    ) -> dict[str, object]:
        progress("merkle", 1_500, 6_000)
        reached_merkle.set()
        await release.wait()
        return await real_run(db, clock, cutoff=cutoff, progress=progress)

    monkeypatch.setattr(settlement_service, "run_settlement", run_that_waits_in_the_merkle_phase)
    assert (await start_run(operator_web)).status_code == 303
    await asyncio.wait_for(reached_merkle.wait(), JOB_WAIT_S)
    try:
        page = await _page_once_the_heartbeat_says(operator_web, "1,500 of 6,000")
        job_card = page.text.split('data-testid="settlement-job"')[1].split("</div>\n")[0]
        assert 'data-job-state="running"' in page.text
        assert "hashing the claimed transactions" in page.text.lower()
        assert 'aria-valuenow="25"' in page.text  # 1,500 of 6,000
        assert 'data-testid="job-refresh"' in page.text
        assert 'data-testid="start-run"' not in page.text  # no second start offered
        assert "started by" in job_card

        # A forged or stale form is refused all the same, and starts nothing.
        token = await token_for(operator_web)  # any page with a form: this one offers none
        again = await operator_web.post(
            "/console/settlement/run",
            data={"confirm": "yes", "csrftoken": token},
            follow_redirects=True,
        )
        assert "still running" in again.text
        async with database.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM settlement_jobs") == 1
    finally:
        release.set()
    job = await job_ended(database)
    assert job["outcome"] == "settled"
    assert len(job["runs"]) == TRADING_DAYS
    after = await operator_web.get("/console/settlement")
    assert 'data-job-state="settled"' in after.text
    assert 'data-testid="job-refresh"' not in after.text
    assert 'data-testid="start-run"' in after.text


async def _page_once_the_heartbeat_says(web: httpx.AsyncClient, text: str) -> httpx.Response:
    deadline = asyncio.get_running_loop().time() + JOB_WAIT_S
    while True:
        page = await web.get("/console/settlement")
        if text in page.text:
            return page
        assert asyncio.get_running_loop().time() < deadline, page.text
        await asyncio.sleep(0.1)


async def test_a_job_whose_worker_died_is_shown_stalled_and_closed_by_the_next_start(
    operator_web: httpx.AsyncClient, alliance: tuple[Database, FixedClock, str]
):
    database, _, _ = alliance
    async with database.connection() as conn:
        await conn.execute(
            """INSERT INTO settlement_jobs (job_id, started_by, started_at, phase, done, total,
                                            heartbeat_at)
               VALUES ('job_dead', 'someone', now() - interval '1 hour', 'merkle', 10, 20,
                       now() - interval '59 minutes')"""
        )
    page = await operator_web.get("/console/settlement")
    assert 'data-job-state="stalled"' in page.text
    assert 'data-testid="start-run"' in page.text  # a dead job does not block a new run

    assert (await start_run(operator_web)).status_code == 303
    job = await job_ended(database)
    assert job["outcome"] == "settled"
    assert len(job["runs"]) == TRADING_DAYS
    async with database.connection() as conn:
        dead = await conn.fetchrow("SELECT * FROM settlement_jobs WHERE job_id = 'job_dead'")
    assert dead["outcome"] == "interrupted"
    assert dead["finished_at"] is not None


async def test_a_failed_run_says_so_without_its_internals_and_changes_nothing(
    operator_web: httpx.AsyncClient,
    alliance: tuple[Database, FixedClock, str],
    monkeypatch: pytest.MonkeyPatch,
):
    database, _, _ = alliance

    async def run_that_breaks(
        db: Database, clock: FixedClock, *, cutoff: datetime | None = None, progress: Any
    ) -> dict[str, object]:
        async with db.connection() as conn:
            await conn.execute("SELECT no_such_column FROM settlement_runs")
        raise AssertionError("unreachable")

    monkeypatch.setattr(settlement_service, "run_settlement", run_that_breaks)
    assert (await start_run(operator_web)).status_code == 303
    job = await job_ended(database)
    assert job["outcome"] == "failed"
    page = await operator_web.get("/console/settlement")
    assert 'data-job-state="failed"' in page.text
    assert "server&#39;s log" in page.text or "server's log" in page.text
    assert "no_such_column" not in page.text
    async with database.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == 0
        entry = await conn.fetchrow(
            "SELECT action, details FROM audit_log WHERE target = $1 ORDER BY seq DESC LIMIT 1",
            job["job_id"],
        )
    assert entry["action"] == "settlement.run_failed"
    assert entry["details"]["runs"] == []
