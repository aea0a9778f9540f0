"""The only SQL of the ledger. Every function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg import Connection

from core.errors import InvariantViolation
from exchange.ledger import Lot, ObligationDraft, OriginalObligation, Posting, Take, member_account

# --- members -------------------------------------------------------------------------------


async def member_by_ref(conn: Connection, external_ref: str) -> str | None:
    member_id: str | None = await conn.fetchval(
        "SELECT member_id FROM member_refs WHERE external_ref = $1", external_ref
    )
    return member_id


async def insert_member(
    conn: Connection, *, member_id: str, external_ref: str, now: datetime
) -> str:
    """Create the member unless the reference is taken; returns the reference's member either way.

    The reference is claimed first (its foreign key is deferred), so a concurrent registration of
    the same reference waits on the unique key, then finds the winner, and leaves no orphan.
    """
    claimed: str | None = await conn.fetchval(
        """INSERT INTO member_refs (external_ref, member_id) VALUES ($1, $2)
           ON CONFLICT (external_ref) DO NOTHING RETURNING member_id""",
        external_ref,
        member_id,
    )
    if claimed is None:
        existing = await member_by_ref(conn, external_ref)
        if existing is None:
            raise InvariantViolation(f"member reference {external_ref!r} vanished")
        return existing
    await conn.execute(
        "INSERT INTO members (member_id, created_at) VALUES ($1, $2)", member_id, now
    )
    return member_id


async def member_exists(conn: Connection, member_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM members WHERE member_id = $1", member_id))


async def lock_member_account(conn: Connection, member_id: str, currency: str) -> int | None:
    """Lock the member's account in `currency` (creating it), serialising its writers; returns
    its posted points, or None when there is no such member.

    Every operation that moves or reserves a member's points takes this lock first, so two
    operations on one member can never both spend the same points. An account exists only for
    an existing member (foreign key), so the usual case is one round trip.
    """
    lock = """SELECT posted_points FROM member_accounts
              WHERE member_id = $1 AND currency = $2 FOR NO KEY UPDATE"""
    posted: int | None = await conn.fetchval(lock, member_id, currency)
    if posted is not None:
        return posted
    if not await member_exists(conn, member_id):
        return None
    await conn.execute(
        """INSERT INTO member_accounts (member_id, currency) VALUES ($1, $2)
           ON CONFLICT DO NOTHING""",
        member_id,
        currency,
    )
    posted = await conn.fetchval(lock, member_id, currency)
    return posted


# --- lots and holds ------------------------------------------------------------------------


def _lot(row: asyncpg.Record) -> Lot:
    return Lot(
        lot_id=row["lot_id"],
        issuer_id=row["issuer_id"],
        remaining_points=row["remaining_points"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
    )


async def live_lots_and_held(
    conn: Connection,
    member_id: str,
    currency: str,
    now: datetime,
    excluding_hold_id: str | None = None,
) -> tuple[list[Lot], int]:
    """`live_lots` and `held_points` in one round trip (the read side of every spend)."""
    rows = await conn.fetch(
        """WITH held AS (
               SELECT coalesce(sum(points), 0)::bigint AS points FROM holds
               WHERE member_id = $1 AND currency = $2 AND status = 'active' AND expires_at > $3
                 AND hold_id IS DISTINCT FROM $4)
           SELECT held.points AS held_points, l.lot_id, l.issuer_id, l.remaining_points,
                  l.issued_at, l.expires_at
           FROM held LEFT JOIN LATERAL (
               SELECT lot_id, issuer_id, remaining_points, issued_at, expires_at FROM lots
               WHERE member_id = $1 AND currency = $2 AND remaining_points > 0
                 AND (expires_at IS NULL OR expires_at > $3)) AS l ON true
           ORDER BY l.expires_at NULLS LAST, l.issued_at, l.lot_id""",
        member_id,
        currency,
        now,
        excluding_hold_id,
    )
    lots = [_lot(row) for row in rows if row["lot_id"] is not None]
    return lots, int(rows[0]["held_points"])


async def live_lots(conn: Connection, member_id: str, currency: str, now: datetime) -> list[Lot]:
    rows = await conn.fetch(
        """SELECT lot_id, issuer_id, remaining_points, issued_at, expires_at FROM lots
           WHERE member_id = $1 AND currency = $2 AND remaining_points > 0
             AND (expires_at IS NULL OR expires_at > $3)
           ORDER BY expires_at NULLS LAST, issued_at, lot_id""",
        member_id,
        currency,
        now,
    )
    return [_lot(row) for row in rows]


async def lot(conn: Connection, member_id: str, lot_id: int) -> Lot:
    row = await conn.fetchrow(
        """SELECT lot_id, issuer_id, remaining_points, issued_at, expires_at FROM lots
           WHERE member_id = $1 AND lot_id = $2""",
        member_id,
        lot_id,
    )
    return _lot(row)


async def lot_of_transaction(conn: Connection, member_id: str, transaction_id: str) -> Lot:
    row = await conn.fetchrow(
        """SELECT lot_id, issuer_id, remaining_points, issued_at, expires_at FROM lots
           WHERE member_id = $1 AND transaction_id = $2""",
        member_id,
        transaction_id,
    )
    return _lot(row)


async def insert_lot(
    conn: Connection,
    *,
    member_id: str,
    currency: str,
    issuer_id: str,
    points: int,
    issued_at: datetime,
    expires_at: datetime | None,
    transaction_id: str,
) -> int:
    lot_id: int = await conn.fetchval(
        """INSERT INTO lots (member_id, currency, issuer_id, issued_points, remaining_points,
                             issued_at, expires_at, transaction_id)
           VALUES ($1, $2, $3, $4, $4, $5, $6, $7) RETURNING lot_id""",
        member_id,
        currency,
        issuer_id,
        points,
        issued_at,
        expires_at,
        transaction_id,
    )
    return lot_id


async def change_lots(conn: Connection, member_id: str, takes: Sequence[Take], sign: int) -> None:
    """Add `sign` x take.points to each lot's remaining points (-1 consumes, +1 restores)."""
    await conn.execute(
        """UPDATE lots SET remaining_points = remaining_points + $4 * t.points
           FROM unnest($2::bigint[], $3::bigint[]) AS t(lot_id, points)
           WHERE lots.member_id = $1 AND lots.lot_id = t.lot_id""",
        member_id,
        [take.lot_id for take in takes],
        [take.points for take in takes],
        sign,
    )


