"""Idempotency records of refusals (ADR 0013): a key whose request a ledger rule refused replays
that refusal, as a key whose request succeeded replays its result.

`refused` marks such a record: its `response` is then the refusal (`code`, `detail` and the
refusal's extra members, as JSON), which the API renders as the same problem again. Existing
records are results (the default). Downgrading deletes the refusal records first: code before
this revision would replay one as if it were a result.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from migrations.sql import run_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE idempotency_records ADD COLUMN refused boolean NOT NULL DEFAULT false;
"""

DOWNGRADE = r"""
DELETE FROM idempotency_records WHERE refused;
ALTER TABLE idempotency_records DROP COLUMN refused;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
