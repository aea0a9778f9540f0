"""`verify` finds nothing on a sound ledger, and names the rows when the books are broken."""

from __future__ import annotations

from core.database import Database
from exchange.reconcile import verify
from exchange.service import Ledger
from merchants import repository as merchant_repository
from tests.factories import DEFAULT_SETTINGS, issue, make_member, make_merchant, redeem


async def test_verify_finds_no_break_after_ordinary_activity(db, ledger):
    tea, books = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    redemption = await redeem(ledger, books, member, 30)
    await ledger.reverse(
        merchant_id=books,
        idempotency_key="r1",
        transaction_id=redemption["transaction_id"],
        reference="refund",
        points=10,
    )
    assert await verify(db) == []


async def test_verify_reports_a_lot_changed_behind_the_ledgers_back(db, ledger):
    # Restored in `finally`, so the shared ledger still reconciles at the end of the session.
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 100)
    async with db.transaction() as conn:
        await conn.execute("UPDATE lots SET remaining_points = 90 WHERE member_id = $1", member)
    try:
        breaks = await verify(db)
        names = {item.check for item in breaks}
        assert {
            "member_balance_equals_lots",
            "lot_remaining_equals_postings",
            "issuer_outstanding_equals_lots",
        } <= names
        lot_break = next(b for b in breaks if b.check == "lot_remaining_equals_postings")
        assert lot_break.rows[0]["member_id"] == member
        assert lot_break.rows[0]["remaining_points"] == 90
    finally:
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE lots SET remaining_points = 100 WHERE member_id = $1", member
            )
    assert await verify(db) == []


async def test_verify_reports_a_missing_obligation(fresh_database_url, clock):
    db = await Database.connect(fresh_database_url, min_size=1, max_size=2)
    try:
        await _break_an_obligation(db, Ledger(db, clock))
    finally:
        await db.close()


async def _break_an_obligation(db, ledger):
    async with db.transaction() as conn:
        await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
    tea, books = await make_merchant(db), await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 50)
    redemption = await redeem(ledger, books, member, 20)
    async with db.transaction() as conn:
        # Obligations are append-only; a saboteur with table rights disables the guard.
        await conn.execute("ALTER TABLE obligations DISABLE TRIGGER obligations_append_only")
        await conn.execute("DELETE FROM obligations WHERE member_id = $1", member)
        await conn.execute("ALTER TABLE obligations ENABLE TRIGGER obligations_append_only")
    breaks = await verify(db)
    found = next(b for b in breaks if b.check == "obligations_equal_cross_merchant_consumption")
    assert found.rows[0]["transaction_id"] == redemption["transaction_id"]
    assert found.rows[0]["consumed_points"] == 20
    assert found.rows[0]["owed_points"] == 0
