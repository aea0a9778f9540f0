"""Every SQL statement of settlement: claims, runs, statements and their lines.

A run claims a row (transaction or obligation) when the row was created before the run's
cut-off, the run's snapshot sees it, and the previous run did not claim it — that is, it was
created after the previous cut-off, or committed too late for the previous snapshot to see it.
Snapshots only grow, so checking the previous run alone is enough (docs/settlement.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from asyncpg import Connection, Record

from settlement.netting import Activity, Netting, PairTotal

# pg_advisory_lock key: one settlement run at a time, across every process and host.
SETTLEMENT_LOCK_KEY = 0x5E771E


@dataclass(frozen=True, slots=True)
class Claim:
    """What one run claims: rows created before `end`, seen by `snapshot`, not claimed before."""

    end: datetime
    snapshot: str
    previous_end: datetime | None
    previous_snapshot: str | None
    previous_xmin: str | None

    def params(self) -> tuple[Any, ...]:
        return (
            self.end,
            self.snapshot,
            self.previous_end,
            self.previous_snapshot,
            self.previous_xmin,
        )


def claimed(alias: str) -> str:
    """The claim predicate over `alias` (a transactions or obligations row), params $1..$5."""
    return f"""{alias}.created_at < $1
        AND pg_visible_in_snapshot({alias}.xact, $2::text::pg_snapshot)
        AND ($3::timestamptz IS NULL OR {alias}.created_at >= $3
             OR ({alias}.xact >= $5::text::xid8
                 AND NOT pg_visible_in_snapshot({alias}.xact, $4::text::pg_snapshot)))"""


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    period_date: date
    kind: str
    period_start: datetime | None
    period_end: datetime
    snapshot: str
    snapshot_xmin: str
    currency: str
    minor_units: int
    obligations: int
    transactions: int
    gross_total: int
    fee_total: int
    fee_residue: Decimal
    merkle_root: bytes
    alliance_root: bytes
    alliance_transactions: int
    root_signature: bytes
    signing_key_id: str
    created_at: datetime


RUN_COLUMNS = """run_id, period_date, kind, period_start, period_end, snapshot::text AS snapshot,
    snapshot_xmin::text AS snapshot_xmin, currency, minor_units, obligations, transactions,
    gross_total, fee_total, fee_residue, merkle_root, alliance_root, alliance_transactions,
    root_signature, signing_key_id, created_at"""


def _run(row: Record) -> RunRow:
    return RunRow(**{key: row[key] for key in row.keys()})


def claim_after(previous: RunRow | None, *, end: datetime, snapshot: str) -> Claim:
    return Claim(
        end=end,
        snapshot=snapshot,
        previous_end=previous.period_end if previous else None,
        previous_snapshot=previous.snapshot if previous else None,
        previous_xmin=previous.snapshot_xmin if previous else None,
    )


def claim_of(run: RunRow, previous: RunRow | None) -> Claim:
    return claim_after(previous, end=run.period_end, snapshot=run.snapshot)


# --- the lock and the snapshot ---------------------------------------------------------------


async def try_lock_runs(conn: Connection) -> bool:
    locked: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", SETTLEMENT_LOCK_KEY)
    return locked


async def unlock_runs(conn: Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", SETTLEMENT_LOCK_KEY)


async def snapshot(conn: Connection) -> tuple[str, str]:
    """This transaction's snapshot (under REPEATABLE READ, the one every read of the run uses)."""
    row = await conn.fetchrow(
        """SELECT pg_current_snapshot()::text AS snapshot,
                  pg_snapshot_xmin(pg_current_snapshot())::text AS xmin"""
    )
    assert row is not None
    return row["snapshot"], row["xmin"]


# --- runs ------------------------------------------------------------------------------------


async def last_run(conn: Connection, *, before: datetime | None = None) -> RunRow | None:
    row = await conn.fetchrow(
        f"""SELECT {RUN_COLUMNS} FROM settlement_runs
            WHERE $1::timestamptz IS NULL OR period_end < $1
            ORDER BY period_end DESC LIMIT 1""",
        before,
    )
    return _run(row) if row else None


