"""Reads a merchant may make: balances, its own transactions."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import asyncpg

from core.errors import NotFound, ValidationFailed
from core.limits import PAGE_SIZE_MAX
from exchange import repository
from exchange.views import rfc3339, transaction_view


async def balance(
    conn: asyncpg.Connection, *, member_id: str, currency: str, now: datetime
) -> dict[str, Any]:
    if not await repository.member_exists(conn, member_id):
        raise NotFound("no such member")
    available = await repository.available_points(conn, member_id, currency, now)
    held = await repository.held_points(conn, member_id, currency, now)
    upcoming = await repository.next_expiry(conn, member_id, currency, now)
    return {
        "member_id": member_id,
        "currency": currency,
        "available": available,
        "held": held,
        "next_expiry": ({"points": upcoming[0], "at": rfc3339(upcoming[1])} if upcoming else None),
    }


async def transaction(
    conn: asyncpg.Connection, *, merchant_id: str, transaction_id: str
) -> dict[str, Any]:
    row = await repository.transaction_by_id(conn, transaction_id)
    if row is None or row["merchant_id"] != merchant_id:
        raise NotFound("no such transaction")
    return transaction_view(row)


def encode_cursor(created_at: datetime, transaction_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), transaction_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSOR_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")
CURSOR_YEARS = range(1970, 10_000)


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names; anything not made by `encode_cursor` is refused."""
    invalid = ValidationFailed("cursor is not valid", fields={"cursor": "invalid"})
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_text, transaction_id = json.loads(base64.urlsafe_b64decode(padded))
        created_at = datetime.fromisoformat(created_text)
    except (ValueError, TypeError) as error:
        raise invalid from error
    try:
        in_range = created_at.tzinfo is not None and created_at.astimezone(UTC).year in CURSOR_YEARS
    except OverflowError:
        in_range = False
    if not in_range:
        raise invalid
    if not isinstance(transaction_id, str) or not CURSOR_ID.match(transaction_id):
        raise invalid
    return created_at, transaction_id


async def transactions(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    member_id: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise ValidationFailed(
            f"limit must be between 1 and {PAGE_SIZE_MAX}", fields={"limit": "out of range"}
        )
    after = decode_cursor(cursor) if cursor else None
    rows = await repository.transactions_page(
        conn, merchant_id=merchant_id, member_id=member_id, after=after, limit=limit + 1
    )
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if page else None
    return {
        "data": [transaction_view(row) for row in page],
        "next_cursor": (
            encode_cursor(last["created_at"], last["transaction_id"]) if more and last else None
        ),
    }
