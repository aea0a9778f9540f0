"""`alliance settle` killed with SIGKILL at several points of a run, then run again, publishes the
same statements as an uninterrupted run of the same ledger.

The ledger is built once, in a template database; every case settles a copy of it
(`CREATE DATABASE … TEMPLATE`, so the same merchants, transactions, `xact`s and exchange key), and
the reference is one uninterrupted run on another copy. Each kill point is a real hold: this
test takes a lock the run needs next, waits until `pg_stat_activity` shows the run's backend
waiting on that lock at that very statement (or, before commit, the run idle in its transaction
while its reconciliation waits), and only then kills the process. Nothing sleeps on a guess.

Before the commit the kill must leave nothing; after it, the complete result. Either way the
re-run (`alliance settle` again, same cut-off) leaves one run whose statements equal the
reference's in every field and line, except what is the run's own by construction: run and
statement ids (fresh random ids, `core.ids.new_id`), `created_at` (the instant the run ran), and
the root signature (Ed25519 over a message that includes the run id: it differs only because the
id does, and `alliance verify` checks it with the exchange key on both sides).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import pytest

from core.clock import FixedClock
from core.database import Database
from exchange import exchange_keys
from exchange.service import Ledger
from merchants import repository as merchant_repository
from settlement import service
from tests.conftest import PROJECT_ROOT, migrated_database, temporary_database
from tests.factories import DEFAULT_SETTINGS, issue, make_member, make_merchant, redeem, unique
from tests.settlement.conftest import MORNING

CUTOFF = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
TIMEOUT_S = 60.0

# What differs between two runs of the same ledger by construction (see the module docstring).
RUN_OWN = {"run_id", "created_at", "root_signature"}
STATEMENT_OWN = {"statement_id", "run_id", "created_at"}


@dataclass(frozen=True, slots=True)
class KillPoint:
    """Where the run is held: `lock` is taken first, then the run waits at `waiting`."""

    name: str
    lock: str
    waiting: str  # LIKE pattern of the statement the run's backend waits on, lock-blocked
    idle_after: str | None = None  # LIKE pattern of the run's last statement, idle in transaction
    committed: bool = False


KILL_POINTS = [
    # The snapshot is taken and stored nowhere yet; claiming the obligations waits.
    KillPoint(
        "claiming obligations",
        "LOCK TABLE obligations IN ACCESS EXCLUSIVE MODE",
        "%width_bucket%FROM obligations o%",
    ),
    # Obligations claimed and summed per pair; the merchants' own activity and the Merkle
    # leaves (both over transactions) wait.
    KillPoint(
        "netted, before hashing",
        "LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE",
        "%FILTER (WHERE t.kind = 'issuance')%",
    ),
    # Netted, hashed and signed; writing the run row waits.
    KillPoint(
        "writing the run",
        "LOCK TABLE settlement_runs IN SHARE MODE",
        "INSERT INTO settlement_runs%",
    ),
    # The run row written; the statements' COPY waits.
    KillPoint("writing statements", "LOCK TABLE statements IN SHARE MODE", 'COPY "statements"%'),
    # Run and statements written; the lines' COPY waits.
    KillPoint(
        "writing statement lines",
        "LOCK TABLE statement_lines IN SHARE MODE",
        'COPY "statement_lines"%',
    ),
    # Everything written and settlement's own checks done; the ledger's reconciliation (on
    # another connection) waits, the run's transaction is open: the last point before commit.
    KillPoint(
        "reconciling, just before commit",
        "LOCK TABLE postings IN ACCESS EXCLUSIVE MODE",
        "%FROM postings GROUP BY member_id, transaction_id, currency%",
        idle_after="%FROM settlement_runs r LEFT JOIN statements s%",
    ),
    # Committed; writing the payment files waits for the bank accounts.
    KillPoint(
        "committed, writing payment files",
        "LOCK TABLE merchant_bank_accounts IN ACCESS EXCLUSIVE MODE",
        "SELECT * FROM merchant_bank_accounts%",
        committed=True,
    ),
]


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll a condition on the database until it holds (a timeout fails the test)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.02)


def database_name(url: str) -> str:
    # The path, not the last "/": the embedded server's URL ends in ?host=/its/socket/dir.
    return urlparse(url).path.lstrip("/")


@contextlib.asynccontextmanager
async def copy_of(template_url: str) -> AsyncIterator[str]:
    """A new database with the template's every row (the template must have no connections)."""
    async with temporary_database(template=database_name(template_url)) as url:
        yield url


