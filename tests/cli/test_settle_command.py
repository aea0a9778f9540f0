"""`alliance settle` and `alliance verify` over settlement runs, as an operator runs them."""

from __future__ import annotations

from datetime import UTC, datetime

from core.clock import FixedClock
from core.database import Database
from merchants import service as merchants
from tests.cli.test_ledger_commands import _ledger_with_settings
from tests.factories import CREATED_AT, issue, make_member, make_merchant, redeem


async def _a_day_of_trade(url: str) -> Database:
    db, ledger = await _ledger_with_settings(url, FixedClock(datetime(2026, 6, 1, 2, tzinfo=UTC)))
    tea, books = await make_merchant(db, name="Tea"), await make_merchant(db, name="Books")
    ann = await make_member(ledger)
    await issue(ledger, tea, ann, 1000)
    await redeem(ledger, books, ann, 400)  # Tea owes Books 400 fen, fee 20
    await merchants.set_bank_account(
        db, books, "Books Ltd", "DE89370400440532013000", "COBADEFFXXX", CREATED_AT
    )
    return db


async def test_settle_a_period_prints_the_summary_writes_files_and_verifies(
    alliance, fresh_database_url, tmp_path
):
    db = await _a_day_of_trade(fresh_database_url)
    try:
        settled = await alliance("settle", "--period", "2026-06-01", "--out", str(tmp_path))
        assert settled.exit_code == 0, settled.output
        assert "published" in settled.output
        assert "4.00 CNY" in settled.output  # 400 points at 1 fen
        assert "0.20 CNY" in settled.output
        [folder] = list(tmp_path.iterdir())
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"{folder.name}-pain001.xml", f"{folder.name}-payments.csv"]

        again = await alliance("settle", "--period", "2026-06-01", "--out", str(tmp_path))
        assert again.exit_code == 0
        assert "already settled" in again.output

        verified = await alliance("verify")
        assert verified.exit_code == 0, verified.output
    finally:
        await db.close()


async def test_verify_finds_a_statement_changed_behind_the_runs_back(alliance, fresh_database_url):
    db = await _a_day_of_trade(fresh_database_url)
    try:
        assert (await alliance("settle", "--cutoff", "2026-06-01T08:00:00Z")).exit_code == 0
        async with db.transaction() as conn:
            await conn.execute("ALTER TABLE statements DISABLE TRIGGER statements_append_only")
            await conn.execute("UPDATE statements SET receivable = receivable + 1, net = net + 1")
            await conn.execute("ALTER TABLE statements ENABLE TRIGGER statements_append_only")
        verified = await alliance("verify")
        assert verified.exit_code == 1
        assert "statements_match_claims" in verified.output
        assert "nets_sum_to_zero" in verified.output
    finally:
        await db.close()


async def test_settle_refuses_bad_arguments_and_changes_nothing(alliance, fresh_database_url):
    db = await _a_day_of_trade(fresh_database_url)
    try:
        for args in (
            ("settle", "--period", "June"),
            ("settle", "--cutoff", "2026-06-01T08:00:00"),
            ("settle", "--period", "2026-06-01", "--cutoff", "2026-06-01T08:00:00Z"),
        ):
            result = await alliance(*args)
            assert result.exit_code == 2, (args, result.output)
        future = await alliance("settle", "--cutoff", "2999-01-01T00:00:00Z")
        assert future.exit_code == 1
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == 0
    finally:
        await db.close()
