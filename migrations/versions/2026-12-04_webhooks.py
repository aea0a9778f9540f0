"""Webhooks (ADR 0022): a transactional outbox of events for merchants, and each delivery attempt.

`webhook_deliveries` is the outbox: one row per event for one merchant, written in the same
transaction as what the event reports (a settlement run writes one `statement.published` per
statement of a merchant with a webhook URL), so a run that rolls back sends nothing and a
committed run cannot lose its events. The row's `event_id` is the event's id and the
`Idempotency-Key` of every delivery of it. `next_attempt_at` orders the work: a deliverer claims
due `pending` rows with FOR UPDATE SKIP LOCKED and moves `next_attempt_at` past its lease before
it sends, so no two deliverers send one event at once. `(event_type, statement_id)` is unique: a
statement is published once. Times are the alliance clock's.

`webhook_attempts` keeps what each attempt got: the status code or the error, and at most a short
excerpt of the answer (settlement.webhooks.limits.RESPONSE_EXCERPT_CHARS), never a whole body.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from migrations.sql import run_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE webhook_deliveries (
    event_id         text PRIMARY KEY,
    event_type       text NOT NULL,
    merchant_id      text NOT NULL REFERENCES merchants,
    statement_id     text REFERENCES statements,
    created_at       timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    finished_at      timestamptz,
    CHECK ((status = 'pending') = (finished_at IS NULL)),
    UNIQUE (event_type, statement_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_merchant ON webhook_deliveries (merchant_id, created_at DESC);
CREATE INDEX webhook_deliveries_by_creation ON webhook_deliveries (created_at DESC, event_id DESC);

CREATE TABLE webhook_attempts (
    event_id         text NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt          integer NOT NULL CHECK (attempt >= 1),
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL CHECK (duration_ms >= 0),
    url              text,
    status_code      integer,
    error            text,
    response_excerpt text,
    CHECK (status_code IS NOT NULL OR error IS NOT NULL),
    PRIMARY KEY (event_id, attempt)
);
"""

DOWNGRADE = r"""
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
