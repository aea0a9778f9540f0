"""Shared helpers for the ledger tests: snapshots, double-entry checks, settings and currencies.

Everything here is scoped to the members and merchants a test made itself: the database is shared
by the whole session, so no helper ever assumes a global count.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from core.database import Database
from exchange import exposure
from exchange.service import settings_at
from merchants import repository as merchant_repository
from tests.factories import DEFAULT_SETTINGS, unique

RATES_FROM = datetime(2020, 1, 1, tzinfo=UTC)
SETTINGS_YEAR = 2039


def key() -> str:
    return unique("key")


def ref() -> str:
    return unique("ref")


def at(year: int, month: int = 1, day: int = 1, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


async def use_settings(db: Database, effective_from: datetime, **changes: Any) -> None:
    """Add an alliance settings version at `effective_from`, which must be in SETTINGS_YEAR.

    Tests before 2031 rely on the default settings of 2020; the merchant tests own 2031 to 2038
    and 2040 to 2042 (and `alliance settings show` at 2040 lists every later version), so the
    ledger's settings tests keep to 2039, each in a stretch of its own, with its clock set there.
    """
    assert effective_from.year == SETTINGS_YEAR, f"ledger settings tests keep to {SETTINGS_YEAR}"
    settings = dataclasses.replace(DEFAULT_SETTINGS, effective_from=effective_from, **changes)
    async with db.transaction() as conn:
        await merchant_repository.insert_settings(conn, settings)


async def make_currency(db: Database, owner_id: str, *, to_own: Decimal, to_ap: Decimal) -> str:
    """A point programme owned by `owner_id`, with AP -> own and own -> AP rates since 2020."""
    code = "P" + uuid.uuid4().hex[:10].upper()
    async with db.transaction() as conn:
        await merchant_repository.insert_currency(
            conn, currency=code, name=f"Points of {owner_id}", owner_merchant_id=owner_id
        )
        await merchant_repository.insert_conversion_rate(
            conn, source="AP", target=code, rate=to_own, effective_from=RATES_FROM
        )
        await merchant_repository.insert_conversion_rate(
            conn, source=code, target="AP", rate=to_ap, effective_from=RATES_FROM
        )
    return code


async def measured(db: Database, clock: Any, merchant_id: str) -> exposure.Exposure:
    """The merchant's exposure computed from the books at the clock's instant."""
    async with db.connection() as conn:
        merchant = await merchant_repository.get_merchant(conn, merchant_id)
        assert merchant is not None
        settings = await settings_at(conn, clock.now())
        return await exposure.measure(
            conn,
            merchant_id=merchant_id,
            liability_limit=merchant.liability_limit,
            settings=settings,
            now=clock.now(),
        )


async def escrowed(db: Database, merchant_id: str) -> int:
    """The headroom escrowed in the merchant's exposure slots."""
    async with db.connection() as conn:
        total: int = await conn.fetchval(
            "SELECT coalesce(sum(headroom), 0) FROM exposure_slots WHERE merchant_id = $1",
            merchant_id,
        )
    return total