async def held_points(
    conn: Connection,
    member_id: str,
    currency: str,
    now: datetime,
    excluding_hold_id: str | None = None,
) -> int:
    """Active holds not yet lapsed; a hold stops reserving at its expiry, job or no job."""
    held: int = await conn.fetchval(
        """SELECT coalesce(sum(points), 0)::bigint FROM holds
           WHERE member_id = $1 AND currency = $2 AND status = 'active' AND expires_at > $3
             AND hold_id IS DISTINCT FROM $4""",
        member_id,
        currency,
        now,
        excluding_hold_id,
    )
    return held


def _available_sql(member: str, currency: str, now: str) -> str:
    """Unexpired lots less active holds, never below zero, for the given SQL parameters."""
    return f"""greatest(
        (SELECT coalesce(sum(remaining_points), 0)::bigint FROM lots
         WHERE member_id = {member} AND currency = {currency} AND remaining_points > 0
           AND (expires_at IS NULL OR expires_at > {now}))
      - (SELECT coalesce(sum(points), 0)::bigint FROM holds
         WHERE member_id = {member} AND currency = {currency} AND status = 'active'
           AND expires_at > {now}), 0)"""


async def available_points(conn: Connection, member_id: str, currency: str, now: datetime) -> int:
    """Unexpired lots less active holds; never below zero (a hold may outlive the lots it held)."""
    available: int = await conn.fetchval(
        f"SELECT {_available_sql('$1', '$2', '$3')}", member_id, currency, now
    )
    return available


