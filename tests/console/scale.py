"""How fast the console's reads stay on a large ledger (not a test; run by hand, ~2 minutes):

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python -m tests.console.scale --transactions 2000000

Makes a scratch database, migrates it, bulk-inserts synthetic transactions (with postings and
obligations for redemptions) straight in SQL (the ledger's rules are not what is measured here),
then times each console read the way the pages call it, and prints the table in docs/console.md.
The scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from console import audit, dashboard, repository
from console.repository import LedgerFilter
from core.database import Database, asyncpg_dsn
from core.migrations import upgrade_to_head_async
from merchants import repository as merchant_repository
from tests.factories import DEFAULT_SETTINGS

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
DAYS = 60
MERCHANTS = 20
MEMBERS = 50_000
AUDIT_ENTRIES = 500_000

FILL = """
INSERT INTO merchants (merchant_id, name, liability_limit, created_at, updated_at)
SELECT 'mer_' || i, 'Merchant ' || i, 10^12, $1, $1 FROM generate_series(1, {merchants}) i;
INSERT INTO members (member_id, created_at)
SELECT 'mbr_' || i, $1 FROM generate_series(1, {members}) i;
INSERT INTO member_refs (external_ref, member_id)
SELECT 'card-' || i, 'mbr_' || i FROM generate_series(1, {members}) i;
INSERT INTO member_accounts (member_id, currency, posted_points)
SELECT 'mbr_' || i, 'AP', 0 FROM generate_series(1, {members}) i;
"""

TRANSACTIONS = """
INSERT INTO transactions (member_id, transaction_id, kind, merchant_id, currency, points,
                          reference, created_at, balance_after, reverses)
SELECT 'mbr_' || (1 + i % {members}),
       'txn_' || lpad(i::text, 12, '0'),
       CASE WHEN i % 10000 = 0 THEN 'expiry' WHEN i % 3 = 0 THEN 'redemption'
            ELSE 'issuance' END,
       CASE WHEN i % 10000 = 0 THEN NULL ELSE 'mer_' || (1 + i % {merchants}) END,
       'AP', 1 + i % 500, 'ref-' || i,
       $1::timestamptz - make_interval(secs => ({days} * 86400.0) * i / {total}),
       0, NULL
