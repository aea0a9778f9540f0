"""`alliance demo`, `verify` and `expire`, run as an operator runs them, on a fresh database."""

from __future__ import annotations

from datetime import UTC, datetime

from core.clock import FixedClock
from core.database import Database
from exchange.service import Ledger
from merchants import repository as merchant_repository
from tests.factories import DEFAULT_SETTINGS, issue, make_member, make_merchant


async def _ledger_with_settings(url: str, clock: FixedClock) -> tuple[Database, Ledger]:
    db = await Database.connect(url, min_size=1, max_size=2)
    async with db.transaction() as conn:
        await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
    return db, Ledger(db, clock)


async def test_demo_seeds_an_alliance_whose_books_balance(alliance, tmp_path):
    seeded = await alliance("demo", "--data-dir", str(tmp_path))
    assert seeded.exit_code == 0, seeded.output
    assert "Seeded 3 merchants, 300 members" in seeded.output
    assert len(list((tmp_path / "demo-keys").glob("*.pem"))) == 3

    verified = await alliance("verify")
    assert verified.exit_code == 0, verified.output
    assert "The books balance" in verified.output

    again = await alliance("demo", "--data-dir", str(tmp_path))
    assert again.exit_code == 0
    assert "already seeded" in again.output


async def test_demo_history_has_every_kind_of_transaction(alliance, fresh_database_url, tmp_path):
    assert (await alliance("demo", "--data-dir", str(tmp_path))).exit_code == 0
    db = await Database.connect(fresh_database_url, min_size=1, max_size=1)
    try:
        async with db.connection() as conn:
            kinds = {
                row["kind"] for row in await conn.fetch("SELECT DISTINCT kind FROM transactions")
            }
            cross = await conn.fetchval("SELECT count(*) FROM obligations")
    finally:
        await db.close()
    assert kinds == {"issuance", "redemption", "reversal", "expiry", "conversion"}
    assert cross > 0


async def test_verify_exits_non_zero_and_shows_the_rows_of_a_break(alliance, fresh_database_url):
    db, ledger = await _ledger_with_settings(
        fresh_database_url, FixedClock(datetime(2026, 6, 1, tzinfo=UTC))
    )
    try:
        tea = await make_merchant(db)
        member = await make_member(ledger)
        await issue(ledger, tea, member, 100)
        async with db.transaction() as conn:
            await conn.execute("UPDATE lots SET remaining_points = 7 WHERE member_id = $1", member)
    finally:
        await db.close()

    result = await alliance("verify")

    assert result.exit_code == 1
    assert "BREAK lot_remaining_equals_postings" in result.output
    assert member in result.output


async def test_expire_writes_off_lapsed_lots_and_reports_breakage(alliance, fresh_database_url):
    db, ledger = await _ledger_with_settings(
        fresh_database_url, FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    )
    try:
        tea = await make_merchant(db)
        member = await make_member(ledger)
        await issue(ledger, tea, member, 120, expires_at=datetime(2026, 2, 1, tzinfo=UTC))
    finally:
        await db.close()

    result = await alliance("expire")

    assert result.exit_code == 0, result.output
    assert "Expired 1 lots (120 points) of 1 members" in result.output
    assert tea in result.output
    assert (await alliance("verify")).exit_code == 0
    second = await alliance("expire")
    assert "Expired 0 lots" in second.output


async def test_demo_keeps_settings_an_operator_already_set(alliance, fresh_database_url, tmp_path):
    db, _ = await _ledger_with_settings(
        fresh_database_url, FixedClock(datetime(2026, 6, 1, tzinfo=UTC))
    )
    await db.close()

    result = await alliance("demo", "--data-dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    shown = await alliance("settings", "show")
    # The operator's 365-day points lifetime stands; the demo's own would be 180 days.
    assert "365" in shown.output
    assert "180" not in shown.output
    assert (await alliance("verify")).exit_code == 0
