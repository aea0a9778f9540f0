"""The audit log: append-only in the database, hash-chained, and tampering shows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from console import audit
from core.database import Database

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def fresh_db(fresh_database_url: str):
    """An audit log of its own: these tests break the chain on purpose."""
    database = await Database.connect(fresh_database_url, min_size=1, max_size=12)
    yield database
    await database.close()


async def _append(db: Database, n: int, actor: str = "alice") -> None:
    for i in range(n):
        async with db.transaction() as conn:
            await audit.append(
                conn,
                actor=actor,
                action="merchant.create",
                target=f"mer_{i}",
                at=AT,
                details={"name": f"Shop {i}", "limit": i * 100, "flag": i % 2 == 0},
            )


async def _verify(db: Database, **kwargs) -> audit.Verification:
    async with db.connection() as conn:
        return await audit.verify(conn, **kwargs)


async def test_entries_chain_from_genesis_and_verify(fresh_db: Database):
    await _append(fresh_db, 5)
    async with fresh_db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM audit_log ORDER BY seq")
    assert [row["seq"] for row in rows] == [1, 2, 3, 4, 5]
    assert bytes(rows[0]["prev_hash"]) == audit.GENESIS
    for before, after in zip(rows, rows[1:], strict=False):
        assert bytes(after["prev_hash"]) == bytes(before["entry_hash"])
    result = await _verify(fresh_db)
    assert result.ok
    assert result.entries == 5
    assert result.head_seq == 5
    assert result.head_hash == bytes(rows[-1]["entry_hash"])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
    ],
)
async def test_the_database_refuses_to_change_history(fresh_db: Database, statement: str):
    await _append(fresh_db, 1)
    async with fresh_db.connection() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)


async def _tamper(db: Database, statement: str) -> None:
    """What only someone who disables the triggers (a superuser) can do."""
    async with db.transaction() as conn:
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        await conn.execute(statement)
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


async def test_an_edited_entry_breaks_the_chain_there(fresh_db: Database):
    await _append(fresh_db, 6)
    await _tamper(fresh_db, 'UPDATE audit_log SET details = \'{"name": "Evil"}\' WHERE seq = 4')
    result = await _verify(fresh_db)
    assert not result.ok
    assert result.broken_seq == 4
    assert result.entries == 3
    assert "does not match its hash" in (result.problem or "")


async def test_a_removed_entry_breaks_the_chain(fresh_db: Database):
    await _append(fresh_db, 6)
    await _tamper(fresh_db, "DELETE FROM audit_log WHERE seq = 3")
    result = await _verify(fresh_db)
    assert not result.ok
    assert result.broken_seq == 4
    assert result.problem == "entry 3 is missing"


async def test_a_rehashed_entry_still_breaks_the_next_link(fresh_db: Database):
    """Recomputing the edited entry's own hash does not help: the next entry points at the old."""
    await _append(fresh_db, 4)
    async with fresh_db.connection() as conn:
        row = await conn.fetchrow("SELECT * FROM audit_log WHERE seq = 2")
    forged = audit.chain_hash(
        bytes(row["prev_hash"]),
        audit.canonical(
            seq=2,
            at=row["at"],
            actor="mallory",
            action=row["action"],
            target=row["target"],
            details=row["details"],
        ),
    )
    await _tamper(
        fresh_db,
        f"UPDATE audit_log SET actor = 'mallory', entry_hash = '\\x{forged.hex()}' WHERE seq = 2",
    )
    result = await _verify(fresh_db)
    assert not result.ok
    assert result.broken_seq == 3


async def test_incremental_verification_rechecks_its_anchor(fresh_db: Database):
    await _append(fresh_db, 3)
    checkpoint = await _verify(fresh_db)
    await _append(fresh_db, 2)
    async with fresh_db.connection() as conn:
        newer = await audit.verify_since(conn, checkpoint, now=AT)
    assert newer.ok
    assert newer.entries == 5
    assert newer.head_seq == 5
    await _tamper(fresh_db, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")
    async with fresh_db.connection() as conn:
        after = await audit.verify_since(conn, newer, now=AT)
    assert not after.ok
    assert after.broken_seq == 5


async def test_concurrent_appends_stay_one_contiguous_chain(fresh_db: Database):
    async def one(i: int) -> None:
        async with fresh_db.transaction() as conn:
            await audit.append(conn, actor=f"user{i}", action="signin", at=AT)

    await asyncio.gather(*(one(i) for i in range(30)))
    result = await _verify(fresh_db)
    assert result.ok
    assert result.entries == 30


async def test_an_entry_rolls_back_with_its_change(fresh_db: Database):
    async def change_that_fails() -> None:
        async with fresh_db.transaction() as conn:
            await audit.append(conn, actor="alice", action="merchant.create", at=AT)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await change_that_fails()
    assert (await _verify(fresh_db)).entries == 0


async def test_the_audit_page_shows_whether_the_chain_verifies(as_operator):
    page = await as_operator.get("/console/audit")
    assert page.status_code == 200
    assert 'data-testid="chain-status" data-ok="true"' in page.text
    assert "signin" in page.text
