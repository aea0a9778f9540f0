"""Idempotency keys: the same key and request return the first result and change nothing.

The record is written in the same database transaction as the effect it describes, so there is
never an effect without its record, nor a record without its effect. While a request holds its
key (a transaction-scoped advisory lock), a duplicate is refused as in flight rather than queued
behind it; after it commits, the duplicate finds the record and replays it.

A request that a ledger rule refused once it ran (`RECORDED_REFUSALS`: not enough points, a
missing member, hold or transaction, the liability limit, a hold no longer active, a reversal
past its original) is recorded too, as that refusal, and its retries replay it (ADR 0013). Its
effects roll back, so the record is written in a transaction of its own right after, while the
request still holds the key: `keep` takes the same lock at session level before the rollback,
`record_refusal` writes and gives it back. A duplicate is therefore refused as in flight until
the refusal is recorded, and a refusal's record and a success's can never both be written for
one key. Refusals before anything ran are not recorded: a malformed request (validation_error),
a key in flight or reused, a merchant that may not transact, and every server-side failure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.errors import DomainError, InvariantViolation, NotFound, ValidationFailed
from core.limits import IDEMPOTENCY_KEY_LENGTH_MAX, IDEMPOTENCY_RETENTION_S
from exchange.errors import (
    HoldNotActive,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InsufficientPoints,
    LiabilityLimitExceeded,
    ReversalExceedsOriginal,
)

RECORDED_REFUSALS: tuple[type[DomainError], ...] = (
    InsufficientPoints,
    LiabilityLimitExceeded,
    HoldNotActive,
    ReversalExceedsOriginal,
    NotFound,
)
"""The refusals of a ledger rule, met once the request ran: recorded and replayed under its key.
Never `ValidationFailed` (the request was malformed: corrected, it may run under the same key)."""

KEY_LOCK = "hashtextextended($1 || chr(31) || $2, 7)"
"""The advisory lock of a (merchant, key); `try_lock_all` spells it for an array of keys."""


class RefusalReplayed(DomainError):
    """The first request under this key was refused: the same refusal again, as a replay.

    It carries the first refusal's code, detail and extra members, so that it renders as the very
    same problem (the API adds `Idempotency-Replayed: true`)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code


def recordable(error: DomainError) -> bool:
    """Whether a refusal met while the request ran is recorded under its key."""
    return isinstance(error, RECORDED_REFUSALS) and not isinstance(error, RefusalReplayed)


