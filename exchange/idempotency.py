"""Idempotency keys: the same key and request return the first result and change nothing.

The record is written in the same database transaction as the effect it describes, so there is
never an effect without its record, nor a record without its effect. While a request holds its
key (a transaction-scoped advisory lock), a duplicate is refused as in flight rather than queued
behind it; after it commits, the duplicate finds the record and replays it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.errors import ValidationFailed
from core.limits import IDEMPOTENCY_KEY_LENGTH_MAX, IDEMPOTENCY_RETENTION_S
from exchange.errors import IdempotencyKeyInFlight, IdempotencyKeyReused


def validate_key(key: str) -> None:
    """1 to 255 visible ASCII characters (PROTOCOL.md)."""
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_LENGTH_MAX or not all(
        "!" <= character <= "~" for character in key
    ):
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            fields={"idempotency_key": "invalid"},
        )


def request_fingerprint(operation: str, params: Mapping[str, Any]) -> bytes:
    canonical = json.dumps(
        {"operation": operation, "params": params},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).digest()


async def claim(
    conn: asyncpg.Connection, *, merchant_id: str, key: str, fingerprint: bytes, now: datetime
) -> dict[str, Any] | None:
    """Hold the key for this transaction; return the stored result if it already ran."""
    validate_key(key)
    locked = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7))",
        merchant_id,
        key,
    )
    if not locked:
        raise IdempotencyKeyInFlight("a request with this idempotency key is being processed")
    row = await conn.fetchrow(
        """SELECT request_hash, response FROM idempotency_records
           WHERE merchant_id = $1 AND idempotency_key = $2 AND created_at > $3""",
        merchant_id,
        key,
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    if row is None:
        return None
    if bytes(row["request_hash"]) != fingerprint:
        raise IdempotencyKeyReused("this idempotency key was used with a different request")
    # Stored as the exact JSON text: decoding keeps the key order, so the replay re-encodes to
    # the very bytes of the first response (and so to the same Content-Digest and signature).
    stored: dict[str, Any] = json.loads(row["response"])
    return stored


async def record(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    key: str,
    fingerprint: bytes,
    response: Mapping[str, Any],
    now: datetime,
) -> None:
    # A record past retention is replaced: the key is handled as new (claim ignored it).
    await conn.execute(
        """INSERT INTO idempotency_records (merchant_id, idempotency_key, request_hash, response,
                                            created_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (merchant_id, idempotency_key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
               created_at = EXCLUDED.created_at""",
        merchant_id,
        key,
        fingerprint,
        json.dumps(response, separators=(",", ":"), ensure_ascii=False),
        now,
    )


async def prune(conn: asyncpg.Connection, now: datetime) -> int:
    result: str = await conn.execute(
        "DELETE FROM idempotency_records WHERE created_at <= $1",
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    return int(result.split()[-1])
