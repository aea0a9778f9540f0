"""The webhook outbox: events written in the transaction of what they report, and their bodies.

An event is a row of `webhook_deliveries` for one merchant. It is written by the same
transaction that makes what it reports true (the settlement run writes `statement.published` for
its statements), so it commits or rolls back with it: a run that rolls back sends nothing, and a
committed run cannot lose an event to a crash between commit and send. The deliverer
(`settlement.webhooks.delivery`) reads it from there.

The body is rendered when an event is sent, from the rows it names: a statement is immutable,
so every delivery of one event carries the same statement, as GET /v1/statements/{id} shows it.

    {"event_id": "evt_…", "type": "statement.published", "created_at": "2026-06-01T16:05:00Z",
     "data": {"statement": { …the statement… }}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
from asyncpg import Record

from exchange.views import rfc3339
from settlement import repository
from settlement.views import statement_view

STATEMENT_PUBLISHED: Final = "statement.published"
"""A settlement run committed a statement for the merchant."""

EVENT_TYPES: Final = (STATEMENT_PUBLISHED,)
STATUSES: Final = ("pending", "delivered", "failed")


class EventGone(Exception):
    """The rows an event names are not there (cannot happen while statements are append-only)."""


async def enqueue_statements_published(conn: asyncpg.Connection, run_id: str, now: datetime) -> int:
    """One `statement.published` per statement of the run whose merchant has a webhook URL, in
    the caller's transaction (the run's). Returns how many were enqueued.

    Event ids are random (`evt_` and 32 hex digits), made by the database so that this stays one
    set-based statement whatever the number of merchants.
    """
    status: str = await conn.execute(
        """INSERT INTO webhook_deliveries
               (event_id, event_type, merchant_id, statement_id, created_at, next_attempt_at)
           SELECT 'evt_' || replace(gen_random_uuid()::text, '-', ''), $2, s.merchant_id,
                  s.statement_id, $3, $3
           FROM statements s JOIN merchants m USING (merchant_id)
           WHERE s.run_id = $1 AND m.webhook_url IS NOT NULL
           ORDER BY s.merchant_id""",
        run_id,
        STATEMENT_PUBLISHED,
        now,
    )
    return int(status.rsplit(" ", 1)[1])


async def render(conn: asyncpg.Connection, event: Record) -> bytes:
    """The body of `event` (a `webhook_deliveries` row): compact JSON, UTF-8."""
    if event["event_type"] != STATEMENT_PUBLISHED:
        raise EventGone(f"no renderer for event type {event['event_type']!r}")
    row = await repository.statement_of_merchant(conn, event["merchant_id"], event["statement_id"])
    if row is None:
        raise EventGone(f"statement {event['statement_id']} is not there")
    lines = await repository.lines_of(conn, [event["statement_id"]])
    payload: dict[str, Any] = {
        "event_id": event["event_id"],
        "type": event["event_type"],
        "created_at": rfc3339(event["created_at"]),
        "data": {"statement": statement_view(row, lines[event["statement_id"]])},
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A webhook as `alliance webhooks list` shows it."""

    event_id: str
    event_type: str
    merchant_id: str
    statement_id: str | None
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None


async def recent(
    conn: asyncpg.Connection,
    *,
    limit: int,
    status: str | None = None,
    merchant_id: str | None = None,
) -> list[DeliveryRow]:
    """The newest events first, optionally of one status or one merchant."""
    rows = await conn.fetch(
        """SELECT event_id, event_type, merchant_id, statement_id, created_at, status, attempts,
                  next_attempt_at, last_attempt_at, last_status_code, last_error, finished_at
           FROM webhook_deliveries
           WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR merchant_id = $2)
           ORDER BY created_at DESC, event_id DESC
           LIMIT $3""",
        status,
        merchant_id,
        limit,
    )
    return [DeliveryRow(**dict(row)) for row in rows]


async def attempts_of(conn: asyncpg.Connection, event_id: str) -> list[Record]:
    """Every attempt at one event, first first."""
    rows: list[Record] = await conn.fetch(
        """SELECT attempt, started_at, duration_ms, url, status_code, error, response_excerpt
           FROM webhook_attempts WHERE event_id = $1 ORDER BY attempt""",
        event_id,
    )
    return rows
