"""Settlement: runs, statements and their lines, merchants' bank accounts, and the column that
lets a run claim exactly the rows committed before it read.

`xact` is the id of the database transaction that wrote a ledger row. A settlement run records
its snapshot; a row belongs to the first run whose cut-off is after the row's `created_at` and
whose snapshot sees the row's `xact` (docs/settlement.md, ADR 0008). No row is ever updated to
mark it settled: the claim is a predicate, so the history stays append-only and any run's claim
can be recomputed by `alliance verify`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from migrations.sql import run_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE transactions ADD COLUMN xact xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE obligations ADD COLUMN xact xid8 NOT NULL DEFAULT pg_current_xact_id();
COMMENT ON COLUMN transactions.xact IS 'the database transaction that wrote the row (settlement claims)';
COMMENT ON COLUMN obligations.xact IS 'the database transaction that wrote the row (settlement claims)';
-- A run reads what is new since the previous run: rows created after its cut-off, or written
-- by a transaction the previous snapshot could not see yet.
CREATE INDEX transactions_by_created ON transactions (created_at);
CREATE INDEX transactions_by_xact ON transactions (xact);
CREATE INDEX obligations_by_created ON obligations (created_at);
CREATE INDEX obligations_by_xact ON obligations (xact);

CREATE TABLE settlement_runs (
    run_id          text PRIMARY KEY,
    period_date     date NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('daily', 'adhoc')),
    period_start    timestamptz,
    period_end      timestamptz NOT NULL UNIQUE,
    snapshot        pg_snapshot NOT NULL,
    snapshot_xmin   xid8 NOT NULL,
    currency        char(3) NOT NULL,
    minor_units     smallint NOT NULL,
    obligations     bigint NOT NULL CHECK (obligations >= 0),
    transactions    bigint NOT NULL CHECK (transactions >= 0),
    gross_total     bigint NOT NULL,
    fee_total       bigint NOT NULL,
    fee_residue     numeric NOT NULL,
    merkle_root     bytea NOT NULL CHECK (length(merkle_root) = 32),
    alliance_root   bytea NOT NULL CHECK (length(alliance_root) = 32),
    alliance_transactions bigint NOT NULL CHECK (alliance_transactions >= 0),
    root_signature  bytea NOT NULL CHECK (length(root_signature) = 64),
    signing_key_id  text NOT NULL REFERENCES exchange_keys,
    created_at      timestamptz NOT NULL,
    CHECK (period_start IS NULL OR period_start < period_end)
);
CREATE INDEX settlement_runs_by_date ON settlement_runs (period_date);
COMMENT ON COLUMN settlement_runs.fee_residue IS
    'fees charged (each rounded half-to-even per obligation) minus the exact fee rate x gross: the alliance rounding account';

CREATE TABLE statements (
    statement_id     text PRIMARY KEY,
    run_id           text NOT NULL REFERENCES settlement_runs,
    merchant_id      text NOT NULL REFERENCES merchants,
    issued_points    bigint NOT NULL,
    redeemed_points  bigint NOT NULL,
    reversed_points  bigint NOT NULL,
    receivable       bigint NOT NULL,
    payable          bigint NOT NULL,
    fees             bigint NOT NULL,
    net              bigint NOT NULL,
    transactions     bigint NOT NULL,
    merchant_root    bytea NOT NULL CHECK (length(merchant_root) = 32),
    UNIQUE (run_id, merchant_id),
    CHECK (net = receivable - payable - fees)
);
CREATE INDEX statements_by_merchant ON statements (merchant_id, run_id);

CREATE TABLE statement_lines (
    statement_id     text NOT NULL REFERENCES statements,
    counterparty_id  text NOT NULL REFERENCES merchants,
    accepted_points  bigint NOT NULL,
    redeemed_elsewhere_points bigint NOT NULL,
    receivable       bigint NOT NULL,
    payable          bigint NOT NULL,
    fees             bigint NOT NULL,
    net              bigint NOT NULL,
    obligations      bigint NOT NULL,
    PRIMARY KEY (statement_id, counterparty_id),
    CHECK (net = receivable - payable - fees)
);

CREATE TRIGGER settlement_runs_append_only BEFORE UPDATE OR DELETE ON settlement_runs
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER statements_append_only BEFORE UPDATE OR DELETE ON statements
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER statement_lines_append_only BEFORE UPDATE OR DELETE ON statement_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();

CREATE TABLE merchant_bank_accounts (
    merchant_id   text PRIMARY KEY REFERENCES merchants,
    account_name  text NOT NULL,
    iban          text NOT NULL,
    bic           text,
    updated_at    timestamptz NOT NULL
);
"""

DOWNGRADE = r"""
DROP TABLE merchant_bank_accounts, statement_lines, statements, settlement_runs;
ALTER TABLE obligations DROP COLUMN xact;
ALTER TABLE transactions DROP COLUMN xact;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