@dataclass(frozen=True, slots=True)
class Stored:
    """A key's record: the request's fingerprint, and its response (or refusal) as JSON text."""

    request_hash: bytes
    response: str
    refused: bool = False


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
    locked = await conn.fetchval(f"SELECT pg_try_advisory_xact_lock({KEY_LOCK})", merchant_id, key)
    if not locked:
        raise IdempotencyKeyInFlight("a request with this idempotency key is being processed")
    row = await conn.fetchrow(
        """SELECT request_hash, response, refused FROM idempotency_records
           WHERE merchant_id = $1 AND idempotency_key = $2 AND created_at > $3""",
        merchant_id,
        key,
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    if row is None:
        return None
    # Stored as the exact JSON text: decoding keeps the key order, so the replay re-encodes to
    # the very bytes of the first response (and so to the same Content-Digest and signature).
    return replay(Stored(bytes(row["request_hash"]), row["response"], row["refused"]), fingerprint)


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
               refused = EXCLUDED.refused, created_at = EXCLUDED.created_at""",
        merchant_id,
        key,
        fingerprint,
        _response_text(response),
        now,
    )


# --- refusals (ADR 0013) ---------------------------------------------------------------------


async def keep(conn: asyncpg.Connection, *, merchant_id: str, key: str) -> None:
    """Hold the key `claim` locked past this transaction's rollback: the same lock at session
    level, until `record_refusal` gives it back. Call it inside the transaction that claimed the
    key (this session holds the lock, so it is granted at once)."""
    kept = await conn.fetchval(f"SELECT pg_try_advisory_lock({KEY_LOCK})", merchant_id, key)
    assert kept, "the key is kept only by the session that claimed it"


async def record_refusal(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    key: str,
    fingerprint: bytes,
    refusal: DomainError,
    now: datetime,
) -> None:
    """Record `refusal` under the key, in a transaction of its own on the connection that
    `keep`s the key (the request's own transaction rolled back), then give the key back."""
    try:
        async with conn.transaction():
            await _insert(conn, merchant_id, [(key, fingerprint, refusal)], now)
    finally:
        try:
            await conn.execute(f"SELECT pg_advisory_unlock({KEY_LOCK})", merchant_id, key)
        except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError):
            # The session is gone, and its advisory lock with it: nothing is left to give
            # back, and the error that lost it (if any) is the one to report.
            if _still_connected(conn):
                raise


def _still_connected(conn: asyncpg.Connection) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # a pool's proxy whose connection was taken back
        return False


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
) -> dict[str, Stored]:
    """The records of those of `keys` that already ran."""
    rows = await conn.fetch(
        """SELECT idempotency_key, request_hash, response, refused FROM idempotency_records
           WHERE merchant_id = $1 AND idempotency_key = ANY($2::text[]) AND created_at > $3""",
        merchant_id,
        keys,
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    return {
        row["idempotency_key"]: Stored(bytes(row["request_hash"]), row["response"], row["refused"])
        for row in rows
    }


def replay(stored: Stored, fingerprint: bytes) -> dict[str, Any]:
    """`claim`'s answer for a key that already ran: its first result; or its first refusal
    again (`RefusalReplayed`); or, for another request, `IdempotencyKeyReused`."""
    if stored.request_hash != fingerprint:
        raise IdempotencyKeyReused("this idempotency key was used with a different request")
    body: dict[str, Any] = json.loads(stored.response)
    if stored.refused:
        raise RefusalReplayed(body["code"], body["detail"], **body["extra"])
    return body


async def record_all(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    results: Sequence[tuple[str, bytes, Mapping[str, Any] | DomainError]],
    now: datetime,
) -> None:
    """`record` for many (key, fingerprint, response or recordable refusal) at once, in the
    transaction that holds their keys (`try_lock_all`)."""
    await _insert(conn, merchant_id, results, now)


async def _insert(
    conn: asyncpg.Connection,
    merchant_id: str,
    results: Sequence[tuple[str, bytes, Mapping[str, Any] | DomainError]],
    now: datetime,
) -> None:
    # Only a record past retention is replaced: the key is handled as new (claim ignored it).
    # A live record is never overwritten, whatever it holds: its key is held from the claim that
    # found none until this is written, so there is none; should that discipline ever break, the
    # count below refuses to go on (a refusal and a success recorded for one key).
    status: str = await conn.execute(
        """INSERT INTO idempotency_records (merchant_id, idempotency_key, request_hash, response,
                                            refused, created_at)
           SELECT $1, r.idempotency_key, r.request_hash, r.response, r.refused, $6
           FROM unnest($2::text[], $3::bytea[], $4::text[], $5::boolean[])
                AS r(idempotency_key, request_hash, response, refused)
           ON CONFLICT (merchant_id, idempotency_key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
               refused = EXCLUDED.refused, created_at = EXCLUDED.created_at
           WHERE idempotency_records.created_at <= $7""",
        merchant_id,
        [key for key, _, _ in results],
        [fingerprint for _, fingerprint, _ in results],
        [_stored_text(response) for _, _, response in results],
        [isinstance(response, DomainError) for _, _, response in results],
        now,
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    if int(status.split()[-1]) != len(results):
        raise InvariantViolation("an idempotency record was written while its key was held")


def _stored_text(response: Mapping[str, Any] | DomainError) -> str:
    if isinstance(response, DomainError):
        assert recordable(response), f"{response.code} is not recorded"
        # The refusal as the ledger raised it; the API renders it to the same problem again.
        refusal = {"code": response.code, "detail": response.detail, "extra": response.extra}
        return json.dumps(refusal, separators=(",", ":"), default=str)
    return _response_text(response)


def _response_text(response: Mapping[str, Any]) -> str:
    return json.dumps(response, separators=(",", ":"), ensure_ascii=False)


async def prune(conn: asyncpg.Connection, now: datetime) -> int:
    result: str = await conn.execute(
        "DELETE FROM idempotency_records WHERE created_at <= $1",
        now - timedelta(seconds=IDEMPOTENCY_RETENTION_S),
    )
    return int(result.split()[-1])