async def snapshot(
    db: Database, *, members: Iterable[str] = (), merchants: Iterable[str] = ()
) -> dict[str, Any]:
    """Row counts and balances that a refused operation must leave exactly as they were."""
    member_ids, merchant_ids = list(members), list(merchants)
    state: dict[str, Any] = {}
    async with db.connection() as conn:
        for table in ("transactions", "postings", "lots", "obligations", "holds"):
            state[f"{table}_of_members"] = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE member_id = ANY($1::text[])", member_ids
            )
        state["lots"] = [
            tuple(row)
            for row in await conn.fetch(
                """SELECT lot_id, remaining_points FROM lots WHERE member_id = ANY($1::text[])
                   ORDER BY lot_id""",
                member_ids,
            )
        ]
        state["accounts"] = [
            tuple(row)
            for row in await conn.fetch(
                """SELECT member_id, currency, posted_points FROM member_accounts
                   WHERE member_id = ANY($1::text[]) ORDER BY member_id, currency""",
                member_ids,
            )
        ]
        state["holds"] = [
            tuple(row)
            for row in await conn.fetch(
                """SELECT hold_id, status, captured_points FROM holds
                   WHERE member_id = ANY($1::text[]) ORDER BY hold_id""",
                member_ids,
            )
        ]
        state["transactions_of_merchants"] = await conn.fetchval(
            "SELECT count(*) FROM transactions WHERE merchant_id = ANY($1::text[])", merchant_ids
        )
        state["obligations_of_merchants"] = await conn.fetchval(
            """SELECT count(*) FROM obligations
               WHERE debtor_id = ANY($1::text[]) OR creditor_id = ANY($1::text[])""",
            merchant_ids,
        )
        state["holds_of_merchants"] = await conn.fetchval(
            "SELECT count(*) FROM holds WHERE merchant_id = ANY($1::text[])", merchant_ids
        )
        # Results only: a refusal by a ledger rule records itself, so that its key replays it
        # (ADR 0013); that record is checked where refusals are (test_idempotent_refusals.py).
        state["idempotency_records"] = [
            (row["merchant_id"], row["idempotency_key"], bytes(row["request_hash"]))
            for row in await conn.fetch(
                """SELECT merchant_id, idempotency_key, request_hash FROM idempotency_records
                   WHERE merchant_id = ANY($1::text[]) AND NOT refused
                   ORDER BY merchant_id, idempotency_key""",
                merchant_ids,
            )
        ]
        state["exposure_headroom"] = await conn.fetchval(
            """SELECT coalesce(sum(headroom), 0) FROM exposure_slots
               WHERE merchant_id = ANY($1::text[])""",
            merchant_ids,
        )
    return state


async def lots_of(db: Database, member_id: str, currency: str = "AP") -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT lot_id, issuer_id, issued_points, remaining_points, issued_at, expires_at
               FROM lots WHERE member_id = $1 AND currency = $2 ORDER BY lot_id""",
            member_id,
            currency,
        )
    return [dict(row) for row in rows]


async def remaining_by_issuer(db: Database, member_id: str) -> dict[str, int]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT issuer_id, sum(remaining_points)::bigint AS points FROM lots
               WHERE member_id = $1 AND currency = 'AP' GROUP BY issuer_id""",
            member_id,
        )
    return {row["issuer_id"]: row["points"] for row in rows}


async def obligations_of(db: Database, transaction_id: str) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT obligation_id, debtor_id, creditor_id, points, gross_value, fee,
                      reverses_obligation_id
               FROM obligations WHERE transaction_id = $1 ORDER BY obligation_id""",
            transaction_id,
        )
    return [dict(row) for row in rows]


async def obligations_between(db: Database, debtor_id: str, creditor_id: str) -> dict[str, int]:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            """SELECT coalesce(sum(points), 0)::bigint AS points,
                      coalesce(sum(gross_value), 0)::bigint AS gross_value,
                      coalesce(sum(fee), 0)::bigint AS fee, count(*) AS rows
               FROM obligations WHERE debtor_id = $1 AND creditor_id = $2""",
            debtor_id,
            creditor_id,
        )
    return dict(row)


async def postings_of(db: Database, transaction_id: str) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT account, currency, amount, lot_id FROM postings
               WHERE transaction_id = $1 ORDER BY posting_no""",
            transaction_id,
        )
    return [dict(row) for row in rows]


async def transactions_of(db: Database, member_id: str) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT * FROM transactions WHERE member_id = $1 ORDER BY created_at, transaction_id",
            member_id,
        )
    return [dict(row) for row in rows]


async def count_transactions(db: Database, merchant_id: str) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM transactions WHERE merchant_id = $1", merchant_id
        )
    return count


