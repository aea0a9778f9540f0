"""Webhooks end to end: a settlement run's `statement.published` events, written in its
transaction, delivered signed to a real HTTP receiver, retried with growing waits, given up after
the named maximum, never sent twice at once."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from core.database import Database
from server.main import create_app
from settlement import scheduler, service
from settlement.runs import ReconciliationFailed
from settlement.webhooks import delivery, limits, outbox
from tests.api.conftest import AUTHORITY, Partner, call, make_partner
from tests.factories import issue, make_member, make_merchant, redeem
from tests.webhooks.conftest import published_keys

DAY_ONE_CLOSES = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


async def set_webhook(db: Database, merchant_id: str, url: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE merchants SET webhook_url = $2 WHERE merchant_id = $1", merchant_id, url
        )


async def events(db: Database) -> list[dict[str, object]]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM webhook_deliveries ORDER BY merchant_id")
    return [dict(row) for row in rows]


async def attempts(db: Database, event_id: str) -> list[dict[str, object]]:
    async with db.connection() as conn:
        return [dict(row) for row in await outbox.attempts_of(conn, event_id)]


async def settle_day_one(db, ledger, clock, receiver, *, hooked: int, quiet: int = 0):
    """`hooked` merchants with a webhook URL and `quiet` ones without, each with a statement."""
    merchants = [await make_partner(db) for _ in range(hooked + quiet)]
    ann = await make_member(ledger)
    for merchant in merchants:
        await issue(ledger, merchant.merchant_id, ann, 100)
    await redeem(ledger, merchants[-1].merchant_id, ann, 60 * len(merchants))
    for merchant in merchants[:hooked]:
        await set_webhook(db, merchant.merchant_id, receiver.url(merchant.merchant_id))
    clock.set(DAY_ONE_CLOSES + timedelta(minutes=5))
    [result] = await service.settle_due(db, clock)
    receiver.keys = await published_keys(db, clock)
    receiver.now = lambda: clock.now().timestamp()
    return merchants, result


async def test_a_run_sends_one_verified_statement_published_per_statement_with_a_url(
    alliance_db, alliance_ledger, day_clock, receiver
):
    merchants, result = await settle_day_one(
        alliance_db, alliance_ledger, day_clock, receiver, hooked=3, quiet=2
    )
    hooked = {m.merchant_id: m for m in merchants[:3]}
    async with alliance_db.connection() as conn:
        statements = {
            row["merchant_id"]: row["statement_id"]
            for row in await conn.fetch(
                "SELECT merchant_id, statement_id FROM statements WHERE run_id = $1",
                result.run.run_id,
            )
        }
    assert set(statements) == {m.merchant_id for m in merchants}  # the quiet ones have one too
    queued = await events(alliance_db)
    assert {e["merchant_id"]: e["statement_id"] for e in queued} == {
        merchant_id: statements[merchant_id] for merchant_id in hooked
    }
    assert {e["event_type"] for e in queued} == {"statement.published"}
    assert {e["status"] for e in queued} == {"pending"}

    report = await scheduler.deliver_webhooks_job(alliance_db, day_clock)

    assert (report.delivered, report.retrying, report.failed) == (3, 0, 0)
    assert receiver.refused == []
    assert sorted(d.event.idempotency_key for d in receiver.received) == sorted(
        e["event_id"] for e in queued
    )
    app = create_app(database=alliance_db, clock=day_clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as api:
            for received in receiver.received:
                merchant_id = received.url.split("/hooks/")[1].split("?")[0]
                body = received.event.data
                assert body["event_id"] == received.event.idempotency_key
                assert body["type"] == "statement.published"
                assert body["created_at"] == "2026-06-01T16:05:00.000000Z"
                statement = body["data"]["statement"]
                assert statement["merchant_id"] == merchant_id
                assert statement["statement_id"] == statements[merchant_id]
                partner: Partner = hooked[merchant_id]
                path = f"/v1/statements/{statement['statement_id']}"
                shown = await call(api, partner, day_clock, "GET", path)
                assert shown.status_code == 200, shown.text
                assert statement == shown.json()
                assert received.headers["Content-Type"] == "application/json"
                assert "idempotency-key" in received.headers["Signature-Input"]
    assert {e["status"] for e in await events(alliance_db)} == {"delivered"}

    # Nothing is sent twice, and settling the period again (returned as settled) adds nothing.
    assert (await delivery.deliver_due(alliance_db, day_clock)).attempts == []
    again = await service.settle_date(alliance_db, day_clock, result.run.period_date)
    assert again.replayed
    assert len(await events(alliance_db)) == 3
    assert len(receiver.received) == 3


async def test_a_failed_attempt_is_retried_with_the_same_idempotency_key(
    alliance_db, alliance_ledger, day_clock, receiver
):
    receiver.answer = lambda event_id, nth: 500 if nth == 1 else 200
    await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=1)
    [event] = await events(alliance_db)

    first = await delivery.deliver_due(alliance_db, day_clock, rng=random.Random(1))
    [attempt] = first.attempts
    assert (attempt.outcome, attempt.status_code) == ("retrying", 500)
    assert attempt.next_attempt_at is not None
    wait = (attempt.next_attempt_at - day_clock.now()).total_seconds()
    assert limits.BACKOFF_BASE_S <= wait < limits.BACKOFF_BASE_S * (1 + limits.BACKOFF_JITTER)
    assert (await delivery.deliver_due(alliance_db, day_clock)).attempts == []  # not due yet

    day_clock.set(attempt.next_attempt_at)
    second = await delivery.deliver_due(alliance_db, day_clock)

    assert [a.outcome for a in second.attempts] == ["delivered"]
    sent = receiver.of(event["event_id"])
    assert [d.status for d in sent] == [500, 200]
    assert sent[0].event.body == sent[1].event.body
    assert sent[0].event.nonce != sent[1].event.nonce
    [stored] = await events(alliance_db)
    assert (stored["status"], stored["attempts"], stored["last_status_code"]) == (
        "delivered",
        2,
        200,
    )
    assert [a["status_code"] for a in await attempts(alliance_db, event["event_id"])] == [500, 200]


async def test_a_receiver_always_failing_is_given_up_after_the_maximum_attempts(
    alliance_db, alliance_ledger, day_clock, receiver
):
    receiver.answer = lambda event_id, nth: 503
    receiver.body = "x" * 5000
    await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=1)
    [event] = await events(alliance_db)
    rng = random.Random(7)
    waits: list[float] = []
    outcomes: list[str] = []

    for _ in range(limits.MAX_ATTEMPTS):
        [attempt] = (await delivery.deliver_due(alliance_db, day_clock, rng=rng)).attempts
        outcomes.append(attempt.outcome)
        if attempt.next_attempt_at is not None:
            waits.append((attempt.next_attempt_at - day_clock.now()).total_seconds())
            day_clock.set(attempt.next_attempt_at)

    assert outcomes == ["retrying"] * (limits.MAX_ATTEMPTS - 1) + ["failed"]
    assert all(later >= earlier for earlier, later in zip(waits, waits[1:], strict=False))
    uncapped = [w for w in waits if w < limits.BACKOFF_MAX_S]
    assert all(later > earlier for earlier, later in zip(uncapped, uncapped[1:], strict=False))
    assert waits[-1] == limits.BACKOFF_MAX_S
    assert len(receiver.of(event["event_id"])) == limits.MAX_ATTEMPTS
    [stored] = await events(alliance_db)
    assert (stored["status"], stored["attempts"]) == ("failed", limits.MAX_ATTEMPTS)
    assert stored["finished_at"] is not None
    tried = await attempts(alliance_db, event["event_id"])
    assert [a["status_code"] for a in tried] == [503] * limits.MAX_ATTEMPTS
    assert {len(a["response_excerpt"]) for a in tried} == {limits.RESPONSE_EXCERPT_CHARS}
    day_clock.advance(timedelta(days=30))
    assert (await delivery.deliver_due(alliance_db, day_clock)).attempts == []


async def test_a_run_that_rolls_back_enqueues_nothing(alliance_db, alliance_ledger, day_clock):
    tea, books = await make_merchant(alliance_db), await make_merchant(alliance_db)
    ann = await make_member(alliance_ledger)
    await issue(alliance_ledger, tea, ann, 100)
    await redeem(alliance_ledger, books, ann, 60)
    for merchant_id in (tea, books):
        await set_webhook(alliance_db, merchant_id, "https://shop.example/hooks")
    async with alliance_db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")  # past the triggers
        await conn.execute(
            "UPDATE member_accounts SET posted_points = posted_points + 1 WHERE member_id = $1",
            ann,
        )
    day_clock.set(DAY_ONE_CLOSES + timedelta(minutes=5))

    with pytest.raises(ReconciliationFailed):
        await service.settle_due(alliance_db, day_clock)

    assert await events(alliance_db) == []


async def test_racing_deliverers_never_send_one_event_twice(
    alliance_db, alliance_ledger, day_clock, receiver, monkeypatch
):
    monkeypatch.setattr(limits, "CLAIM_BATCH", 2)
    receiver.delay_s = 0.05
    await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=8)

    reports = await asyncio.gather(
        *(delivery.deliver_due(alliance_db, day_clock) for _ in range(4))
    )

    sent = [a.event_id for report in reports for a in report.attempts]
    assert len(sent) == len(set(sent)) == 8
    assert sum(1 for report in reports if report.attempts) > 1  # they did race
    assert receiver.overlaps == 0
    assert sorted(d.event.idempotency_key for d in receiver.received) == sorted(sent)
    assert {e["status"] for e in await events(alliance_db)} == {"delivered"}


async def test_an_unreachable_receiver_is_an_error_kept_with_the_attempt(
    alliance_db, alliance_ledger, day_clock, receiver
):
    await settle_day_one(alliance_db, alliance_ledger, day_clock, receiver, hooked=1)
    [event] = await events(alliance_db)
    await set_webhook(alliance_db, event["merchant_id"], "http://127.0.0.1:9/hooks")

    [attempt] = (await delivery.deliver_due(alliance_db, day_clock)).attempts

    assert attempt.outcome == "retrying"
    assert attempt.status_code is None
    assert attempt.error
    assert "ConnectError" in attempt.error
    [tried] = await attempts(alliance_db, event["event_id"])
    assert tried["url"] == "http://127.0.0.1:9/hooks"
    assert len(tried["error"]) <= limits.ERROR_CHARS


def test_backoff_doubles_with_jitter_up_to_the_cap():
    rng = random.Random(3)
    waits = [delivery.backoff_s(n, rng) for n in range(1, 40)]
    for n, wait in enumerate(waits, start=1):
        base = limits.BACKOFF_BASE_S * 2 ** (n - 1)
        assert min(base, limits.BACKOFF_MAX_S) <= wait <= limits.BACKOFF_MAX_S
        assert wait < base * (1 + limits.BACKOFF_JITTER)
    with pytest.raises(ValueError, match="from 1"):
        delivery.backoff_s(0)