async def run_ending_at(conn: Connection, end: datetime) -> RunRow | None:
    row = await conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM settlement_runs WHERE period_end = $1", end
    )
    return _run(row) if row else None


async def run_by_id(conn: Connection, run_id: str) -> RunRow | None:
    row = await conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM settlement_runs WHERE run_id = $1", run_id
    )
    return _run(row) if row else None


async def runs(conn: Connection, *, limit: int | None = None) -> list[RunRow]:
    rows = await conn.fetch(
        f"SELECT {RUN_COLUMNS} FROM settlement_runs ORDER BY period_end DESC LIMIT $1", limit
    )
    return [_run(row) for row in rows]


async def runs_in_order(conn: Connection) -> list[RunRow]:
    rows = await conn.fetch(f"SELECT {RUN_COLUMNS} FROM settlement_runs ORDER BY period_end")
    return [_run(row) for row in rows]


async def alliance_start(conn: Connection) -> datetime | None:
    """When the alliance's first settings took effect: nothing can be owed from before."""
    start: datetime | None = await conn.fetchval(
        "SELECT min(effective_from) FROM alliance_settings"
    )
    return start


async def first_activity(conn: Connection) -> datetime | None:
    first: datetime | None = await conn.fetchval("SELECT min(created_at) FROM transactions")
    return first


async def insert_run(conn: Connection, run: RunRow) -> None:
    await conn.execute(
        """INSERT INTO settlement_runs (run_id, period_date, kind, period_start, period_end,
               snapshot, snapshot_xmin, currency, minor_units, obligations, transactions,
               gross_total, fee_total, fee_residue, merkle_root, alliance_root,
               alliance_transactions, root_signature, signing_key_id, created_at)
           VALUES ($1, $2, $3, $4, $5, $6::text::pg_snapshot, $7::text::xid8, $8, $9, $10, $11,
                   $12, $13, $14, $15, $16, $17, $18, $19, $20)""",
        run.run_id,
        run.period_date,
        run.kind,
        run.period_start,
        run.period_end,
        run.snapshot,
        run.snapshot_xmin,
        run.currency,
        run.minor_units,
        run.obligations,
        run.transactions,
        run.gross_total,
        run.fee_total,
        run.fee_residue,
        run.merkle_root,
        run.alliance_root,
        run.alliance_transactions,
        run.root_signature,
        run.signing_key_id,
        run.created_at,
    )


# --- what a run claims -----------------------------------------------------------------------


async def fee_rate_schedule(conn: Connection) -> list[tuple[datetime, Decimal]]:
    rows = await conn.fetch(
        "SELECT effective_from, fee_rate FROM alliance_settings ORDER BY effective_from"
    )
    return [(row["effective_from"], row["fee_rate"]) for row in rows]


async def claimed_pairs(
    conn: Connection, claim: Claim, schedule: Sequence[tuple[datetime, Decimal]]
) -> list[PairTotal]:
    """Claimed obligations summed per (debtor, creditor) and per fee-rate era."""
    assert schedule, "the alliance has settings"
    boundaries = [effective_from for effective_from, _ in schedule]
    rows = await conn.fetch(
        f"""SELECT o.debtor_id, o.creditor_id,
                   width_bucket(o.created_at, $6::timestamptz[]) AS era,
                   sum(o.points)::bigint AS points, sum(o.gross_value)::bigint AS gross,
                   sum(o.fee)::bigint AS fee, count(*) AS obligations
            FROM obligations o
            WHERE {claimed("o")}
            GROUP BY 1, 2, 3""",
        *claim.params(),
        boundaries,
    )
    return [
        PairTotal(
            debtor_id=row["debtor_id"],
            creditor_id=row["creditor_id"],
            points=row["points"],
            gross=row["gross"],
            fee=row["fee"],
            obligations=row["obligations"],
            # Obligations predate no settings (they need settings to exist), so era >= 1.
            fee_rate=schedule[max(row["era"], 1) - 1][1],
        )
        for row in rows
    ]


