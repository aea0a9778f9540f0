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

An operator can put a failed event back (`requeue_failed`): pending, due at once, with a fresh
budget of `limits.MAX_ATTEMPTS` attempts counted from `attempts_at_retry`; `attempts` and the
attempts' rows are kept, so the next attempt continues their numbering.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
from asyncpg import Record

from exchange.views import rfc3339
from settlement import repository
from settlement.views import statement_view
from settlement.webhooks import limits

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


_ROW_COLUMNS: Final = """event_id, event_type, merchant_id, statement_id, created_at, status,
    attempts, next_attempt_at, last_attempt_at, last_status_code, last_error, finished_at,
    attempts_at_retry, retries, retried_at"""


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A webhook as `alliance webhooks list` and `show` show it."""

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
    attempts_at_retry: int
    """`attempts` when an operator last put the event back (0 if never): the budget counts from
    here."""
    retries: int
    retried_at: datetime | None

    @property
    def last_attempt(self) -> int:
        """The number of the attempt after which the event is given up if none succeeded."""
        return self.attempts_at_retry + limits.MAX_ATTEMPTS


async def recent(
    conn: asyncpg.Connection,
    *,
    limit: int,
    status: str | None = None,
    merchant_id: str | None = None,
) -> list[DeliveryRow]:
    """The newest events first, optionally of one status or one merchant."""
    rows = await conn.fetch(
        f"""SELECT {_ROW_COLUMNS}
           FROM webhook_deliveries
           WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR merchant_id = $2)
           ORDER BY created_at DESC, event_id DESC
           LIMIT $3""",
        status,
        merchant_id,
        limit,
    )
    return [DeliveryRow(**dict(row)) for row in rows]


async def find(conn: asyncpg.Connection, event_id: str) -> DeliveryRow | None:
    """One event, or None if there is no event with that id."""
    row = await conn.fetchrow(
        f"SELECT {_ROW_COLUMNS} FROM webhook_deliveries WHERE event_id = $1", event_id
    )
    return None if row is None else DeliveryRow(**dict(row))


@dataclass(frozen=True, slots=True)
class Requeued:
    """What `requeue_failed` did. When any named id is `unknown`, it changed nothing."""

    requeued: list[DeliveryRow]
    """Failed events now pending, due at once, with a fresh budget (as they are now)."""
    refused: list[DeliveryRow]
    """Named events that were not failed (pending or delivered): left as they are."""
    unknown: list[str]
    """Named ids that are no event."""


async def requeue_failed(
    conn: asyncpg.Connection,
    *,
    now: datetime,
    event_ids: Sequence[str] | None = None,
    merchant_id: str | None = None,
) -> Requeued:
    """Put failed events back to `pending`, due at `now`, with a fresh budget of
    `limits.MAX_ATTEMPTS` attempts: the named ones (`event_ids`), or else every failed one
    (of `merchant_id` when given). Call it in a transaction; an operator's audit entry belongs in
    the same one.

    Only a row that is `failed` when the UPDATE reaches it changes (`WHERE status = 'failed'`,
    re-checked after any concurrent change to the row), so a pending event, including one a
    deliverer has claimed, is never sent a second time at once, and of two operators requeueing
    one event only one does. `attempts` is not reset: it numbers `webhook_attempts` and guards a
    deliverer's record, so the next attempt is `attempts + 1` and the budget counts from
    `attempts_at_retry`.
    """
    named = list(dict.fromkeys(event_ids)) if event_ids is not None else None
    if named is not None:
        known = {
            row["event_id"]
            for row in await conn.fetch(
                "SELECT event_id FROM webhook_deliveries WHERE event_id = ANY($1::text[])", named
            )
        }
        unknown = [event_id for event_id in named if event_id not in known]
        if unknown:
            return Requeued(requeued=[], refused=[], unknown=unknown)
    rows = await conn.fetch(
        f"""UPDATE webhook_deliveries
           SET status = 'pending', finished_at = NULL, next_attempt_at = $1,
               attempts_at_retry = attempts, retries = retries + 1, retried_at = $1
           WHERE status = 'failed'
             AND ($2::text[] IS NULL OR event_id = ANY($2::text[]))
             AND ($3::text IS NULL OR merchant_id = $3)
           RETURNING {_ROW_COLUMNS}""",
        now,
        named,
        merchant_id,
    )
    requeued = sorted(
        (DeliveryRow(**dict(row)) for row in rows), key=lambda r: (r.created_at, r.event_id)
    )
    refused: list[DeliveryRow] = []
    if named is not None:
        done = {row.event_id for row in requeued}
        for event_id in named:
            if event_id not in done and (row := await find(conn, event_id)) is not None:
                refused.append(row)
    return Requeued(requeued=requeued, refused=refused, unknown=[])


async def attempts_of(conn: asyncpg.Connection, event_id: str) -> list[Record]:
    """Every attempt at one event, first first."""
    rows: list[Record] = await conn.fetch(
        """SELECT attempt, started_at, duration_ms, url, status_code, error, response_excerpt
           FROM webhook_attempts WHERE event_id = $1 ORDER BY attempt""",
        event_id,
    )
    return rows