async def next_expiry(
    conn: Connection, member_id: str, currency: str, now: datetime
) -> tuple[int, datetime] | None:
    row = await conn.fetchrow(
        """SELECT expires_at, sum(remaining_points)::bigint AS points FROM lots
           WHERE member_id = $1 AND currency = $2 AND remaining_points > 0
             AND expires_at > $3
           GROUP BY expires_at ORDER BY expires_at LIMIT 1""",
        member_id,
        currency,
        now,
    )
    return (int(row["points"]), row["expires_at"]) if row else None


@dataclass(frozen=True, slots=True)
class HoldRow:
    member_id: str
    hold_id: str
    merchant_id: str
    currency: str
    points: int
    reference: str | None
    status: str
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    captured_points: int | None
    capture_transaction_id: str | None


async def hold_member(conn: Connection, hold_id: str) -> tuple[str, str] | None:
    row = await conn.fetchrow("SELECT member_id, currency FROM holds WHERE hold_id = $1", hold_id)
    return (row["member_id"], row["currency"]) if row else None


async def hold_for_update(conn: Connection, member_id: str, hold_id: str) -> HoldRow:
    row = await conn.fetchrow(
        "SELECT * FROM holds WHERE member_id = $1 AND hold_id = $2 FOR UPDATE", member_id, hold_id
    )
    return HoldRow(**dict(row))


async def insert_hold(conn: Connection, hold: HoldRow) -> None:
    await conn.execute(
        """INSERT INTO holds (member_id, hold_id, merchant_id, currency, points, reference, status,
                              created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8)""",
        hold.member_id,
        hold.hold_id,
        hold.merchant_id,
        hold.currency,
        hold.points,
        hold.reference,
        hold.created_at,
        hold.expires_at,
    )


