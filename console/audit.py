"""The audit log: every admin action, append-only and hash-chained.

entry_hash = SHA-256(prev_hash || canonical JSON of the entry), where the first entry's prev_hash is
32 zero bytes and the canonical JSON is `{"action","actor","at","details","seq","target"}` with
sorted keys, no spaces, `at` in RFC 3339 UTC with microseconds. The database refuses UPDATE, DELETE
and TRUNCATE on the table; the chain makes any change made around that (by a superuser, on a
restored backup) visible: verification recomputes every hash from the first entry.

An entry is appended inside the same transaction as the change it records, so both commit or
neither does. Appends serialise on one advisory lock taken just before the insert, at the end of
the unit of work, so the lock is held only for the insert and the commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from console.limits import AUDIT_VERIFY_BATCH

GENESIS = bytes(32)
_LOCK_KEY = 0x616C6C69616E6365  # "alliance": one advisory lock for the whole log
JsonScalar = str | int | bool | None
Details = Mapping[str, JsonScalar | list[JsonScalar]]


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    prev_hash: bytes
    entry_hash: bytes


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of checking the chain: `ok`, how many entries were checked, the head, and the
    first entry that does not verify (if any) with why."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: bytes
    broken_seq: int | None = None
    problem: str | None = None
    checked_at: datetime | None = None


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(
    *, seq: int, at: datetime, actor: str, action: str, target: str | None, details: Details
) -> bytes:
    body = {
        "action": action,
        "actor": actor,
        "at": rfc3339(at),
        "details": dict(details),
        "seq": seq,
        "target": target,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, entry: bytes) -> bytes:
    return hashlib.sha256(prev_hash + entry).digest()


def _check_details(details: Details) -> None:
    for key, value in details.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            # Floats would not survive the jsonb round trip byte for byte; nothing needs them.
            if item is not None and not isinstance(item, str | int | bool):
                raise TypeError(f"audit detail {key!r} must be a string, integer or boolean")


async def append(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    at: datetime,
    target: str | None = None,
    details: Details | None = None,
) -> Entry:
    """Append one entry in the caller's transaction (it commits with the change it records)."""
    details = dict(details or {})
    _check_details(details)
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
    head = await conn.fetchrow("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq = 1 if head is None else head["seq"] + 1
    prev_hash = GENESIS if head is None else bytes(head["entry_hash"])
    # Stored at the precision PostgreSQL keeps, so the hash recomputes from the stored row.
    at = at.astimezone(UTC)
    entry_hash = chain_hash(
        prev_hash,
        canonical(seq=seq, at=at, actor=actor, action=action, target=target, details=details),
    )
    await conn.execute(
        """INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, entry_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        seq,
        at,
        actor,
        action,
        target,
        details,
        prev_hash,
        entry_hash,
    )
    return Entry(seq, at, actor, action, target, details, prev_hash, entry_hash)


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(
        seq=row["seq"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        details=row["details"],
        prev_hash=bytes(row["prev_hash"]),
        entry_hash=bytes(row["entry_hash"]),
    )


async def verify(
    conn: asyncpg.Connection,
    *,
    after_seq: int = 0,
    after_hash: bytes = GENESIS,
    now: datetime | None = None,
) -> Verification:
    """Recompute the chain from the entry after `after_seq` (whose hash must be `after_hash`).

    From the start (`after_seq=0`) this checks every entry. Starting later checks only the newer
    entries; the caller must know `after_hash` from an earlier full verification, and this
    re-reads that entry to make sure it still has that hash and its content still matches it.
    """
    if after_seq:
        row = await conn.fetchrow("SELECT * FROM audit_log WHERE seq = $1", after_seq)
        anchor = _entry(row) if row is not None else None
        if (
            anchor is None
            or anchor.entry_hash != after_hash
            or _problem(anchor, after_seq, anchor.prev_hash) is not None
        ):
            return Verification(
                False,
                0,
                after_seq,
                after_hash,
                broken_seq=after_seq,
                problem="an entry verified earlier has changed or gone",
                checked_at=now,
            )
    expected_seq, prev_hash, checked = after_seq + 1, after_hash, 0
    while True:
        rows = await conn.fetch(
            "SELECT * FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
            expected_seq,
            AUDIT_VERIFY_BATCH,
        )
        for row in rows:
            entry = _entry(row)
            problem = _problem(entry, expected_seq, prev_hash)
            if problem is not None:
                return Verification(
                    False,
                    checked,
                    expected_seq - 1,
                    prev_hash,
                    broken_seq=entry.seq,
                    problem=problem,
                    checked_at=now,
                )
            prev_hash, expected_seq, checked = entry.entry_hash, expected_seq + 1, checked + 1
        if len(rows) < AUDIT_VERIFY_BATCH:
            break
    # An entry with a seq below the next expected one but not read above (a gap filled out of
    # order) is impossible with contiguous seqs; a gap itself shows as a seq mismatch.
    return Verification(True, checked, expected_seq - 1, prev_hash, checked_at=now)


def _problem(entry: Entry, expected_seq: int, prev_hash: bytes) -> str | None:
    if entry.seq != expected_seq:
        return f"entry {expected_seq} is missing"
    if entry.prev_hash != prev_hash:
        return "its prev_hash is not the previous entry's hash"
    if not isinstance(entry.details, dict):
        # `append` only writes objects; anything else was written around it.
        return "its details are not a JSON object"
    recomputed = chain_hash(
        prev_hash,
        canonical(
            seq=entry.seq,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            details=entry.details,
        ),
    )
    if recomputed != entry.entry_hash:
        return "its content does not match its hash"
    return None


async def page(
    conn: asyncpg.Connection,
    *,
    before_seq: int | None,
    limit: int,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> list[Entry]:
    """Newest first, keyset on seq. Only the filters in use are in the query (never `$1 IS NULL
    OR ...`, which a generic plan cannot drop), so each is served by its index: (actor, seq),
    (action, seq) or (target, seq)."""
    conditions: list[str] = []
    args: list[Any] = []
    filters = (("seq <", before_seq), ("actor =", actor), ("action =", action))
    for condition, value in (*filters, ("target =", target)):
        if value is not None:
            args.append(value)
            conditions.append(f"{condition} ${len(args)}")
    args.append(limit)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await conn.fetch(
        f"SELECT * FROM audit_log {where} ORDER BY seq DESC LIMIT ${len(args)}", *args
    )
    return [_entry(row) for row in rows]


async def verify_since(
    conn: asyncpg.Connection, checkpoint: Verification | None, *, now: datetime
) -> Verification:
    """Verify from the start, or (given a passing earlier verification) only what came after it.

    The incremental check re-reads the checkpoint's last entry, so a change to it shows; a change
    to an older entry shows at the next full verification (AUDIT_FULL_VERIFY_S at the most).
    """
    if checkpoint is None or not checkpoint.ok:
        return await verify(conn, now=now)
    newer = await verify(
        conn, after_seq=checkpoint.head_seq, after_hash=checkpoint.head_hash, now=now
    )
    if not newer.ok:
        return newer
    return Verification(
        True, checkpoint.entries + newer.entries, newer.head_seq, newer.head_hash, checked_at=now
    )
