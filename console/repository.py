"""The console's read-only SQL. Nothing here writes; changes go through the domain services.

Every list is a keyset page (WHERE (sort key) < (cursor) ORDER BY sort key DESC LIMIT n) on an
index that matches it, so page 10,000 costs what page 1 costs. Filtered queries are composed with
only the conditions in use (never `$1 IS NULL OR col = $1`), so PostgreSQL plans each on the index
its filter selects even after it switches a prepared statement to a generic plan.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from console.errors import InvalidInput
from console.limits import READ_TIMEOUT_MS

TRANSACTION_KINDS = ("issuance", "redemption", "reversal", "expiry", "conversion")


async def read_only(conn: asyncpg.Connection) -> None:
    """Bound a console read: it never holds a connection longer than READ_TIMEOUT_MS."""
    await conn.execute(f"SET statement_timeout = {int(READ_TIMEOUT_MS)}")


# --- cursors -------------------------------------------------------------------------------


def encode_cursor(*parts: Any) -> str:
    values = [p.isoformat() if isinstance(p, datetime) else p for p in parts]
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The values `encode_cursor` packed, converted to `types`; anything else is refused."""
    invalid = InvalidInput("the page cursor is not valid", field="cursor")
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError) as error:
        raise invalid from error
    if not isinstance(values, list) or len(values) != len(types):
        raise invalid
    parsed: list[Any] = []
    for value, kind in zip(values, types, strict=True):
        if kind is datetime:
            try:
                instant = datetime.fromisoformat(value)
            except (TypeError, ValueError) as error:
                raise invalid from error
            if instant.tzinfo is None:
                raise invalid
            parsed.append(instant.astimezone(UTC))
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise invalid
            parsed.append(value)
        else:
            if not isinstance(value, str) or len(value) > 300:
                raise invalid
            parsed.append(value)
    return tuple(parsed)