async def build_ledger(url: str) -> None:
    """Four merchants, three members: cross-merchant and own redemptions, a partial refund,
    and a redemption after the cut-off (not this run's). The exchange key exists beforehand,
    so every copy signs with the same key."""
    db = await Database.connect(url, min_size=1, max_size=4)
    try:
        async with db.transaction() as conn:
            await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
        await exchange_keys.signing_key(db, MORNING)
        clock = FixedClock(MORNING)
        ledger = Ledger(db, clock)
        tea, books, shop, cafe = [
            await make_merchant(db, name=unique(n)) for n in ("tea", "books", "shop", "cafe")
        ]
        ann, bo, cy = [await make_member(ledger) for _ in range(3)]
        await issue(ledger, tea, ann, 1000)
        await issue(ledger, books, bo, 500)
        await issue(ledger, shop, ann, 300)
        await issue(ledger, cafe, cy, 777)
        big = await redeem(ledger, books, ann, 400)
        await redeem(ledger, tea, bo, 130)
        await redeem(ledger, shop, ann, 50)
        await redeem(ledger, books, bo, 10)  # own points: no obligation
        await redeem(ledger, tea, cy, 333)
        await redeem(ledger, shop, cy, 101)
        clock.set(MORNING + timedelta(hours=1))
        await ledger.reverse(
            merchant_id=books,
            idempotency_key=unique("key"),
            transaction_id=str(big["transaction_id"]),
            reference=unique("refund"),
            points=100,
        )
        clock.set(CUTOFF + timedelta(hours=1))
        await redeem(ledger, books, cy, 45)  # after the cut-off: the next period's
    finally:
        await db.close()


def published(detail: dict[str, Any]) -> dict[str, Any]:
    """A run's detail without what is the run's own (ids, when it ran, its signature)."""
    statements = [
        {
            **{key: value for key, value in s.items() if key not in STATEMENT_OWN},
            "merkle": {key: value for key, value in s["merkle"].items() if key != "signature"},
        }
        for s in detail["statements"]
    ]
    for s in detail["statements"]:
        assert s["run_id"] == detail["run_id"]
        assert s["created_at"] == detail["created_at"]
        assert s["merkle"]["signature"] == detail["root_signature"]
    run = {key: value for key, value in detail.items() if key not in RUN_OWN | {"statements"}}
    return {**run, "statements": statements}


