"""Idempotency keys: the same key and request return the first result and change nothing.

The record is written in the same database transaction as the effect it describes, so there is
never an effect without its record, nor a record without its effect. While a request holds its
key (a transaction-scoped advisory lock), a duplicate is refused as in flight rather than queued
behind it; after it commits, the duplicate finds the record and replays it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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
    # Stored as the exact JSON text: decoding keeps the key order, so the replay re-encodes to
    # the very bytes of the first response (and so to the same Content-Digest and signature).
    return replay((bytes(row["request_hash"]), row["response"]), fingerprint)


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
        _response_text(response),
        now,
    )


# --- many keys at once (exchange.bulk) -------------------------------------------------------


async def try_lock_all(conn: asyncpg.Connection, *, merchant_id: str, keys: Sequence[str]) -> bool:
    """`claim`'s lock for every key, without waiting; False if any is held by another request
    (the caller then rolls back, which gives back the ones it got)."""
    refused: int = await conn.fetchval(
        """SELECT count(*) FILTER (
                  WHERE NOT pg_try_advisory_xact_lock(hashtextextended($1 || chr(31) || k, 7)))
           FROM unnest($2::text[]) AS k""",
        merchant_id,
        keys,
    )
    return refused == 0


async def stored_results(
    conn: asyncpg.Connection, *, merchant_id: str, keys: Sequence[str], now: datetime
) -> dict[str, tuple[bytes, str]]:
    """The (fingerprint, response JSON) recorded for those of `keys` that already ran."""
    rows = await conn.fetch(
        """SELECT idempotency_key, request_hash, response FROM idempotency_records
           WHERE merchant_id = $1 AND idempotency_key = ANY($2::text[]) AND created_at > $3""",
        merchant_id,
        keys,
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    return {row["idempotency_key"]: (bytes(row["request_hash"]), row["response"]) for row in rows}


def replay(stored: tuple[bytes, str], fingerprint: bytes) -> dict[str, Any]:
    """`claim`'s answer for a key that already ran: its first result, or a refusal."""
    request_hash, response = stored
    if request_hash != fingerprint:
        raise IdempotencyKeyReused("this idempotency key was used with a different request")
    body: dict[str, Any] = json.loads(response)
    return body


async def record_all(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    results: Sequence[tuple[str, bytes, Mapping[str, Any]]],
    now: datetime,
) -> None:
    """`record` for many (key, fingerprint, response) at once."""
    await conn.execute(
        """INSERT INTO idempotency_records (merchant_id, idempotency_key, request_hash, response,
                                            created_at)
           SELECT $1, r.idempotency_key, r.request_hash, r.response, $5
           FROM unnest($2::text[], $3::bytea[], $4::text[])
                AS r(idempotency_key, request_hash, response)
           ON CONFLICT (merchant_id, idempotency_key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
               created_at = EXCLUDED.created_at""",
        merchant_id,
        [key for key, _, _ in results],
        [fingerprint for _, fingerprint, _ in results],
        [_response_text(response) for _, _, response in results],
        now,
    )


def _response_text(response: Mapping[str, Any]) -> str:
    return json.dumps(response, separators=(",", ":"), ensure_ascii=False)


async def prune(conn: asyncpg.Connection, now: datetime) -> int:
    result: str = await conn.execute(
        "DELETE FROM idempotency_records WHERE created_at <= $1",
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    return int(result.split()[-1])
