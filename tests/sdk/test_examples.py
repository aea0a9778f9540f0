"""The examples run against the demo alliance `make run` serves, as CI runs them: a new database,
`alliance demo` (its week of history and its key files), `alliance serve`, then each script.
`alliance settle` of the demo's finished days then gives the SDK real statements to read."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.database import Database
from sdk import AllianceClient, AsyncAllianceClient, NotFoundError, load_private_key
from tests.conftest import PROJECT_ROOT, migrated_database
from tests.sdk.live import Server, alliance_command, alliance_env, start, stop, wait_until_ready

DEMO_TIMEOUT_S = 120


@dataclass
class DemoAlliance:
    url: str
    server: Server
    keys: Path
    db: Database


@pytest.fixture(scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DemoAlliance]:
    """`make run`'s alliance: migrated, seeded by `alliance demo`, served by `alliance serve`."""
    directory = tmp_path_factory.mktemp("demo")
    async with migrated_database() as url:
        # Seeding (a simulated week) and the server's start overlap; neither needs the other.
        seeding = subprocess.Popen(
            [*alliance_command(), "demo", "--data-dir", str(directory)],
            env=alliance_env(url),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        server = start(url, directory / "server.log")
        db = await Database.connect(url, min_size=1, max_size=2)
        try:
            output, _ = seeding.communicate(timeout=DEMO_TIMEOUT_S)
            assert seeding.returncode == 0, output.decode()
            wait_until_ready(server)
            yield DemoAlliance(url, server, directory / "demo-keys", db)
        finally:
            stop(server)
            await db.close()


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("till.py", "issued 128 points for 128.50 yuan"),
        ("checkout.py", "captured 250 points"),
        ("refund.py", "screening cancelled: 40 points back to the member"),
        ("sign_a_request.py", "POST /v1/issuances -> 201"),
    ],
)
def test_each_example_runs_against_the_demo_alliance(demo: DemoAlliance, script, expected):
    ran = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "examples" / script)],
        env={
            **alliance_env(""),
            "ALLIANCE_BASE_URL": demo.server.url,
            "ALLIANCE_DEMO_KEYS": str(demo.keys),
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert expected in ran.stdout


@pytest.fixture(scope="module")
def settled(demo: DemoAlliance) -> DemoAlliance:
    """The demo's finished days settled, as the operator does it: `alliance settle`."""
    ran = subprocess.run(
        [*alliance_command(), "settle", "--out", str(demo.keys.parent / "payments")],
        env=alliance_env(demo.url),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    assert ran.returncode == 0, ran.stderr + ran.stdout
    return demo


def tea_house(demo: DemoAlliance) -> AllianceClient:
    key = load_private_key(demo.keys / "tea-house-1.pem")
    return AllianceClient(base_url=demo.server.url, key_id="tea-house-1", private_key=key)


async def statement_ids(db: Database, key_id: str) -> list[str]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT s.statement_id FROM statements s
               JOIN merchant_keys k ON k.merchant_id = s.merchant_id
               WHERE k.key_id = $1""",
            key_id,
        )
    return sorted(row["statement_id"] for row in rows)


async def test_statements_list_page_and_get(settled: DemoAlliance):
    expected = await statement_ids(settled.db, "tea-house-1")
    with tea_house(settled) as client:
        first = client.list_statements(limit=2)
        everything = list(client.iter_statements(page_size=2))
        one = client.get_statement(statement_id=first.data[0].statement_id)
        same_day = client.list_statements(period=one.period.date)

    assert len(first.data) == 2
    assert first.next_cursor is not None
    assert sorted(s.statement_id for s in everything) == expected
    ends = [s.period.end for s in everything]
    assert ends == sorted(ends, reverse=True)  # newest first
    assert one == first.data[0]
    assert [s.statement_id for s in same_day.data] == [one.statement_id]
    for statement in everything:
        assert statement.net == statement.receivable - statement.payable - statement.fees
        assert all(line.counterparty_id != statement.merchant_id for line in statement.lines)


async def test_async_statements_and_anothers_statement_is_not_found(settled: DemoAlliance):
    key = load_private_key(settled.keys / "bookshop-1.pem")
    client = AsyncAllianceClient(base_url=settled.server.url, key_id="bookshop-1", private_key=key)
    async with client:
        mine = [s async for s in client.iter_statements(page_size=3)]
        assert sorted(s.statement_id for s in mine) == await statement_ids(settled.db, "bookshop-1")
        tea_house_statement = (await statement_ids(settled.db, "tea-house-1"))[0]
        with pytest.raises(NotFoundError):
            await client.get_statement(statement_id=tea_house_statement)


def test_sums_over_one_period_net_to_zero(settled: DemoAlliance):
    # PROTOCOL.md: over one period, the merchants' net plus their fees sum to zero.
    totals: dict[str, int] = {}
    for key_id in ("tea-house-1", "bookshop-1", "cinema-1"):
        key = load_private_key(settled.keys / f"{key_id}.pem")
        with AllianceClient(base_url=settled.server.url, key_id=key_id, private_key=key) as client:
            for statement in client.iter_statements():
                day = statement.period.date or statement.period.end.isoformat()
                totals[day] = totals.get(day, 0) + statement.net + statement.fees
    assert totals
    assert set(totals.values()) == {0}