async def settled(url: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """Every run's published detail, and what `alliance verify` finds (checks every signature)."""
    db = await Database.connect(url, min_size=1, max_size=4)
    try:
        runs = await service.list_runs(db)
        details = [await service.run_detail(db, run["run_id"]) for run in runs]
        return details, await service.verify(db)
    finally:
        await db.close()


def alliance_settle(url: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from cli.app import main; main()", "settle", "--cutoff",
         CUTOFF.isoformat(), "--out", str(out)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": url, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.fixture(scope="module")
async def template_ledger() -> AsyncIterator[str]:
    async with migrated_database() as url:
        await build_ledger(url)
        yield url


@pytest.fixture(scope="module")
async def reference(template_ledger: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The statements of an uninterrupted `alliance settle` of another copy of the ledger."""
    async with copy_of(template_ledger) as url:
        process = alliance_settle(url, tmp_path_factory.mktemp("reference"))
        output, _ = await asyncio.to_thread(process.communicate, timeout=TIMEOUT_S)
        assert process.returncode == 0, output.decode()
        [detail], breaks = await settled(url)
    assert breaks == []
    assert detail["obligations"] == 6  # five redemptions' obligations and a refund's
    assert detail["transactions"] == 11  # the redemption after the cut-off is not in it
    return detail


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.name for p in KILL_POINTS])
async def test_a_run_killed_at_any_point_then_rerun_publishes_the_uninterrupted_statements(
    point: KillPoint, template_ledger: str, reference: dict[str, Any], tmp_path: Path
) -> None:
    async with copy_of(template_ledger) as url:
        name = database_name(url)
        monitor = await asyncpg.connect(url)
        holder = await asyncpg.connect(url)
        try:
            ours = [monitor.get_server_pid(), holder.get_server_pid()]

            async def backends(where: str, pattern: str) -> list[int]:
                rows = await monitor.fetch(
                    f"""SELECT pid FROM pg_stat_activity
                        WHERE datname = $1 AND pid <> ALL($2::int[]) AND {where}
                          AND query LIKE $3""",
                    name,
                    ours,
                    pattern,
                )
                return [row["pid"] for row in rows]

            async def held_at_the_point() -> bool:
                waiting = await backends("wait_event_type = 'Lock'", point.waiting)
                if point.idle_after is None:
                    return len(waiting) == 1
                idle = await backends("state = 'idle in transaction'", point.idle_after)
                return len(waiting) == 1 and len(idle) == 1

            hold = holder.transaction()
            await hold.start()
            await holder.execute(point.lock)
            process = alliance_settle(url, tmp_path / "killed")
            try:
                await wait_for(held_at_the_point, f"the run held at {point.name}")
                killed_backends = await backends("true", "%")
            finally:
                process.send_signal(signal.SIGKILL)
                process.communicate()
            assert process.returncode == -signal.SIGKILL
            await hold.rollback()

            async def killed_backends_have_gone() -> bool:
                alive: int = await monitor.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                    killed_backends,
                )
                return alive == 0  # and with them, the run's advisory lock

            await wait_for(killed_backends_have_gone, "the killed run's backends to end")
            left = [
                await monitor.fetchval(f"SELECT count(*) FROM {table}")
                for table in ("settlement_runs", "statements", "statement_lines")
            ]
        finally:
            await holder.close()
            await monitor.close()

        if point.committed:
            [detail], _ = await settled(url)
            assert published(detail) == published(reference)  # complete before the re-run
        else:
            assert left == [0, 0, 0]  # nothing at all

        rerun = alliance_settle(url, tmp_path / "rerun")
        output, _ = await asyncio.to_thread(rerun.communicate, timeout=TIMEOUT_S)
        assert rerun.returncode == 0, output.decode()
        assert ("already settled" in output.decode()) == point.committed
        details, breaks = await settled(url)

    assert breaks == []
    [detail] = details
    assert published(detail) == published(reference)
    assert detail["run_id"] != reference["run_id"]  # a run of its own, not a copy


# --- killed at random moments (RELIABILITY.md D3: ≥20 points nightly) -------------------------

RANDOM_KILLS = int(os.environ.get("SETTLEMENT_KILLS", "4"))
"""Random kill moments in CI; `make soak` runs 25. The seed is printed on failure."""
RANDOM_KILL_SEED = int(os.environ.get("SETTLEMENT_KILL_SEED", "20261205"))


async def first_backend_of(url: str, process: subprocess.Popen[bytes]) -> float:
    """Wait until the process has a backend on the database (its work has begun); the instant."""
    monitor = await asyncpg.connect(url)
    try:
        name, ours = database_name(url), monitor.get_server_pid()

        async def connected() -> bool:
            assert process.poll() is None, "the run ended before it connected"
            count: int = await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2",
                name,
                ours,
            )
            return count > 0

        await wait_for(connected, "the run to connect")
        return asyncio.get_running_loop().time()
    finally:
        await monitor.close()


@pytest.fixture(scope="module")
async def working_seconds(template_ledger: str, tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long an uninterrupted run works, from its first backend to its exit."""
    async with copy_of(template_ledger) as url:
        process = alliance_settle(url, tmp_path_factory.mktemp("timed"))
        began = await first_backend_of(url, process)
        output, _ = await asyncio.to_thread(process.communicate, timeout=TIMEOUT_S)
        assert process.returncode == 0, output.decode()
        return asyncio.get_running_loop().time() - began


@pytest.mark.parametrize("kill", range(RANDOM_KILLS))
async def test_a_run_killed_at_a_random_moment_then_rerun_publishes_the_uninterrupted_statements(
    kill: int,
    template_ledger: str,
    reference: dict[str, Any],
    working_seconds: float,
    tmp_path: Path,
) -> None:
    """SIGKILL at a moment drawn from the run's working time (and a little past it): whatever
    it interrupted, the books verify and a re-run publishes the reference's statements, once.

    On this small ledger the run commits within its first few tens of milliseconds and then
    writes its payment files, so moments are drawn log-uniformly from 1 ms: about half land
    before the commit, half after (seen: 15 of 25 before it at the default seed)."""
    import math
    import random

    low, high = math.log(0.001), math.log(max(working_seconds * 1.1, 0.002))
    delay = math.exp(random.Random(f"{RANDOM_KILL_SEED}-{kill}").uniform(low, high))
    async with copy_of(template_ledger) as url:
        process = alliance_settle(url, tmp_path / "killed")
        try:
            await first_backend_of(url, process)
            await asyncio.sleep(delay)
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate()
        _, breaks_after_kill = await settled(url)
        assert breaks_after_kill == [], f"seed {RANDOM_KILL_SEED}, kill {kill} at +{delay:.3f} s"

        rerun = alliance_settle(url, tmp_path / "rerun")
        output, _ = await asyncio.to_thread(rerun.communicate, timeout=TIMEOUT_S)
        assert rerun.returncode == 0, output.decode()
        details, breaks = await settled(url)

    assert breaks == []
    [detail] = details  # exactly one run, whether the killed one had committed or not
    assert published(detail) == published(reference), f"kill {kill} at +{delay:.3f} s"