async def claimed_activity(conn: Connection, claim: Claim) -> dict[str, Activity]:
    """Each merchant's claimed transactions summed; the alliance's own (expiries, no merchant)
    are counted under the alliance bucket, "" (settlement/merkle.py's ALLIANCE_BUCKET)."""
    rows = await conn.fetch(
        f"""SELECT coalesce(t.merchant_id, '') AS merchant_id,
                   coalesce(sum(t.points) FILTER (WHERE t.kind = 'issuance'), 0)::bigint AS issued,
                   coalesce(sum(t.points) FILTER (WHERE t.kind = 'redemption'), 0)::bigint
                       AS redeemed,
                   coalesce(sum(t.points) FILTER (WHERE t.kind = 'reversal'), 0)::bigint
                       AS reversed,
                   count(*) AS transactions
            FROM transactions t
            WHERE {claimed("t")}
            GROUP BY 1""",
        *claim.params(),
    )
    return {
        row["merchant_id"]: Activity(
            issued_points=row["issued"],
            redeemed_points=row["redeemed"],
            reversed_points=row["reversed"],
            transactions=row["transactions"],
        )
        for row in rows
    }


# The leaf of settlement/merkle.py's transaction_leaf_data, built by the database.
LEAF_HASH_SQL = """sha256('\\x00'::bytea || convert_to(concat_ws('|', 'alliance-txn-v1',
    t.transaction_id, t.kind, coalesce(t.merchant_id, ''), t.member_id, t.currency,
    t.points::text,
    ((extract(epoch FROM t.created_at) * 1000000)::numeric(30, 0))::text,
    t.settlement_value::text, t.balance_after::text, coalesce(t.reverses, '')), 'UTF8'))"""


async def claimed_leaves(
    conn: Connection, claim: Claim, *, merchant_id: str | None = None, prefetch: int = 20_000
) -> AsyncIterator[tuple[str, bytes, str]]:
    """(merchant bucket, leaf hash, transaction id) of claimed transactions, in tree order.

    Must run inside a transaction (a server-side cursor)."""
    only_one = "" if merchant_id is None else "AND coalesce(t.merchant_id, '') = $6"
    extra: tuple[Any, ...] = () if merchant_id is None else (merchant_id,)
    query = f"""SELECT coalesce(t.merchant_id, '') AS bucket, {LEAF_HASH_SQL} AS leaf,
                       t.transaction_id
                FROM transactions t
                WHERE {claimed("t")} {only_one}
                ORDER BY 1, t.created_at, t.transaction_id"""
    async for row in conn.cursor(query, *claim.params(), *extra, prefetch=prefetch):
        yield row["bucket"], bytes(row["leaf"]), row["transaction_id"]


async def claimed_leaf_batches(
    conn: Connection, claim: Claim, *, batch: int = 50_000
) -> AsyncIterator[list[Record]]:
    """(merchant bucket, leaf hash) of claimed transactions in tree order, `batch` rows at a
    time: a run hashes every claimed transaction, so rows come in bulk, not one by one.

    Must run inside a transaction (a server-side cursor)."""
    # Every row is wanted: plan for the whole result, not for the first 10 % of it.
    await conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
    # Buckets only need to come out whole, in any order (each feeds its own subtree): sorting
    # them bytewise ("C") skips a locale comparison per row; the order within one is unchanged.
    cursor = await conn.cursor(
        f"""SELECT coalesce(t.merchant_id, '') COLLATE "C" AS bucket, {LEAF_HASH_SQL} AS leaf
            FROM transactions t
            WHERE {claimed("t")}
            ORDER BY 1, t.created_at, t.transaction_id""",
        *claim.params(),
    )
    while rows := await cursor.fetch(batch):
        yield rows


# --- statements ------------------------------------------------------------------------------


