"""The alliance admin console: admin users, server-side sessions, the hash-chained audit log,
two-operator adjustment proposals, and read-side support for console pages on a large ledger.

Nothing here writes the ledger: an approved adjustment is posted through exchange.service.Ledger
as an ordinary issuance or reversal (see docs/decisions/0020-admin-console.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from migrations.sql import run_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE admin_users (
    user_id         text PRIMARY KEY,
    username        text NOT NULL CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,62}$'),
    password_hash   text NOT NULL,
    role            text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    totp_secret     text,
    totp_last_step  bigint,
    failed_logins   integer NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until    timestamptz,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL,
    last_login_at   timestamptz
);
CREATE UNIQUE INDEX admin_users_username ON admin_users (lower(username));
COMMENT ON COLUMN admin_users.password_hash IS 'Argon2id (PHC string); never the password';
COMMENT ON COLUMN admin_users.totp_last_step IS 'last accepted TOTP time step: a code is accepted once';

-- A session is found by the SHA-256 of its cookie token, so a copy of this table opens nothing.
-- stage 'password': the password was right and a TOTP code is still owed; 'full': signed in.
CREATE TABLE admin_sessions (
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id      text NOT NULL REFERENCES admin_users ON DELETE CASCADE,
    stage        text NOT NULL CHECK (stage IN ('password', 'full')),
    csrf_token   text NOT NULL CHECK (length(csrf_token) >= 32),
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX admin_sessions_user ON admin_sessions (user_id);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);

-- Every admin action, append-only and hash-chained:
-- entry_hash = sha256(prev_hash || canonical JSON of (seq, at, actor, action, target, details)).
-- seq is contiguous from 1 (assigned under an advisory lock), so a removed row breaks the chain.
CREATE TABLE audit_log (
    seq        bigint PRIMARY KEY CHECK (seq >= 1),
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text,
    details    jsonb NOT NULL,
    prev_hash  bytea NOT NULL CHECK (length(prev_hash) = 32),
    entry_hash bytea NOT NULL UNIQUE CHECK (length(entry_hash) = 32)
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq DESC);
CREATE INDEX audit_log_by_target ON audit_log (target, seq DESC) WHERE target IS NOT NULL;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();

-- A manual adjustment: one operator proposes, a different one approves, and only then is it
-- posted through the ledger as an ordinary transaction in the name of `merchant_id`:
-- 'credit' = an issuance (a goodwill credit the merchant funds), 'reversal' = a (partial)
-- reversal of `transaction_id` (a correction).
CREATE TABLE adjustments (
    adjustment_id         text PRIMARY KEY,
    kind                  text NOT NULL CHECK (kind IN ('credit', 'reversal')),
    merchant_id           text NOT NULL REFERENCES merchants,
    member_id             text NOT NULL REFERENCES members,
    transaction_id        text,
    points                bigint NOT NULL CHECK (points > 0),
    expires_at            timestamptz,
    reason                text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status                text NOT NULL CHECK (status IN ('pending', 'posted', 'rejected')),
    proposed_by           text NOT NULL REFERENCES admin_users,
    proposed_at           timestamptz NOT NULL,
    decided_by            text REFERENCES admin_users,
    decided_at            timestamptz,
    posted_transaction_id text,
    CHECK ((kind = 'reversal') = (transaction_id IS NOT NULL)),
    CHECK (kind = 'credit' OR expires_at IS NULL),
    CHECK ((status = 'pending') = (decided_by IS NULL)),
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK ((status = 'posted') = (posted_transaction_id IS NOT NULL)),
    -- The four-eyes rule, enforced by the database whatever the code does.
    CHECK (decided_by IS NULL OR decided_by <> proposed_by)
);
CREATE INDEX adjustments_pending ON adjustments (proposed_at DESC) WHERE status = 'pending';
CREATE INDEX adjustments_by_time ON adjustments (proposed_at DESC, adjustment_id DESC);

-- The ledger explorer pages through all transactions newest first (keyset on this index), and
-- the dashboard reads a day's transactions by time.
CREATE INDEX transactions_by_time ON transactions (created_at DESC, transaction_id DESC);

-- Dashboard totals per business day, cached once a day is closed (no transaction can still
-- commit into it). A cache, derivable from the ledger at any time: safe to truncate.
-- metric: 'issued' | 'redeemed' (points by merchant), 'breakage' (points by issuer),
-- 'flow' (obligation gross value, merchant = issuer/debtor, counterparty = acceptor/creditor).
CREATE TABLE console_daily_totals (
    timezone        text NOT NULL,
    day             date NOT NULL,
    metric          text NOT NULL CHECK (metric IN ('issued', 'redeemed', 'breakage', 'flow')),
    merchant_id     text NOT NULL,
    counterparty_id text NOT NULL DEFAULT '',
    amount          bigint NOT NULL,
    PRIMARY KEY (timezone, day, metric, merchant_id, counterparty_id)
);
CREATE TABLE console_closed_days (
    timezone text NOT NULL,
    day      date NOT NULL,
    PRIMARY KEY (timezone, day)
);
"""

DOWNGRADE = r"""
DROP TABLE console_closed_days, console_daily_totals, adjustments, audit_log, admin_sessions,
    admin_users;
DROP INDEX transactions_by_time;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
