"""Every ledger row in the database, counted, so that a refusal can be shown to have written none.

Counts are global on purpose: the API tests run one at a time in one process, so between two
snapshots of one test nothing but that test's requests can write. `request_nonces` is left out:
the gateway records a nonce for every authenticated request, which is replay protection, not a
ledger write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from core.database import Database
from tests.exchange.helpers import snapshot

LEDGER_TABLES = (
    "transactions",
    "postings",
    "lots",
    "obligations",
    "holds",
    "idempotency_records",
    "members",
    "member_refs",
    "member_accounts",
)

RESULTS_ONLY = {"idempotency_records": " WHERE NOT refused"}
"""A refusal by a ledger rule records itself under its key, so that a retry replays it (ADR
0013): not a ledger write. Those records are checked in test_idempotent_refusals.py."""


async def ledger_rows(db: Database) -> dict[str, Any]:
    """Row counts of every ledger table, plus the sums a write in place would change."""
    counts = " , ".join(
        f"(SELECT count(*) FROM {table}{RESULTS_ONLY.get(table, '')}) AS {table}"
        for table in LEDGER_TABLES
    )
    async with db.connection() as conn:
        row = await conn.fetchrow(
            f"""SELECT {counts},
                   (SELECT coalesce(sum(posted_points), 0) FROM member_accounts) AS posted_points,
                   (SELECT coalesce(sum(remaining_points), 0) FROM lots) AS remaining_points,
                   (SELECT count(*) FROM holds WHERE status = 'active') AS active_holds,
                   (SELECT coalesce(sum(headroom), 0) FROM exposure_slots) AS headroom"""
        )
    return dict(row)


async def transactions_of_merchant(db: Database, merchant_id: str) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM transactions WHERE merchant_id = $1", merchant_id
        )
    return count


@asynccontextmanager
async def nothing_written(
    db: Database, *, members: Iterable[str] = (), merchants: Iterable[str] = ()
) -> AsyncIterator[None]:
    """Assert that the block writes no ledger row, globally and for these members and merchants
    (balances, lots, holds, idempotency records, escrowed headroom: tests.exchange.helpers)."""
    members, merchants = list(members), list(merchants)
    before = await ledger_rows(db), await snapshot(db, members=members, merchants=merchants)
    yield
    after = await ledger_rows(db), await snapshot(db, members=members, merchants=merchants)
    assert after == before


@asynccontextmanager
async def no_ledger_effect_but_the_batch_record(db: Database) -> AsyncIterator[None]:
    """For a batch: its operations change nothing, while the batch itself (a 200 whose results
    are problems) records its response under its own Idempotency-Key: exactly one row."""
    before = await ledger_rows(db)
    yield
    after = await ledger_rows(db)
    assert after.pop("idempotency_records") == before.pop("idempotency_records") + 1
    assert after == before
