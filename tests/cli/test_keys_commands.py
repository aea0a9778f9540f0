"""`alliance keys rotate`: a new key signs at once; the old one stays published until it retires."""

from __future__ import annotations

from datetime import timedelta

from core.clock import SystemClock
from core.database import Database
from exchange import exchange_keys


async def test_rotation_publishes_both_keys_and_signs_with_the_new_one(
    alliance, fresh_database_url
):
    assert (await alliance("keys", "list")).exit_code == 0
    rotated = await alliance("keys", "rotate", "--overlap-days", "2")
    assert rotated.exit_code == 0, rotated.output
    assert "New signing key" in rotated.output

    db = await Database.connect(fresh_database_url, min_size=1, max_size=1)
    try:
        now = SystemClock().now()
        published = await exchange_keys.published_keys(db, now)
        assert len(published) == 2
        newest, older = published
        assert newest.retires_at is None
        assert older.retires_at is not None
        assert (await exchange_keys.signing_key(db, now)).key_id == newest.key_id
        after_overlap = now + timedelta(days=2, seconds=1)
        assert [key.key_id for key in await exchange_keys.published_keys(db, after_overlap)] == [
            newest.key_id
        ]
    finally:
        await db.close()