async def insert_statements(
    conn: Connection,
    run_id: str,
    netting: Netting,
    statement_ids: dict[str, str],
    merchant_roots: dict[str, tuple[bytes, int]],
) -> None:
    await conn.copy_records_to_table(
        "statements",
        columns=[
            "statement_id", "run_id", "merchant_id", "issued_points", "redeemed_points",
            "reversed_points", "receivable", "payable", "fees", "net", "transactions",
            "merchant_root",
        ],
        records=[
            (
                statement_ids[m.merchant_id], run_id, m.merchant_id, m.activity.issued_points,
                m.activity.redeemed_points, m.activity.reversed_points, m.receivable, m.payable,
                m.fees, m.net, merchant_roots[m.merchant_id][1], merchant_roots[m.merchant_id][0],
            )
            for m in netting.merchants
        ],
    )  # fmt: skip
    await conn.copy_records_to_table(
        "statement_lines",
        columns=[
            "statement_id", "counterparty_id", "accepted_points", "redeemed_elsewhere_points",
            "receivable", "payable", "fees", "net", "obligations",
        ],
        records=[
            (
                statement_ids[m.merchant_id], line.counterparty_id, line.accepted_points,
                line.redeemed_elsewhere_points, line.receivable, line.payable, line.fees,
                line.net, line.obligations,
            )
            for m in netting.merchants
            for line in m.lines.values()
        ],
    )  # fmt: skip


STATEMENT_COLUMNS = """s.statement_id, s.run_id, s.merchant_id, s.issued_points, s.redeemed_points,
    s.reversed_points, s.receivable, s.payable, s.fees, s.net, s.transactions, s.merchant_root,
    r.period_date, r.period_start, r.period_end, r.currency, r.minor_units, r.merkle_root,
    r.root_signature, r.signing_key_id, r.created_at, r.kind AS run_kind"""


async def statements_of_run(conn: Connection, run_id: str) -> list[Record]:
    rows: list[Record] = await conn.fetch(
        f"""SELECT {STATEMENT_COLUMNS} FROM statements s JOIN settlement_runs r USING (run_id)
            WHERE s.run_id = $1 ORDER BY s.merchant_id""",
        run_id,
    )
    return rows


async def statement_of_merchant(
    conn: Connection, merchant_id: str, statement_id: str
) -> Record | None:
    row: Record | None = await conn.fetchrow(
        f"""SELECT {STATEMENT_COLUMNS} FROM statements s JOIN settlement_runs r USING (run_id)
            WHERE s.statement_id = $1 AND s.merchant_id = $2""",
        statement_id,
        merchant_id,
    )
    return row


async def statement_for_run(conn: Connection, run_id: str, merchant_id: str) -> Record | None:
    row: Record | None = await conn.fetchrow(
        f"""SELECT {STATEMENT_COLUMNS} FROM statements s JOIN settlement_runs r USING (run_id)
            WHERE s.run_id = $1 AND s.merchant_id = $2""",
        run_id,
        merchant_id,
    )
    return row