async def books_breaks(db: Database, members: Iterable[str]) -> dict[str, list[Any]]:
    """Double-entry and lot invariants for these members; every list empty means the books hold.

    - every transaction's postings sum to zero in each currency;
    - member_accounts.posted_points = the member's postings = the sum of its lots' remaining;
    - per issuer, the issuer account's postings = minus the remaining points of its lots;
    - no lot below zero or above what it was issued with;
    - obligations = cross-merchant consumption of AP lots, net of reversals.
    """
    member_ids = list(members)
    async with db.connection() as conn:
        unbalanced = await conn.fetch(
            """SELECT transaction_id, currency, sum(amount) AS total FROM postings
               WHERE member_id = ANY($1::text[])
               GROUP BY transaction_id, currency HAVING sum(amount) <> 0""",
            member_ids,
        )
        accounts = await conn.fetch(
            """WITH lot_sums AS (
                   SELECT member_id, currency, sum(remaining_points) AS points FROM lots
                   WHERE member_id = ANY($1::text[]) GROUP BY member_id, currency),
               posting_sums AS (
                   SELECT member_id, currency, sum(amount) AS points FROM postings
                   WHERE member_id = ANY($1::text[]) AND account = 'member:' || member_id
                   GROUP BY member_id, currency)
               SELECT a.member_id, a.currency, a.posted_points, l.points AS lots,
                      p.points AS postings
               FROM member_accounts a
               LEFT JOIN lot_sums l USING (member_id, currency)
               LEFT JOIN posting_sums p USING (member_id, currency)
               WHERE a.member_id = ANY($1::text[])
                 AND (a.posted_points <> coalesce(l.points, 0)
                      OR a.posted_points <> coalesce(p.points, 0))""",
            member_ids,
        )
        issuers = await conn.fetch(
            """WITH outstanding AS (
                   SELECT member_id, currency, 'issuer:' || issuer_id AS account,
                          sum(remaining_points) AS points
                   FROM lots WHERE member_id = ANY($1::text[])
                   GROUP BY member_id, currency, issuer_id),
               issuer_postings AS (
                   SELECT member_id, currency, account, sum(amount) AS points FROM postings
                   WHERE member_id = ANY($1::text[]) AND account LIKE 'issuer:%'
                   GROUP BY member_id, currency, account)
               SELECT * FROM outstanding o FULL JOIN issuer_postings p
                 USING (member_id, currency, account)
               WHERE coalesce(o.points, 0) + coalesce(p.points, 0) <> 0""",
            member_ids,
        )
        bad_lots = await conn.fetch(
            """SELECT lot_id, remaining_points, issued_points FROM lots
               WHERE member_id = ANY($1::text[])
                 AND (remaining_points < 0 OR remaining_points > issued_points)""",
            member_ids,
        )
        obligations = await conn.fetch(
            """WITH moved AS (
                   -- redemptions, captures and conversions take from lots (negative postings);
                   -- reversals of them give back (positive postings), credited to the original.
                   SELECT l.issuer_id AS debtor_id, t.merchant_id AS creditor_id,
                          -sum(p.amount) AS points
                   FROM postings p
                   JOIN transactions t USING (member_id, transaction_id)
                   JOIN lots l ON l.member_id = p.member_id AND l.lot_id = p.lot_id
                   WHERE p.member_id = ANY($1::text[]) AND p.currency = 'AP'
                     AND p.account = 'member:' || p.member_id
                     AND l.issuer_id <> t.merchant_id
                     AND ((t.kind IN ('redemption', 'conversion') AND p.amount < 0)
                          OR (t.kind = 'reversal' AND p.amount > 0 AND EXISTS (
                                SELECT 1 FROM transactions o
                                WHERE o.member_id = t.member_id
                                  AND o.transaction_id = t.reverses
                                  AND o.kind = 'redemption')))
                   GROUP BY 1, 2),
               owed AS (
                   SELECT debtor_id, creditor_id, sum(points) AS points FROM obligations
                   WHERE member_id = ANY($1::text[]) GROUP BY 1, 2)
               SELECT * FROM moved m FULL JOIN owed o USING (debtor_id, creditor_id)
               WHERE coalesce(m.points, 0) <> coalesce(o.points, 0)""",
            member_ids,
        )
    return {
        "unbalanced_transactions": [dict(row) for row in unbalanced],
        "accounts_not_matching_lots": [dict(row) for row in accounts],
        "issuer_accounts_not_matching_lots": [dict(row) for row in issuers],
        "lots_out_of_range": [dict(row) for row in bad_lots],
        "obligations_not_matching_consumption": [dict(row) for row in obligations],
    }


async def assert_books_balance(db: Database, members: Iterable[str]) -> None:
    breaks = await books_breaks(db, members)
    assert breaks == {name: [] for name in breaks}, breaks