async def close_hold(
    conn: Connection,
    *,
    member_id: str,
    hold_id: str,
    status: str,
    closed_at: datetime,
    captured_points: int | None = None,
    capture_transaction_id: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE holds SET status = $3, closed_at = $4, captured_points = $5,
                            capture_transaction_id = $6
           WHERE member_id = $1 AND hold_id = $2 AND status = 'active'""",
        member_id,
        hold_id,
        status,
        closed_at,
        captured_points,
        capture_transaction_id,
    )


async def lapse_holds(conn: Connection, now: datetime, limit: int) -> int:
    """Mark up to `limit` holds past expiry as lapsed (they already reserve nothing)."""
    result: str = await conn.execute(
        """UPDATE holds SET status = 'lapsed', closed_at = expires_at
           WHERE (member_id, hold_id) IN (
               SELECT member_id, hold_id FROM holds
               WHERE status = 'active' AND expires_at <= $1
               ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
        now,
        limit,
    )
    return int(result.split()[-1])


# --- transactions, postings, obligations ---------------------------------------------------


async def insert_transaction(conn: Connection, row: dict[str, Any]) -> int:
    """Insert the transaction row; its `balance_after` is the member's available points in its
    currency at its `created_at`, computed here, after every other write of the transaction."""
    assert "balance_after" not in row, "balance_after is computed by the insert"
    columns = list(row)
    placeholders = [f"${index}" for index in range(1, len(row) + 1)]
    at = {name: f"${columns.index(name) + 1}" for name in ("member_id", "currency", "created_at")}
    available = _available_sql(at["member_id"], at["currency"], f"{at['created_at']}::timestamptz")
    balance_after: int = await conn.fetchval(
        f"""INSERT INTO transactions ({", ".join(columns)}, balance_after)
            VALUES ({", ".join(placeholders)}, {available}) RETURNING balance_after""",
        *row.values(),
    )
    return balance_after


async def insert_postings(
    conn: Connection, member_id: str, transaction_id: str, postings: Sequence[Posting]
) -> None:
    """Insert a transaction's postings and move the member's posted points by those that touch
    its account, in one statement: the account's balance never differs from its postings."""
    await conn.execute(
        """WITH posted AS (
               INSERT INTO postings (member_id, transaction_id, posting_no, account, currency,
                                     amount, lot_id)
               SELECT $1, $2, p.posting_no, p.account, p.currency, p.amount, p.lot_id
               FROM unnest($3::int[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
                    AS p(posting_no, account, currency, amount, lot_id)
               RETURNING account, currency, amount)
           UPDATE member_accounts SET posted_points = posted_points + d.delta
           FROM (SELECT currency, sum(amount) AS delta FROM posted WHERE account = $8
                 GROUP BY currency) AS d
           WHERE member_accounts.member_id = $1 AND member_accounts.currency = d.currency
             AND d.delta <> 0""",
        member_id,
        transaction_id,
        list(range(len(postings))),
        [p.account for p in postings],
        [p.currency for p in postings],
        [p.amount for p in postings],
        [p.lot_id for p in postings],
        member_account(member_id),
    )


async def insert_obligations(
    conn: Connection,
    *,
    member_id: str,
    transaction_id: str,
    drafts: Sequence[ObligationDraft],
    now: datetime,
) -> None:
    await conn.executemany(
        """INSERT INTO obligations (member_id, transaction_id, debtor_id, creditor_id, points,
                                    gross_value, fee, created_at, reverses_obligation_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        [
            (
                member_id,
                transaction_id,
                d.debtor_id,
                d.creditor_id,
                d.points,
                d.gross_value,
                d.fee,
                now,
                d.reverses_obligation_id,
            )
            for d in drafts
        ],
    )


async def transaction_by_id(conn: Connection, transaction_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM transactions WHERE transaction_id = $1", transaction_id
    )
    return row


async def transactions_page(
    conn: Connection,
    *,
    merchant_id: str,
    member_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first, keyset-paginated on (created_at, transaction_id)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM transactions
           WHERE merchant_id = $1 AND ($2::text IS NULL OR member_id = $2)
             AND ($3::timestamptz IS NULL OR (created_at, transaction_id) < ($3, $4))
           ORDER BY created_at DESC, transaction_id DESC LIMIT $5""",
        merchant_id,
        member_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def consumed_takes(conn: Connection, member_id: str, transaction_id: str) -> list[Take]:
    """The lots a redemption consumed, in the order it consumed them."""
    rows = await conn.fetch(
        """SELECT p.lot_id, l.issuer_id, -p.amount AS points
           FROM postings p JOIN lots l USING (member_id, lot_id)
           WHERE p.member_id = $1 AND p.transaction_id = $2 AND p.account = $3 AND p.amount < 0
           ORDER BY p.posting_no""",
        member_id,
        transaction_id,
        member_account(member_id),
    )
    return [Take(row["lot_id"], row["issuer_id"], row["points"]) for row in rows]


async def restored_by_lot(conn: Connection, member_id: str, transaction_id: str) -> dict[int, int]:
    rows = await conn.fetch(
        """SELECT p.lot_id, sum(p.amount)::bigint AS points
           FROM transactions t JOIN postings p USING (member_id, transaction_id)
           WHERE t.member_id = $1 AND t.reverses = $2 AND p.account = $3
           GROUP BY p.lot_id""",
        member_id,
        transaction_id,
        member_account(member_id),
    )
    return {row["lot_id"]: int(row["points"]) for row in rows}


async def reversed_points(conn: Connection, member_id: str, transaction_id: str) -> int:
    total: int = await conn.fetchval(
        """SELECT coalesce(sum(requested_points), 0)::bigint FROM transactions
           WHERE member_id = $1 AND reverses = $2""",
        member_id,
        transaction_id,
    )
    return total


async def original_obligations(
    conn: Connection, member_id: str, transaction_id: str
) -> list[OriginalObligation]:
    rows = await conn.fetch(
        """SELECT o.obligation_id, o.debtor_id, o.creditor_id, o.points, o.gross_value, o.fee,
                  coalesce(-sum(c.points), 0)::bigint AS cancelled_points,
                  coalesce(-sum(c.gross_value), 0)::bigint AS cancelled_gross_value,
                  coalesce(-sum(c.fee), 0)::bigint AS cancelled_fee
           FROM obligations o
           LEFT JOIN obligations c
             ON c.member_id = o.member_id AND c.reverses_obligation_id = o.obligation_id
           WHERE o.member_id = $1 AND o.transaction_id = $2 AND o.reverses_obligation_id IS NULL
           GROUP BY o.member_id, o.obligation_id ORDER BY o.obligation_id""",
        member_id,
        transaction_id,
    )
    return [
        OriginalObligation(
            obligation_id=row["obligation_id"],
            debtor_id=row["debtor_id"],
            creditor_id=row["creditor_id"],
            points=row["points"],
            gross_value=row["gross_value"],
            fee=row["fee"],
            cancelled_points=int(row["cancelled_points"]),
            cancelled_gross_value=int(row["cancelled_gross_value"]),
            cancelled_fee=int(row["cancelled_fee"]),
        )
        for row in rows
    ]


async def members_with_lapsed_lots(conn: Connection, now: datetime, limit: int) -> list[str]:
    rows = await conn.fetch(
        """SELECT DISTINCT member_id FROM (
               SELECT member_id FROM lots
               WHERE remaining_points > 0 AND expires_at IS NOT NULL AND expires_at <= $1
               ORDER BY expires_at LIMIT $2) AS due""",
        now,
        limit,
    )
    return [row["member_id"] for row in rows]


async def lapsed_lots(conn: Connection, member_id: str, now: datetime) -> list[tuple[str, Lot]]:
    """(currency, lot) for the member's lots past expiry with points left, in lot order."""
    rows = await conn.fetch(
        """SELECT currency, lot_id, issuer_id, remaining_points, issued_at, expires_at FROM lots
           WHERE member_id = $1 AND remaining_points > 0 AND expires_at <= $2
           ORDER BY currency, lot_id""",
        member_id,
        now,
    )
    return [(row["currency"], _lot(row)) for row in rows]


# Settlement, a layer above, stores each run's cut-off and snapshot. An obligation is settled
# once a run's cut-off is after it and that run's snapshot sees it (docs/settlement.md): those
# created before the last cut-off but committed too late for its snapshot are still unsettled.
# Parameters $2..$4 are settled_through()'s.
UNSETTLED_LATE = """$2::timestamptz IS NOT NULL AND created_at < $2 AND xact >= $4::text::xid8
    AND NOT pg_visible_in_snapshot(xact, $3::text::pg_snapshot)"""


async def settled_through(conn: Connection) -> tuple[datetime | None, str | None, str | None]:
    """(cut-off, snapshot, snapshot xmin) of the latest settlement run, or Nones before any."""
    row = await conn.fetchrow(
        """SELECT period_end, snapshot::text AS snapshot, snapshot_xmin::text AS xmin
           FROM settlement_runs ORDER BY period_end DESC LIMIT 1"""
    )
    if row is None:
        return None, None, None
    return row["period_end"], row["snapshot"], row["xmin"]


# --- bulk issuance (exchange.bulk): one statement per table for a whole run ------------------


async def open_member_accounts(conn: Connection, member_ids: Sequence[str], currency: str) -> None:
    """Create the missing accounts of existing members, in member order (so two runs creating
    the same accounts wait on each other in one order, never in a cycle)."""
    await conn.execute(
        """INSERT INTO member_accounts (member_id, currency)
           SELECT member_id, $2 FROM members WHERE member_id = ANY($1::text[])
           ORDER BY member_id
           ON CONFLICT DO NOTHING""",
        member_ids,
        currency,
    )


async def lock_member_accounts(
    conn: Connection, member_ids: Sequence[str], currency: str
) -> set[str]:
    """`lock_member_account` for many members, locked in member order; the ones that exist."""
    rows = await conn.fetch(
        """SELECT member_id FROM member_accounts
           WHERE member_id = ANY($1::text[]) AND currency = $2
           ORDER BY member_id FOR NO KEY UPDATE""",
        member_ids,
        currency,
    )
    return {row["member_id"] for row in rows}


async def available_before_clamp(
    conn: Connection, member_ids: Sequence[str], currency: str, now: datetime
) -> dict[str, int]:
    """Live lots less active holds per member, not yet clamped at zero (`available_points`
    clamps; a run adding points clamps after adding)."""
    rows = await conn.fetch(
        """SELECT m.member_id,
                  (SELECT coalesce(sum(remaining_points), 0)::bigint FROM lots
                   WHERE member_id = m.member_id AND currency = $2 AND remaining_points > 0
                     AND (expires_at IS NULL OR expires_at > $3))
                - (SELECT coalesce(sum(points), 0)::bigint FROM holds
                   WHERE member_id = m.member_id AND currency = $2 AND status = 'active'
                     AND expires_at > $3) AS available
           FROM unnest($1::text[]) AS m(member_id)""",
        member_ids,
        currency,
        now,
    )
    return {row["member_id"]: int(row["available"]) for row in rows}


@dataclass(frozen=True, slots=True)
class NewLot:
    member_id: str
    transaction_id: str
    points: int
    expires_at: datetime | None


async def insert_lots(
    conn: Connection, lots: Sequence[NewLot], *, currency: str, issuer_id: str, issued_at: datetime
) -> dict[str, int]:
    """Insert one lot per issuance; lot ids by transaction id."""
    rows = await conn.fetch(
        """INSERT INTO lots (member_id, currency, issuer_id, issued_points, remaining_points,
                             issued_at, expires_at, transaction_id)
           SELECT l.member_id, $5, $6, l.points, l.points, $7, l.expires_at, l.transaction_id
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[])
                AS l(member_id, transaction_id, points, expires_at)
           RETURNING transaction_id, lot_id""",
        [lot.member_id for lot in lots],
        [lot.transaction_id for lot in lots],
        [lot.points for lot in lots],
        [lot.expires_at for lot in lots],
        currency,
        issuer_id,
        issued_at,
    )
    return {row["transaction_id"]: row["lot_id"] for row in rows}


async def insert_postings_of(
    conn: Connection, postings: Sequence[tuple[str, str, int, Posting]]
) -> None:
    """(member_id, transaction_id, posting_no, posting) rows of many transactions at once."""
    await conn.execute(
        """INSERT INTO postings (member_id, transaction_id, posting_no, account, currency, amount,
                                 lot_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[],
                                $6::bigint[], $7::bigint[])""",
        [member_id for member_id, _, _, _ in postings],
        [transaction_id for _, transaction_id, _, _ in postings],
        [number for _, _, number, _ in postings],
        [p.account for _, _, _, p in postings],
        [p.currency for _, _, _, p in postings],
        [p.amount for _, _, _, p in postings],
        [p.lot_id for _, _, _, p in postings],
    )


async def add_posted_points_of(conn: Connection, deltas: dict[str, int], currency: str) -> None:
    await conn.execute(
        """UPDATE member_accounts SET posted_points = posted_points + d.delta
           FROM unnest($1::text[], $2::bigint[]) AS d(member_id, delta)
           WHERE member_accounts.member_id = d.member_id AND member_accounts.currency = $3""",
        list(deltas),
        list(deltas.values()),
        currency,
    )


async def insert_issuances(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Transaction rows of kind issuance, their `balance_after` computed by the caller."""
    await conn.execute(
        """INSERT INTO transactions (member_id, transaction_id, kind, merchant_id, currency, points,
                                     reference, created_at, settlement_value, balance_after)
           SELECT t.member_id, t.transaction_id, 'issuance', t.merchant_id, t.currency, t.points,
                  t.reference, t.created_at, 0, t.balance_after
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                       $7::timestamptz[], $8::bigint[])
                AS t(member_id, transaction_id, merchant_id, currency, points, reference,
                     created_at, balance_after)""",
        *(
            [row[column] for row in rows]
            for column in (
                "member_id",
                "transaction_id",
                "merchant_id",
                "currency",
                "points",
                "reference",
                "created_at",
                "balance_after",
            )
        ),
    )
