"""`alliance webhooks deliver` and `alliance webhooks list`, as an operator runs them."""

from __future__ import annotations

import time

from settlement.webhooks import limits
from tests.webhooks.test_delivery import events, settle_day_one


async def test_deliver_prints_each_attempt_and_exits_1_when_one_is_given_up(
    alliance, alliance_db, alliance_ledger, day_clock, receiver
):
    merchants, _ = await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=2)
    failing = merchants[0].merchant_id
    receiver.now = time.time  # the command signs with the system clock
    receiver.answer = lambda event_id, nth: 500 if event_id == failing_event else 204
    [failing_event] = [
        e["event_id"] for e in await events(alliance_db) if e["merchant_id"] == failing
    ]

    first = await alliance("webhooks", "deliver")

    assert first.exit_code == 0, first.output
    assert "1 delivered, 1 to retry, 0 given up." in first.output
    assert "HTTP 500" in first.output
    assert "HTTP 204" in first.output
    assert receiver.refused == []

    nothing = await alliance("webhooks", "deliver")
    assert nothing.exit_code == 0, nothing.output
    assert "Nothing to deliver" in nothing.output

    async with alliance_db.transaction() as conn:  # its last attempt, due now
        await conn.execute(
            """UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = '-infinity'
               WHERE event_id = $1""",
            failing_event,
            limits.MAX_ATTEMPTS - 1,
        )
    last = await alliance("webhooks", "deliver")

    assert last.exit_code == 1
    assert "0 delivered, 0 to retry, 1 given up." in last.output
    assert "will not be sent again" in last.output

    listed = await alliance("webhooks", "list")
    assert listed.exit_code == 0, listed.output
    assert failing_event in listed.output
    assert "delivered" in listed.output
    assert "failed" in listed.output
    only_failed = await alliance("webhooks", "list", "--status", "failed")
    assert failing_event in only_failed.output
    assert "delivered" not in only_failed.output
    refused = await alliance("webhooks", "list", "--status", "lost")
    assert refused.exit_code != 0
