"""`alliance webhooks retry` and `alliance webhooks show`: a failed event put back by an operator
is sent again with a fresh budget of attempts, its history kept and its attempts numbered on;
nothing but failed events changes, however the command races a deliverer or another operator."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import asyncpg
from alembic import command

from cli import webhooks as webhooks_cli
from console import audit
from core.clock import FixedClock
from core.database import Database
from core.migrations import alembic_config, upgrade_to_head
from settlement.webhooks import delivery, limits, outbox
from tests.webhooks.test_delivery import attempts, events, set_webhook, settle_day_one


async def exhaust(db: Database, clock: FixedClock) -> list[delivery.Attempt]:
    """Deliver, moving the clock to each next attempt, until nothing is pending any more."""
    made: list[delivery.Attempt] = []
    rng = random.Random(11)
    for _ in range(limits.MAX_ATTEMPTS + 1):
        report = await delivery.deliver_due(db, clock, rng=rng)
        made += report.attempts
        waits = [a.next_attempt_at for a in report.attempts if a.next_attempt_at is not None]
        if not waits:
            break
        clock.set(max(waits))
    return made


async def failed_events(db, ledger, clock, receiver, *, hooked: int = 1):
    """`hooked` merchants whose statement.published failed every attempt, and their events."""
    receiver.answer = lambda event_id, nth: 503
    merchants, _ = await settle_day_one(db, ledger, clock, receiver, hooked=hooked)
    await exhaust(db, clock)
    failed = await events(db)
    assert [e["status"] for e in failed] == ["failed"] * hooked
    assert {e["attempts"] for e in failed} == {limits.MAX_ATTEMPTS}
    return merchants, failed


async def audit_entries(db: Database) -> list[dict[str, object]]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT actor, action, target, details FROM audit_log ORDER BY seq")
    return [dict(row) for row in rows]


def at_clock(monkeypatch, clock: FixedClock) -> None:
    """The commands run on the test's clock (a retried event is due at the command's now)."""
    monkeypatch.setattr(webhooks_cli, "clock", clock)


async def test_a_retried_failed_event_is_delivered_and_its_attempts_number_on(
    alliance, alliance_db, alliance_ledger, day_clock, receiver, monkeypatch
):
    at_clock(monkeypatch, day_clock)
    _, [event] = await failed_events(alliance_db, alliance_ledger, day_clock, receiver)
    event_id = event["event_id"]
    receiver.answer = lambda event_id, nth: 200
    assert (await delivery.deliver_due(alliance_db, day_clock)).attempts == []  # failed stays

    retried = await alliance("webhooks", "retry", event_id)

    assert retried.exit_code == 0, retried.output
    assert "1 requeued" in retried.output
    [stored] = await events(alliance_db)
    assert stored["status"] == "pending"
    assert stored["next_attempt_at"] == day_clock.now()
    assert stored["finished_at"] is None
    assert (stored["attempts"], stored["attempts_at_retry"]) == (limits.MAX_ATTEMPTS,) * 2
    assert (stored["retries"], stored["retried_at"]) == (1, day_clock.now())
    [entry] = await audit_entries(alliance_db)
    assert entry["action"] == "webhook.retry"
    assert entry["target"] == event_id
    assert str(entry["actor"]).startswith("cli")
    assert entry["details"] == {
        "merchant_id": event["merchant_id"],
        "attempts": limits.MAX_ATTEMPTS,
        "retries": 1,
    }
    async with alliance_db.connection() as conn:
        assert (await audit.verify(conn)).ok

    [attempt] = (await delivery.deliver_due(alliance_db, day_clock)).attempts

    assert (attempt.outcome, attempt.attempt) == ("delivered", limits.MAX_ATTEMPTS + 1)
    assert attempt.last_attempt == 2 * limits.MAX_ATTEMPTS
    [stored] = await events(alliance_db)
    assert (stored["status"], stored["attempts"], stored["last_status_code"]) == (
        "delivered",
        limits.MAX_ATTEMPTS + 1,
        200,
    )
    tried = await attempts(alliance_db, event_id)
    assert [a["attempt"] for a in tried] == list(range(1, limits.MAX_ATTEMPTS + 2))
    assert [a["status_code"] for a in tried] == [503] * limits.MAX_ATTEMPTS + [200]
    sent = receiver.of(event_id)
    assert [d.status for d in sent] == [503] * limits.MAX_ATTEMPTS + [200]
    assert sent[-1].event.body == sent[0].event.body  # the same event, the same statement
    assert receiver.refused == []
    assert (await delivery.deliver_due(alliance_db, day_clock)).attempts == []


async def test_retrying_a_delivered_or_pending_event_changes_nothing(
    alliance, alliance_db, alliance_ledger, day_clock, receiver, monkeypatch
):
    at_clock(monkeypatch, day_clock)
    merchants, _ = await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=2)
    by_merchant = {e["merchant_id"]: e["event_id"] for e in await events(alliance_db)}
    pending_id = by_merchant[merchants[0].merchant_id]
    delivered_id = by_merchant[merchants[1].merchant_id]
    receiver.answer = lambda event_id, nth: 500 if event_id == pending_id else 200
    await delivery.deliver_due(alliance_db, day_clock)
    before = await events(alliance_db)
    assert {e["event_id"]: e["status"] for e in before} == {
        pending_id: "pending",
        delivered_id: "delivered",
    }

    refused = await alliance("webhooks", "retry", delivered_id, pending_id)

    assert refused.exit_code == 0, refused.output
    assert f"{delivered_id} is delivered, not failed" in refused.output
    assert f"{pending_id} is pending, not failed" in refused.output
    assert "0 requeued" in refused.output
    assert await events(alliance_db) == before
    assert await audit_entries(alliance_db) == []
    none_failed = await alliance("webhooks", "retry", "--failed")
    assert none_failed.exit_code == 0, none_failed.output
    assert "No failed webhooks: 0 requeued." in none_failed.output
    assert await events(alliance_db) == before


async def test_an_unknown_id_is_an_error_and_requeues_nothing(
    alliance, alliance_db, alliance_ledger, day_clock, receiver, monkeypatch
):
    at_clock(monkeypatch, day_clock)
    _, [event] = await failed_events(alliance_db, alliance_ledger, day_clock, receiver)

    unknown = await alliance("webhooks", "retry", event["event_id"], "evt_nosuchevent")

    assert unknown.exit_code == 1
    assert "there is no webhook event 'evt_nosuchevent'" in unknown.output
    assert "nothing was requeued" in unknown.output
    assert await events(alliance_db) == [event]
    assert await audit_entries(alliance_db) == []

    shown = await alliance("webhooks", "show", "evt_nosuchevent")
    assert shown.exit_code == 1
    assert "there is no webhook event 'evt_nosuchevent'" in shown.output

    for wrong in (
        ("webhooks", "retry"),
        ("webhooks", "retry", event["event_id"], "--failed"),
        ("webhooks", "retry", "--merchant", event["merchant_id"]),
    ):
        refused = await alliance(*wrong)
        assert refused.exit_code == 2, (wrong, refused.output)
    assert await events(alliance_db) == [event]


async def test_failed_of_one_merchant_requeues_only_that_merchants(
    alliance, alliance_db, alliance_ledger, day_clock, receiver, monkeypatch
):
    at_clock(monkeypatch, day_clock)
    merchants, before = await failed_events(
        alliance_db, alliance_ledger, day_clock, receiver, hooked=3
    )
    chosen = merchants[1].merchant_id

    one = await alliance("webhooks", "retry", "--failed", "--merchant", chosen)

    assert one.exit_code == 0, one.output
    assert f"1 requeued of {chosen}" in one.output
    after = {e["event_id"]: e for e in await events(alliance_db)}
    for event in before:
        stored = after[event["event_id"]]
        if event["merchant_id"] == chosen:
            assert (stored["status"], stored["retries"]) == ("pending", 1)
        else:
            assert stored == event
    assert [e["target"] for e in await audit_entries(alliance_db)] == [
        e["event_id"] for e in before if e["merchant_id"] == chosen
    ]

    rest = await alliance("webhooks", "retry", "--failed")

    assert rest.exit_code == 0, rest.output
    assert "2 requeued" in rest.output
    stored = await events(alliance_db)
    assert {e["status"] for e in stored} == {"pending"}
    assert {e["retries"] for e in stored} == {1}  # the chosen one was not requeued twice
    assert len(await audit_entries(alliance_db)) == 3


async def test_a_retried_event_that_keeps_failing_fails_again_after_the_maximum(
    alliance, alliance_db, alliance_ledger, day_clock, receiver, monkeypatch
):
    at_clock(monkeypatch, day_clock)
    _, [event] = await failed_events(alliance_db, alliance_ledger, day_clock, receiver)
    first_finish = event["finished_at"]
    day_clock.advance(timedelta(days=2))
    assert (await alliance("webhooks", "retry", event["event_id"])).exit_code == 0

    again = await exhaust(alliance_db, day_clock)

    assert [a.outcome for a in again] == ["retrying"] * (limits.MAX_ATTEMPTS - 1) + ["failed"]
    assert [a.attempt for a in again] == list(
        range(limits.MAX_ATTEMPTS + 1, 2 * limits.MAX_ATTEMPTS + 1)
    )
    tried = await attempts(alliance_db, event["event_id"])
    assert [a["attempt"] for a in tried] == list(range(1, 2 * limits.MAX_ATTEMPTS + 1))
    after_retry = tried[limits.MAX_ATTEMPTS :]
    first_wait = (after_retry[1]["started_at"] - after_retry[0]["started_at"]).total_seconds()
    # The backoff starts again from the first wait, not from where it was capped.
    assert limits.BACKOFF_BASE_S <= first_wait < limits.BACKOFF_BASE_S * (1 + limits.BACKOFF_JITTER)
    [stored] = await events(alliance_db)
    assert (stored["status"], stored["attempts"]) == ("failed", 2 * limits.MAX_ATTEMPTS)
    assert stored["finished_at"] is not None
    shown = await alliance("webhooks", "show", event["event_id"])
    assert shown.exit_code == 0, shown.output
    assert f"{2 * limits.MAX_ATTEMPTS} (given up)" in shown.output
    assert "1 time(s), last at" in shown.output
    rows = [line for line in shown.output.splitlines() if line.startswith("│")]
    assert len(rows) == 2 * limits.MAX_ATTEMPTS
    assert stored["finished_at"] > first_finish
    assert len(receiver.of(event["event_id"])) == 2 * limits.MAX_ATTEMPTS
    day_clock.advance(timedelta(days=30))
    assert (await delivery.deliver_due(alliance_db, day_clock)).attempts == []

    twice = await alliance("webhooks", "retry", "--failed")
    assert twice.exit_code == 0, twice.output
    [stored] = await events(alliance_db)
    assert (stored["status"], stored["retries"]) == ("pending", 2)
    assert stored["attempts_at_retry"] == 2 * limits.MAX_ATTEMPTS


async def test_show_prints_the_event_and_every_attempt(
    alliance, alliance_db, alliance_ledger, day_clock, receiver
):
    receiver.answer = lambda event_id, nth: 503
    receiver.body = "down for [maintenance]\nuntil 17:00"
    await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=1)
    [event] = await events(alliance_db)
    event_id = event["event_id"]
    [first] = (await delivery.deliver_due(alliance_db, day_clock)).attempts
    assert first.next_attempt_at is not None
    day_clock.set(first.next_attempt_at)
    await set_webhook(alliance_db, event["merchant_id"], "http://127.0.0.1:9/hooks")
    await delivery.deliver_due(alliance_db, day_clock)

    shown = await alliance("webhooks", "show", event_id)

    assert shown.exit_code == 0, shown.output
    output = shown.output
    for fact in (event_id, "statement.published", event["merchant_id"], event["statement_id"]):
        assert str(fact) in output
    assert "pending" in output
    assert f"2 (given up after attempt {limits.MAX_ATTEMPTS})" in output
    assert "never" in output  # not retried
    rows = [line for line in output.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["1", "2"]
    assert "HTTP 503" in rows[0]
    assert receiver.url(event["merchant_id"]) in rows[0]
    assert "down for [maintenance] until 17:00" in rows[0]  # as sent, markup and all
    assert "ConnectError" in rows[1]
    assert "http://127.0.0.1:9/hooks" in rows[1]
    assert "ms" in rows[0]


async def test_show_an_event_with_no_attempt_yet(
    alliance, alliance_db, alliance_ledger, day_clock, receiver
):
    await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=1)
    [event] = await events(alliance_db)

    shown = await alliance("webhooks", "show", event["event_id"])

    assert shown.exit_code == 0, shown.output
    assert "No attempts yet." in shown.output
    assert f"0 (given up after attempt {limits.MAX_ATTEMPTS})" in shown.output


async def test_retries_racing_deliverers_and_each_other_send_nothing_twice(
    alliance_db, alliance_ledger, day_clock, receiver
):
    _, [event] = await failed_events(alliance_db, alliance_ledger, day_clock, receiver)
    event_id = event["event_id"]
    receiver.answer = lambda event_id, nth: 200
    receiver.delay_s = 0.05

    async def requeue() -> outbox.Requeued:
        async with alliance_db.transaction() as conn:
            return await outbox.requeue_failed(conn, now=day_clock.now(), event_ids=[event_id])

    # Two operators at once: the second waits for the first's row lock, then finds it pending.
    async with alliance_db.transaction() as first:
        done = await outbox.requeue_failed(first, now=day_clock.now(), event_ids=[event_id])
        second = asyncio.create_task(requeue())
        await asyncio.sleep(0.2)
        assert not second.done()  # blocked on the row, not deciding on a stale read
    assert [r.event_id for r in done.requeued] == [event_id]
    late = await second
    assert late.requeued == []
    assert [(r.event_id, r.status) for r in late.refused] == [(event_id, "pending")]

    # Deliverers and more retries together: the event is sent once, never twice at once.
    results = await asyncio.gather(
        *(delivery.deliver_due(alliance_db, day_clock) for _ in range(3)),
        requeue(),
        requeue(),
    )

    reports = [r for r in results if isinstance(r, delivery.DeliveryReport)]
    requeues = [r for r in results if isinstance(r, outbox.Requeued)]
    assert sum(len(report.attempts) for report in reports) == 1
    assert all(r.requeued == [] for r in requeues)
    assert receiver.overlaps == 0
    assert [d.status for d in receiver.of(event_id)][-1] == 200
    assert len(receiver.of(event_id)) == limits.MAX_ATTEMPTS + 1
    [stored] = await events(alliance_db)
    assert (stored["status"], stored["attempts"], stored["retries"]) == (
        "delivered",
        limits.MAX_ATTEMPTS + 1,
        1,
    )


async def test_migration_0009_downgrades_and_upgrades_with_events_kept(
    alliance, alliance_db, alliance_ledger, day_clock, receiver, monkeypatch, fresh_database_url
):
    at_clock(monkeypatch, day_clock)
    _, [event] = await failed_events(alliance_db, alliance_ledger, day_clock, receiver)
    assert (await alliance("webhooks", "retry", "--failed")).exit_code == 0
    config = alembic_config(fresh_database_url)

    await asyncio.to_thread(command.downgrade, config, "0008")

    conn = await asyncpg.connect(fresh_database_url)
    try:
        row = await conn.fetchrow(
            "SELECT * FROM webhook_deliveries WHERE event_id = $1", event["event_id"]
        )
        assert row is not None
        assert "attempts_at_retry" not in row
        assert (row["status"], row["attempts"]) == ("pending", limits.MAX_ATTEMPTS)
    finally:
        await conn.close()

    await asyncio.to_thread(upgrade_to_head, fresh_database_url)

    conn = await asyncpg.connect(fresh_database_url)
    try:
        row = await conn.fetchrow(
            """SELECT attempts_at_retry, retries, retried_at FROM webhook_deliveries
               WHERE event_id = $1""",
            event["event_id"],
        )
        assert dict(row) == {"attempts_at_retry": 0, "retries": 0, "retried_at": None}
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'webhook_deliveries_failed'"
        )
        assert "WHERE (status = 'failed'::text)" in index
    finally:
        await conn.close()