async def statements_page(
    conn: Connection,
    merchant_id: str,
    *,
    period: date | None,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[Record]:
    """A merchant's statements, newest period first; `after` is the last (period_end, id) seen."""
    rows: list[Record] = await conn.fetch(
        f"""SELECT {STATEMENT_COLUMNS} FROM statements s JOIN settlement_runs r USING (run_id)
            WHERE s.merchant_id = $1
              AND ($2::date IS NULL OR r.period_date = $2)
              AND ($3::timestamptz IS NULL OR (r.period_end, s.statement_id) < ($3, $4))
            ORDER BY r.period_end DESC, s.statement_id DESC
            LIMIT $5""",
        merchant_id,
        period,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def lines_of(conn: Connection, statement_ids: Sequence[str]) -> dict[str, list[Record]]:
    rows = await conn.fetch(
        """SELECT * FROM statement_lines WHERE statement_id = ANY($1::text[])
           ORDER BY statement_id, counterparty_id""",
        list(statement_ids),
    )
    lines: dict[str, list[Record]] = {statement_id: [] for statement_id in statement_ids}
    for row in rows:
        lines[row["statement_id"]].append(row)
    return lines


async def merchant_names(conn: Connection, merchant_ids: Sequence[str]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT merchant_id, name FROM merchants WHERE merchant_id = ANY($1::text[])",
        list(merchant_ids),
    )
    return {row["merchant_id"]: row["name"] for row in rows}


# --- proofs ----------------------------------------------------------------------------------


async def transaction_for_proof(
    conn: Connection, merchant_id: str, transaction_id: str
) -> Record | None:
    """One of the merchant's own transactions, with the leaf the database computes for it."""
    row: Record | None = await conn.fetchrow(
        f"""SELECT t.transaction_id, t.member_id, t.created_at, t.xact::text AS xact,
                   {LEAF_HASH_SQL} AS leaf
            FROM transactions t WHERE t.transaction_id = $1 AND t.merchant_id = $2""",
        transaction_id,
        merchant_id,
    )
    return row


async def claiming_run(conn: Connection, created_at: datetime, xact: str) -> RunRow | None:
    """The run that claimed a row: the first ending after it whose snapshot sees it."""
    row = await conn.fetchrow(
        f"""SELECT {RUN_COLUMNS} FROM settlement_runs
            WHERE $1 < period_end AND pg_visible_in_snapshot($2::text::xid8, snapshot)
            ORDER BY period_end LIMIT 1""",
        created_at,
        xact,
    )
    return _run(row) if row else None


async def top_leaves(conn: Connection, run_id: str) -> list[tuple[str, int, bytes]]:
    """(merchant, transactions, subtree root) of every statement of a run, in merchant order."""
    rows = await conn.fetch(
        """SELECT merchant_id, transactions, merchant_root FROM statements
           WHERE run_id = $1 ORDER BY merchant_id""",
        run_id,
    )
    return [(row["merchant_id"], row["transactions"], bytes(row["merchant_root"])) for row in rows]


# --- settlement's own reconciliation ---------------------------------------------------------


async def statement_totals_against_claims(
    conn: Connection, run: RunRow, claim: Claim
) -> list[Record]:
    """Merchants whose stored statement disagrees with a fresh sum over the claimed obligations."""
    rows: list[Record] = await conn.fetch(
        f"""WITH fresh AS (
                SELECT m AS merchant_id,
                       sum(CASE WHEN o.creditor_id = m THEN o.gross_value ELSE 0 END)::bigint
                           AS receivable,
                       sum(CASE WHEN o.debtor_id = m THEN o.gross_value ELSE 0 END)::bigint
                           AS payable,
                       sum(CASE WHEN o.creditor_id = m THEN o.fee ELSE 0 END)::bigint AS fees
                FROM obligations o, LATERAL (VALUES (o.creditor_id), (o.debtor_id)) AS side(m)
                WHERE {claimed("o")}
                GROUP BY m),
            stored AS (
                SELECT merchant_id, receivable, payable, fees FROM statements WHERE run_id = $6)
            SELECT coalesce(f.merchant_id, s.merchant_id) AS merchant_id,
                   f.receivable AS claimed_receivable, s.receivable AS stated_receivable,
                   f.payable AS claimed_payable, s.payable AS stated_payable,
                   f.fees AS claimed_fees, s.fees AS stated_fees
            FROM fresh f FULL JOIN stored s USING (merchant_id)
            WHERE (coalesce(f.receivable, 0), coalesce(f.payable, 0), coalesce(f.fees, 0))
                  IS DISTINCT FROM
                  (coalesce(s.receivable, 0), coalesce(s.payable, 0), coalesce(s.fees, 0))""",
        *claim.params(),
        run.run_id,
    )
    return rows


async def unbalanced_runs(conn: Connection) -> list[Record]:
    """Runs whose statements' nets plus fees are not zero, or disagree with their lines."""
    rows: list[Record] = await conn.fetch(
        """SELECT r.run_id, coalesce(sum(s.net + s.fees), 0)::bigint AS nets_plus_fees,
                  r.fee_total, coalesce(sum(s.fees), 0)::bigint AS statement_fees
           FROM settlement_runs r LEFT JOIN statements s USING (run_id)
           GROUP BY r.run_id, r.fee_total
           HAVING coalesce(sum(s.net + s.fees), 0) <> 0 OR coalesce(sum(s.fees), 0) <> r.fee_total
           UNION ALL
           SELECT s.run_id, NULL, NULL, NULL
           FROM statements s
           JOIN (SELECT statement_id, sum(receivable) AS receivable, sum(payable) AS payable,
                        sum(fees) AS fees
                 FROM statement_lines GROUP BY statement_id) l USING (statement_id)
           WHERE (l.receivable, l.payable, l.fees) <> (s.receivable, s.payable, s.fees)"""
    )
    return rows
