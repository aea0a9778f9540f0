"""Console: settlement runs started from the browser run in the background (console/jobs.py).

A run over a day of a large alliance takes minutes, longer than a browser (or a proxy) waits
for one request; so the console starts it as a job and its page follows the job's progress.
`settlement_jobs` is that progress, shared by every worker: the phase the run is in and how far,
a heartbeat the job writes every second while it lives, and how it ended. At most one job is
unfinished at a time (`settlement_jobs_one_unfinished`); a job whose heartbeat stopped (its
worker died: the run's own transaction rolled back with it) is closed as interrupted by the
next start. Times here are the database's clock, not the alliance clock: they measure the job.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from migrations.sql import run_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE settlement_jobs (
    job_id       text PRIMARY KEY,
    started_by   text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    cutoff       timestamptz,
    phase        text,
    done         bigint CHECK (done >= 0),
    total        bigint CHECK (total >= 0),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    outcome      text CHECK (outcome IN ('settled', 'refused', 'failed', 'interrupted')),
    runs         text[] NOT NULL DEFAULT '{}',
    detail       text,
    CHECK ((finished_at IS NULL) = (outcome IS NULL))
);
CREATE UNIQUE INDEX settlement_jobs_one_unfinished ON settlement_jobs ((true))
    WHERE finished_at IS NULL;
CREATE INDEX settlement_jobs_by_start ON settlement_jobs (started_at DESC);
"""

DOWNGRADE = r"""
DROP TABLE settlement_jobs;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
