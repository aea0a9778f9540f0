"""Every kind of tampering with the audit log shows (RELIABILITY.md A7): four kinds, each at 25
random positions of a 100-entry chain, 100 out of 100 detected.

The tampering is what only someone who turns the append-only triggers off (a superuser, or a
restored and edited backup) can do. It is detected by recomputing the chain from the first entry
(`audit.verify`), and for the newest entry, which has no successor to contradict it, by the head
that an earlier verification published (the console keeps it and re-verifies from it). Each
tampering happens inside a transaction that is rolled back, so every position is tried on the same
genuine chain; the chain is shown to verify again afterwards.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from console import audit
from core.database import Database

ENTRIES = 100
POSITIONS = 25
SEED = int(os.environ.get("AUDIT_TAMPER_SEED", "20261205"))
AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PARKED = 10_000_000
"""A seq far above the chain's, to move rows through without breaking the primary key."""

Tamper = Callable[[asyncpg.Connection, int], Awaitable[None]]


@pytest.fixture
async def chain(fresh_database_url: str) -> AsyncIterator[tuple[Database, audit.Verification]]:
    """A genuine 100-entry chain in a database of its own, and the head its verification gave."""
    db = await Database.connect(fresh_database_url, min_size=1, max_size=2)
    try:
        async with db.transaction() as conn:
            for i in range(ENTRIES):
                await audit.append(
                    conn,
                    actor=("alice", "bob", "carol")[i % 3],
                    action=("merchant.create", "merchant.suspend", "signin", "settings.add")[i % 4],
                    target=f"mer_{i}" if i % 5 else None,
                    at=AT + timedelta(minutes=i),
                    details={"name": f"Shop {i}", "limit": i * 100, "flag": i % 2 == 0},
                )
        async with db.connection() as conn:
            head = await audit.verify(conn)
        assert head.ok
        assert head.entries == ENTRIES
        assert head.head_seq == ENTRIES
        yield db, head
    finally:
        await db.close()


async def edit(conn: asyncpg.Connection, seq: int) -> None:
    """Change one field of the entry; which field depends on the position, so all are tried."""
    field = seq % 5
    changes = (
        "actor = 'mallory'",
        "action = 'merchant.delete'",
        "target = 'mer_evil'",
        "details = details || '{\"limit\": 999999}'::jsonb",
        "at = at + interval '1 microsecond'",
    )
    await conn.execute(f"UPDATE audit_log SET {changes[field]} WHERE seq = $1", seq)


async def delete(conn: asyncpg.Connection, seq: int) -> None:
    await conn.execute("DELETE FROM audit_log WHERE seq = $1", seq)


async def insert(conn: asyncpg.Connection, seq: int) -> None:
    """Slip a forged entry in before entry `seq`, correctly chained to the one before it, and
    renumber the rest after it."""
    await conn.execute("UPDATE audit_log SET seq = seq + $2 WHERE seq >= $1", seq, PARKED)
    await conn.execute("UPDATE audit_log SET seq = seq - $1 + 1 WHERE seq > $1", PARKED)
    prev_hash = audit.GENESIS
    if seq > 1:
        prev_hash = bytes(
            await conn.fetchval("SELECT entry_hash FROM audit_log WHERE seq = $1", seq - 1)
        )
    at = AT + timedelta(minutes=seq, seconds=30)
    details = {"name": "Forged", "limit": 1}
    entry_hash = audit.chain_hash(
        prev_hash,
        audit.canonical(
            seq=seq, at=at, actor="mallory", action="signin", target=None, details=details
        ),
    )
    await conn.execute(
        """INSERT INTO audit_log (seq, at, actor, action, target, details, prev_hash, entry_hash)
           VALUES ($1, $2, 'mallory', 'signin', NULL, $3, $4, $5)""",
        seq,
        at,
        details,
        prev_hash,
        entry_hash,
    )


async def swap(conn: asyncpg.Connection, seq: int) -> None:
    """Exchange the entry with its successor (or, for the newest, with its predecessor)."""
    other = seq + 1 if seq < ENTRIES else seq - 1
    await conn.execute("UPDATE audit_log SET seq = $2 WHERE seq = $1", seq, PARKED)
    await conn.execute("UPDATE audit_log SET seq = $2 WHERE seq = $1", other, seq)
    await conn.execute("UPDATE audit_log SET seq = $2 WHERE seq = $1", PARKED, other)


KINDS: dict[str, Tamper] = {"edit": edit, "delete": delete, "insert": insert, "swap": swap}


async def tampered_and_checked(
    db: Database, head: audit.Verification, tamper: Tamper, seq: int
) -> tuple[audit.Verification, audit.Verification]:
    """Tamper at `seq`, verify from the start and from the published head, then roll back."""
    async with db.connection() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
            await tamper(conn, seq)
            from_start = await audit.verify(conn)
            from_head = await audit.verify(conn, after_seq=head.head_seq, after_hash=head.head_hash)
        finally:
            await transaction.rollback()
    return from_start, from_head


@pytest.mark.parametrize("kind", KINDS)
async def test_tampering_at_25_random_positions_of_100_is_always_detected(
    chain: tuple[Database, audit.Verification], kind: str
) -> None:
    db, head = chain
    positions = random.Random(f"{SEED}-{kind}").sample(range(1, ENTRIES + 1), POSITIONS)
    missed: list[int] = []
    for seq in positions:
        from_start, from_head = await tampered_and_checked(db, head, KINDS[kind], seq)
        if from_start.ok and from_head.ok:
            missed.append(seq)
            continue
        if not from_start.ok:
            # The break is reported where it is, never earlier than the tampered entry.
            assert from_start.broken_seq is not None
            assert seq - 1 <= from_start.broken_seq <= seq + 1, (kind, seq, from_start)
        else:
            assert seq >= ENTRIES - 1, f"only the newest entries need the head: {kind} at {seq}"
    assert missed == [], f"{kind}: undetected at {missed} (seed {SEED})"
    async with db.connection() as conn:
        after = await audit.verify(conn)
    assert after.ok, "the genuine chain verifies again"
    assert after.head_hash == head.head_hash, "the genuine chain is back"


async def test_an_untouched_chain_verifies_from_the_start_and_from_its_head(
    chain: tuple[Database, audit.Verification],
) -> None:
    """The check above cannot pass by reporting everything as broken."""
    db, head = chain
    async with db.connection() as conn:
        from_start = await audit.verify(conn)
        from_head = await audit.verify(conn, after_seq=head.head_seq, after_hash=head.head_hash)
    assert from_start.ok
    assert from_start.entries == ENTRIES
    assert from_head.ok
    assert from_head.head_seq == ENTRIES


@pytest.mark.parametrize("details", ["'\"a string\"'", "'[1, 2]'", "'null'", "'42'"])
async def test_details_that_are_not_an_object_are_a_break_not_a_crash(
    chain: tuple[Database, audit.Verification], details: str
) -> None:
    """Whatever a tamperer writes, verification reports where the chain breaks."""
    db, head = chain

    async def replace_details(conn: asyncpg.Connection, seq: int) -> None:
        await conn.execute(f"UPDATE audit_log SET details = {details}::jsonb WHERE seq = $1", seq)

    from_start, _ = await tampered_and_checked(db, head, replace_details, 37)
    assert not from_start.ok
    assert from_start.broken_seq == 37
    assert from_start.problem == "its details are not a JSON object"