@dataclass(slots=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def _page(rows: list[asyncpg.Record], limit: int, *key: str) -> Page:
    items = [dict(row) for row in rows[:limit]]
    more = len(rows) > limit
    cursor = encode_cursor(*(items[-1][k] for k in key)) if more and items else None
    return Page(items, cursor)


# --- merchants -----------------------------------------------------------------------------


async def merchants_page(
    conn: asyncpg.Connection, *, search: str | None, cursor: str | None, limit: int
) -> Page:
    """By name, case-insensitively (the merchants_name index); search matches name or id."""
    after = decode_cursor(cursor, str, str) if cursor else None
    conditions: list[str] = []
    args: list[Any] = []
    if search:
        args.append(f"%{_like_escape(search.lower())}%")
        args.append(search)
        conditions.append(f"(lower(m.name) LIKE ${len(args) - 1} OR m.merchant_id = ${len(args)})")
    if after:
        args.extend(after)
        conditions.append(f"(lower(m.name), m.merchant_id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await conn.fetch(
        f"""SELECT m.*, lower(m.name) AS sort_name,
                   (SELECT count(*) FROM merchant_keys k WHERE k.merchant_id = m.merchant_id
                      AND k.revoked_at IS NULL) AS live_keys
            FROM merchants m {where}
            ORDER BY lower(m.name), m.merchant_id LIMIT ${len(args)}""",
        *args,
    )
    return _page(rows, limit, "sort_name", "merchant_id")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def merchant_names(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT merchant_id, name FROM merchants ORDER BY lower(name)")
    return {row["merchant_id"]: row["name"] for row in rows}


# --- members -------------------------------------------------------------------------------


async def find_member(conn: asyncpg.Connection, query: str) -> str | None:
    """A member id from an external reference or a member id (both primary-key lookups)."""
    query = query.strip()
    if not query:
        return None
    member_id: str | None = await conn.fetchval(
        "SELECT member_id FROM member_refs WHERE external_ref = $1", query
    )
    if member_id is not None:
        return member_id
    member_id = await conn.fetchval("SELECT member_id FROM members WHERE member_id = $1", query)
    return member_id


async def member_refs(conn: asyncpg.Connection, member_id: str, *, limit: int) -> list[str]:
    """The member's external references, in order (member_refs_by_member), at most `limit`."""
    rows = await conn.fetch(
        """SELECT external_ref FROM member_refs WHERE member_id = $1
           ORDER BY external_ref LIMIT $2""",
        member_id,
        limit,
    )
    return [row["external_ref"] for row in rows]


async def member(conn: asyncpg.Connection, member_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT m.member_id, m.created_at,
                  coalesce((SELECT jsonb_object_agg(currency, posted_points)
                            FROM member_accounts a WHERE a.member_id = m.member_id),
                           '{}'::jsonb) AS posted
           FROM members m WHERE m.member_id = $1""",
        member_id,
    )
    return dict(row) if row else None


async def lots_page(
    conn: asyncpg.Connection,
    *,
    member_id: str,
    live_only: bool,
    now: datetime,
    cursor: str | None,
    limit: int,
) -> Page:
    """A member's lots, newest first (primary key order), with the issuer's name."""
    after = decode_cursor(cursor, int)[0] if cursor else None
    conditions = ["l.member_id = $1"]
    args: list[Any] = [member_id]
    if live_only:
        args.append(now)
        conditions.append(
            f"l.remaining_points > 0 AND (l.expires_at IS NULL OR l.expires_at > ${len(args)})"
        )
    if after is not None:
        args.append(after)
        conditions.append(f"l.lot_id < ${len(args)}")
    args.append(limit + 1)
    rows = await conn.fetch(
        f"""SELECT l.*, m.name AS issuer_name FROM lots l
            JOIN merchants m ON m.merchant_id = l.issuer_id
            WHERE {" AND ".join(conditions)}
            ORDER BY l.lot_id DESC LIMIT ${len(args)}""",
        *args,
    )
    return _page(rows, limit, "lot_id")


async def active_holds(
    conn: asyncpg.Connection, member_id: str, now: datetime
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT h.*, m.name AS merchant_name FROM holds h
           JOIN merchants m ON m.merchant_id = h.merchant_id
           WHERE h.member_id = $1 AND h.status = 'active' AND h.expires_at > $2
           ORDER BY h.created_at DESC LIMIT 100""",
        member_id,
        now,
    )
    return [dict(row) for row in rows]


# --- the ledger explorer -------------------------------------------------------------------


@dataclass(slots=True)
class LedgerFilter:
    kind: str | None = None
    merchant_id: str | None = None
    member_id: str | None = None
    transaction_id: str | None = None
    reference: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in TRANSACTION_KINDS:
            raise InvalidInput(f"kind is one of {', '.join(TRANSACTION_KINDS)}", field="kind")

    def as_query(self) -> dict[str, str]:
        values = {
            "kind": self.kind,
            "merchant": self.merchant_id,
            "member": self.member_id,
            "transaction": self.transaction_id,
            "reference": self.reference,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {k: v for k, v in values.items() if v}


@dataclass(slots=True)
class _Sql:
    conditions: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def add(self, template: str, *values: Any) -> None:
        """`template` with `{}` placeholders, one per value, numbered in order."""
        numbers = []
        for value in values:
            self.args.append(value)
            numbers.append(f"${len(self.args)}")
        self.conditions.append(template.format(*numbers))


def _ledger_sql(flt: LedgerFilter, after: tuple[datetime, str] | None) -> _Sql:
    sql = _Sql()
    if flt.transaction_id:
        sql.add("t.transaction_id = {}", flt.transaction_id)
    if flt.member_id:
        sql.add("t.member_id = {}", flt.member_id)
    if flt.merchant_id:
        sql.add("t.merchant_id = {}", flt.merchant_id)
    if flt.kind:
        # A constant, not a parameter: the planner then knows the kind in every plan (a generic
        # plan included) and uses transactions_rare_kinds for reversal, expiry and conversion.
        # Safe to inline: it is one of TRANSACTION_KINDS (checked here as in LedgerFilter).
        if flt.kind not in TRANSACTION_KINDS:
            raise InvalidInput(f"kind is one of {', '.join(TRANSACTION_KINDS)}", field="kind")
        sql.conditions.append(f"t.kind = '{flt.kind}'")
    if flt.reference:
        sql.add("t.reference = {}", flt.reference)
    if flt.since:
        sql.add("t.created_at >= {}", flt.since)
    if flt.until:
        sql.add("t.created_at < {}", flt.until)
    if after:
        sql.add("(t.created_at, t.transaction_id) < ({}, {})", *after)
    return sql


_LEDGER_COLUMNS = """t.transaction_id, t.created_at, t.kind, t.merchant_id, t.member_id,
    t.currency, t.points, t.reference, t.settlement_value, t.balance_after, t.reverses,
    t.requested_points, t.shortfall_points, t.target_currency, t.target_points"""


async def ledger_page(
    conn: asyncpg.Connection, flt: LedgerFilter, *, cursor: str | None, limit: int
) -> Page:
    """Newest first on (created_at, transaction_id): transactions_by_member, _by_merchant or
    _by_time serve the order, whichever the filter selects."""
    after = decode_cursor(cursor, datetime, str) if cursor else None
    sql = _ledger_sql(flt, after)
    sql.args.append(limit + 1)
    where = f"WHERE {' AND '.join(sql.conditions)}" if sql.conditions else ""
    rows = await conn.fetch(
        f"""SELECT {_LEDGER_COLUMNS} FROM transactions t {where}
            ORDER BY t.created_at DESC, t.transaction_id DESC LIMIT ${len(sql.args)}""",
        *sql.args,
    )
    return _page(rows, limit, "created_at", "transaction_id")


async def ledger_rows(
    conn: asyncpg.Connection, flt: LedgerFilter, *, limit: int
) -> AsyncIterator[asyncpg.Record]:
    """Every matching transaction, newest first, streamed (for CSV); call inside a transaction."""
    sql = _ledger_sql(flt, None)
    sql.args.append(limit)
    where = f"WHERE {' AND '.join(sql.conditions)}" if sql.conditions else ""
    query = f"""SELECT {_LEDGER_COLUMNS} FROM transactions t {where}
                ORDER BY t.created_at DESC, t.transaction_id DESC LIMIT ${len(sql.args)}"""
    async for row in conn.cursor(query, *sql.args, prefetch=1000):
        yield row


async def transaction_detail(
    conn: asyncpg.Connection, transaction_id: str
) -> dict[str, Any] | None:
    """One transaction with its postings (and their lots), obligations, and reversals of it."""
    row = await conn.fetchrow(
        f"SELECT {_LEDGER_COLUMNS}, t.hold_id FROM transactions t WHERE t.transaction_id = $1",
        transaction_id,
    )
    if row is None:
        return None
    member_id = row["member_id"]
    postings = await conn.fetch(
        """SELECT p.posting_no, p.account, p.currency, p.amount, p.lot_id,
                  l.issuer_id, m.name AS issuer_name, l.expires_at
           FROM postings p
           LEFT JOIN lots l ON l.member_id = p.member_id AND l.lot_id = p.lot_id
           LEFT JOIN merchants m ON m.merchant_id = l.issuer_id
           WHERE p.member_id = $1 AND p.transaction_id = $2 ORDER BY p.posting_no""",
        member_id,
        transaction_id,
    )
    obligations = await conn.fetch(
        """SELECT o.*, d.name AS debtor_name, c.name AS creditor_name FROM obligations o
           JOIN merchants d ON d.merchant_id = o.debtor_id
           JOIN merchants c ON c.merchant_id = o.creditor_id
           WHERE o.member_id = $1 AND o.transaction_id = $2 ORDER BY o.obligation_id""",
        member_id,
        transaction_id,
    )
    reversals = await conn.fetch(
        f"""SELECT {_LEDGER_COLUMNS} FROM transactions t
            WHERE t.member_id = $1 AND t.reverses = $2 ORDER BY t.created_at""",
        member_id,
        transaction_id,
    )
    merchant_name = None
    if row["merchant_id"]:
        merchant_name = await conn.fetchval(
            "SELECT name FROM merchants WHERE merchant_id = $1", row["merchant_id"]
        )
    adjustment = await conn.fetchrow(
        """SELECT adjustment_id, kind, reason FROM adjustments
           WHERE posted_transaction_id = $1""",
        transaction_id,
    )
    return {
        "transaction": dict(row),
        "merchant_name": merchant_name,
        "postings": [dict(p) for p in postings],
        "obligations": [dict(o) for o in obligations],
        "reversals": [dict(r) for r in reversals],
        "adjustment": dict(adjustment) if adjustment else None,
    }


# --- settlement ----------------------------------------------------------------------------


async def runs_page(conn: asyncpg.Connection, *, cursor: str | None, limit: int) -> Page:
    """Settlement runs, newest period first (keyset on the unique period_end)."""
    after = decode_cursor(cursor, datetime)[0] if cursor else None
    args: list[Any] = []
    where = ""
    if after is not None:
        args.append(after)
        where = "WHERE period_end < $1"
    args.append(limit + 1)
    rows = await conn.fetch(
        f"""SELECT run_id, period_date, kind, period_start, period_end, obligations,
                   transactions, gross_total, fee_total, created_at
            FROM settlement_runs {where} ORDER BY period_end DESC LIMIT ${len(args)}""",
        *args,
    )
    return _page(rows, limit, "period_end")
