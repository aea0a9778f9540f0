"""Webhook retries (ADR 0022, "Retry"): an operator puts a failed event back to pending with a
fresh budget of attempts, keeping its history.

`attempts` keeps counting every attempt ever made (it numbers the rows of `webhook_attempts`,
whose key is `(event_id, attempt)`, and guards a deliverer's record against a newer attempt), so
it is never reset. `attempts_at_retry` is what `attempts` was when the event was last put back:
the deliverer gives up once `attempts - attempts_at_retry` reaches
settlement.webhooks.limits.MAX_ATTEMPTS, and its backoff starts again from the first wait. It is
0 for an event never retried, so existing rows keep their budget. `retries` and `retried_at`
say how often and when the event was last put back.

`webhook_deliveries_failed` serves `alliance webhooks retry --failed` and
`alliance webhooks list --status failed`, which read only failed events, newest first.

Downgrading forgets the retries: a retried event still pending keeps its attempts, so the
deliverer before this revision gives it up after its next attempt.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from migrations.sql import run_script

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE webhook_deliveries
    ADD COLUMN attempts_at_retry integer NOT NULL DEFAULT 0,
    ADD COLUMN retries           integer NOT NULL DEFAULT 0,
    ADD COLUMN retried_at        timestamptz,
    ADD CONSTRAINT webhook_deliveries_retry_base
        CHECK (attempts_at_retry >= 0 AND attempts_at_retry <= attempts),
    ADD CONSTRAINT webhook_deliveries_retried
        CHECK (retries >= 0 AND (retries = 0) = (retried_at IS NULL));
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (created_at DESC, event_id DESC)
    WHERE status = 'failed';
"""

DOWNGRADE = r"""
DROP INDEX webhook_deliveries_failed;
ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_retried,
    DROP CONSTRAINT webhook_deliveries_retry_base,
    DROP COLUMN retried_at,
    DROP COLUMN retries,
    DROP COLUMN attempts_at_retry;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