FROM generate_series(1, {total}) i
"""


async def _fill(url: str, total: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            FILL.format(merchants=MERCHANTS, members=MEMBERS).replace("$1", "'2020-01-01Z'")
        )
        sql = TRANSACTIONS.format(members=MEMBERS, merchants=MERCHANTS, days=DAYS, total=total)
        await conn.execute(sql.replace("$1::timestamptz", f"'{NOW.isoformat()}'::timestamptz"))
        await conn.execute(
            """INSERT INTO obligations (member_id, transaction_id, debtor_id, creditor_id, points,
                                        gross_value, fee, created_at)
               SELECT member_id, transaction_id,
                      CASE WHEN merchant_id = 'mer_1' THEN 'mer_2' ELSE 'mer_1' END,
                      merchant_id, points, points, points / 20, created_at
               FROM transactions WHERE kind = 'redemption'"""
        )
        await conn.execute(
            """INSERT INTO lots (member_id, lot_id, currency, issuer_id, issued_points,
                                 remaining_points, issued_at, expires_at, transaction_id)
               SELECT member_id, nextval('lot_ids'), 'AP', merchant_id, points, points / 2,
                      created_at, created_at + interval '180 days', transaction_id
               FROM transactions WHERE kind = 'issuance'"""
        )
        # An audit log of AUDIT_ENTRIES (hashes not chained: the pages are measured, not
        # verification), 1 in 1,000 a failed sign-in.
        await conn.execute(
            f"""INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash,
                                       entry_hash)
                SELECT i, '{NOW.isoformat()}'::timestamptz - make_interval(secs => i),
                       'user' || (i % 10),
                       CASE WHEN i % 1000 = 0 THEN 'signin.failed' ELSE 'ledger.export' END,
                       NULL, '{{}}'::jsonb, sha256((i - 1)::text::bytea), sha256(i::text::bytea)
                FROM generate_series(1, {AUDIT_ENTRIES}) i"""
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _time(label: str, runs: int, work: Callable[[], Awaitable[Any]]) -> tuple[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        times.append((time.perf_counter() - start) * 1000)
    return label, statistics.median(times)


async def main(total: int) -> None:
    server = asyncpg_dsn(os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@/postgres"))
    name = f"console_scale_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade_to_head_async(url)
        started = time.perf_counter()
        await _fill(url, total)
        print(f"filled {total:,} transactions in {time.perf_counter() - started:.0f} s")  # noqa: T201
        db = await Database.connect(url, min_size=1, max_size=4)
        async with db.transaction() as conn:
            await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
        async with db.connection() as conn:
            first = await repository.ledger_page(conn, LedgerFilter(), cursor=None, limit=50)
            deep_cursor = repository.encode_cursor(NOW - timedelta(days=45), "txn_")
            rows: list[tuple[str, float]] = []

            async def page(flt: LedgerFilter, cursor: str | None = None) -> None:
                await repository.ledger_page(conn, flt, cursor=cursor, limit=50)

            rows.append(await _time("ledger, newest page", 5, lambda: page(LedgerFilter())))
            rows.append(
                await _time("ledger, next page", 5, lambda: page(LedgerFilter(), first.next_cursor))
            )
            rows.append(
                await _time(
                    "ledger, page 45 days back", 5, lambda: page(LedgerFilter(), deep_cursor)
                )
            )
            rows.append(
                await _time(
                    "ledger, by merchant", 5, lambda: page(LedgerFilter(merchant_id="mer_7"))
                )
            )
            rows.append(
                await _time(
                    "ledger, by member", 5, lambda: page(LedgerFilter(member_id="mbr_4242"))
                )
            )
            rows.append(
                await _time(
                    "ledger, by kind (redemption)", 5, lambda: page(LedgerFilter(kind="redemption"))
                )
            )
            rows.append(
                await _time(
                    "ledger, by kind (expiry: 1 in 10,000)",
                    3,
                    lambda: page(LedgerFilter(kind="expiry")),
                )
            )
            rows.append(
                await _time(
                    "ledger, by day",
                    5,
                    lambda: page(
                        LedgerFilter(since=NOW - timedelta(days=30), until=NOW - timedelta(days=29))
                    ),
                )
            )
            rows.append(
                await _time(
                    "ledger, by transaction id",
                    5,
                    lambda: page(LedgerFilter(transaction_id="txn_000000123456")),
                )
            )
            rows.append(
                await _time(
                    "transaction detail",
                    5,
                    lambda: repository.transaction_detail(conn, "txn_000000123456"),
                )
            )
            rows.append(
                await _time(
                    "member lookup by reference",
                    5,
                    lambda: repository.find_member(conn, "card-4242"),
                )
            )
            rows.append(
                await _time(
                    "member's external references",
                    5,
                    lambda: repository.member_refs(conn, "mbr_4242", limit=101),
                )
            )
            rows.append(
                await _time(
                    "member lots page",
                    5,
                    lambda: repository.lots_page(
                        conn, member_id="mbr_4242", live_only=True, now=NOW, cursor=None, limit=50
                    ),
                )
            )
            rows.append(
                await _time(
                    "merchants page",
                    5,
                    lambda: repository.merchants_page(conn, search=None, cursor=None, limit=50),
                )
            )

            async def board_cold() -> None:
                await conn.execute(
                    "DELETE FROM console_daily_totals; DELETE FROM console_closed_days"
                )
                await dashboard.compute(db, NOW)

            rows.append(await _time("dashboard, cold (fills 29 days of cache)", 1, board_cold))
            rows.append(
                await _time(
                    "dashboard, warm (cache + today live)", 3, lambda: dashboard.compute(db, NOW)
                )
            )
            rows.append(
                await _time("audit page", 5, lambda: audit.page(conn, before_seq=None, limit=50))
            )
            rows.append(
                await _time(
                    "audit page, by action",
                    5,
                    lambda: audit.page(conn, before_seq=None, limit=50, action="signin.failed"),
                )
            )
        await db.close()
        print(f"| console read ({total:,} transactions) | median ms |")  # noqa: T201
        print("| --- | ---: |")  # noqa: T201
        for label, ms in rows:
            print(f"| {label} | {ms:.1f} |")  # noqa: T201
    finally:
        admin = await asyncpg.connect(server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=2_000_000)
    asyncio.run(main(parser.parse_args().transactions))
