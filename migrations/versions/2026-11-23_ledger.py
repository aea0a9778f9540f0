"""The points ledger: alliance settings, merchants and keys, members, lots, transactions,
postings, holds, obligations, idempotency records, exposure slots.

Foreign keys to transactions are deferred: a unit of work writes lots, postings and obligations
first and the transaction row last, when its balance_after is known; the database checks at commit.

Member-side tables carry member_id first in every primary and unique key, so that they can be
distributed by member (Citus) later without a rewrite; see docs/ledger.md.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from migrations.sql import run_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE alliance_settings (
    setting_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    effective_from    timestamptz NOT NULL UNIQUE,
    currency          char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    minor_units       smallint NOT NULL DEFAULT 2 CHECK (minor_units BETWEEN 0 AND 4),
    timezone          text NOT NULL,
    cutoff            time NOT NULL,
    point_value       numeric(30, 12) NOT NULL CHECK (point_value > 0),
    fee_rate          numeric(13, 12) NOT NULL CHECK (fee_rate >= 0 AND fee_rate < 1),
    points_lifetime_s bigint CHECK (points_lifetime_s > 0),
    hold_lifetime_s   bigint NOT NULL CHECK (hold_lifetime_s > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN alliance_settings.point_value IS 'minor units of the settlement currency per alliance point';
COMMENT ON COLUMN alliance_settings.points_lifetime_s IS 'NULL: points issued without an expiry never expire';

CREATE TABLE merchants (
    merchant_id     text PRIMARY KEY,
    name            text NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
    liability_limit bigint NOT NULL CHECK (liability_limit >= 0),
    webhook_url     text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX merchants_name ON merchants (lower(name));

CREATE TABLE merchant_keys (
    key_id      text PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants,
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    not_before  timestamptz NOT NULL,
    not_after   timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL,
    CHECK (not_after IS NULL OR not_after > not_before)
);
CREATE INDEX merchant_keys_merchant ON merchant_keys (merchant_id);

CREATE TABLE currencies (
    currency          text PRIMARY KEY CHECK (currency ~ '^[A-Z][A-Z0-9]{1,11}$'),
    name              text NOT NULL,
    owner_merchant_id text REFERENCES merchants,
    CHECK ((currency = 'AP') = (owner_merchant_id IS NULL))
);
INSERT INTO currencies (currency, name) VALUES ('AP', 'Alliance point');

CREATE TABLE conversion_rates (
    source_currency text NOT NULL REFERENCES currencies,
    target_currency text NOT NULL REFERENCES currencies,
    effective_from  timestamptz NOT NULL,
    rate            numeric(30, 12) NOT NULL CHECK (rate > 0),
    PRIMARY KEY (source_currency, target_currency, effective_from),
    CHECK (source_currency <> target_currency)
);

CREATE TABLE exposure_slots (
    merchant_id text NOT NULL REFERENCES merchants,
    slot        smallint NOT NULL,
    headroom    bigint NOT NULL,
    valid_until timestamptz,
    PRIMARY KEY (merchant_id, slot)
);
COMMENT ON TABLE exposure_slots IS 'escrowed liability headroom; the sum never exceeds limit - exposure';

CREATE TABLE members (
    member_id  text PRIMARY KEY,
    created_at timestamptz NOT NULL
);

CREATE TABLE member_refs (
    external_ref text PRIMARY KEY,
    member_id    text NOT NULL REFERENCES members DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE member_accounts (
    member_id     text NOT NULL REFERENCES members,
    currency      text NOT NULL REFERENCES currencies,
    posted_points bigint NOT NULL DEFAULT 0 CHECK (posted_points >= 0),
    PRIMARY KEY (member_id, currency)
);
COMMENT ON COLUMN member_accounts.posted_points IS 'sum of postings to the member account = sum of its lots remaining';

CREATE SEQUENCE lot_ids;
CREATE SEQUENCE obligation_ids;

CREATE TABLE transactions (
    member_id        text NOT NULL REFERENCES members,
    transaction_id   text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('issuance', 'redemption', 'reversal', 'expiry', 'conversion')),
    merchant_id      text REFERENCES merchants,
    currency         text NOT NULL REFERENCES currencies,
    points           bigint NOT NULL CHECK (points >= 0),
    reference        text,
    created_at       timestamptz NOT NULL,
    settlement_value bigint NOT NULL DEFAULT 0,
    balance_after    bigint NOT NULL,
    reverses         text,
    requested_points bigint CHECK (requested_points > 0),
    shortfall_points bigint CHECK (shortfall_points >= 0),
    hold_id          text,
    target_currency  text REFERENCES currencies,
    target_points    bigint CHECK (target_points > 0),
    PRIMARY KEY (member_id, transaction_id),
    FOREIGN KEY (member_id, reverses) REFERENCES transactions (member_id, transaction_id),
    CHECK ((kind = 'reversal') = (reverses IS NOT NULL)),
    CHECK ((kind = 'expiry') = (merchant_id IS NULL)),
    CHECK ((kind = 'conversion') = (target_currency IS NOT NULL))
);
CREATE INDEX transactions_by_id ON transactions (transaction_id);
CREATE INDEX transactions_by_merchant ON transactions (merchant_id, created_at DESC, transaction_id DESC);
CREATE INDEX transactions_by_member ON transactions (member_id, created_at DESC, transaction_id DESC);
CREATE INDEX transactions_reversals ON transactions (member_id, reverses) WHERE reverses IS NOT NULL;

CREATE TABLE lots (
    member_id        text NOT NULL,
    lot_id           bigint NOT NULL DEFAULT nextval('lot_ids'),
    currency         text NOT NULL,
    issuer_id        text NOT NULL REFERENCES merchants,
    issued_points    bigint NOT NULL CHECK (issued_points > 0),
    remaining_points bigint NOT NULL CHECK (remaining_points >= 0 AND remaining_points <= issued_points),
    issued_at        timestamptz NOT NULL,
    expires_at       timestamptz,
    transaction_id   text NOT NULL,
    PRIMARY KEY (member_id, lot_id),
    FOREIGN KEY (member_id, currency) REFERENCES member_accounts,
    FOREIGN KEY (member_id, transaction_id) REFERENCES transactions DEFERRABLE INITIALLY DEFERRED,
    CHECK (expires_at IS NULL OR expires_at > issued_at)
);
CREATE INDEX lots_live ON lots (member_id, currency, expires_at, issued_at, lot_id) WHERE remaining_points > 0;
CREATE INDEX lots_outstanding_by_issuer ON lots (issuer_id, currency) INCLUDE (remaining_points, expires_at) WHERE remaining_points > 0;
CREATE INDEX lots_to_expire ON lots (expires_at) WHERE remaining_points > 0 AND expires_at IS NOT NULL;

CREATE TABLE postings (
    member_id      text NOT NULL,
    transaction_id text NOT NULL,
    posting_no     smallint NOT NULL CHECK (posting_no >= 0),
    account        text NOT NULL,
    currency       text NOT NULL REFERENCES currencies,
    amount         bigint NOT NULL CHECK (amount <> 0),
    lot_id         bigint,
    PRIMARY KEY (member_id, transaction_id, posting_no),
    FOREIGN KEY (member_id, transaction_id) REFERENCES transactions DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (member_id, lot_id) REFERENCES lots
);
CREATE INDEX postings_by_account ON postings (account, currency);
CREATE INDEX postings_by_lot ON postings (member_id, lot_id) WHERE lot_id IS NOT NULL;

CREATE TABLE holds (
    member_id              text NOT NULL REFERENCES members,
    hold_id                text NOT NULL,
    merchant_id            text NOT NULL REFERENCES merchants,
    currency               text NOT NULL REFERENCES currencies,
    points                 bigint NOT NULL CHECK (points > 0),
    reference              text,
    status                 text NOT NULL CHECK (status IN ('active', 'captured', 'voided', 'lapsed')),
    created_at             timestamptz NOT NULL,
    expires_at             timestamptz NOT NULL,
    closed_at              timestamptz,
    captured_points        bigint CHECK (captured_points > 0 AND captured_points <= points),
    capture_transaction_id text,
    PRIMARY KEY (member_id, hold_id),
    FOREIGN KEY (member_id, capture_transaction_id) REFERENCES transactions DEFERRABLE INITIALLY DEFERRED,
    CHECK ((status = 'active') = (closed_at IS NULL)),
    CHECK ((status = 'captured') = (capture_transaction_id IS NOT NULL))
);
CREATE INDEX holds_by_id ON holds (hold_id);
CREATE INDEX holds_active ON holds (member_id, currency) WHERE status = 'active';
CREATE INDEX holds_to_lapse ON holds (expires_at) WHERE status = 'active';

CREATE TABLE obligations (
    member_id              text NOT NULL,
    obligation_id          bigint NOT NULL DEFAULT nextval('obligation_ids'),
    transaction_id         text NOT NULL,
    debtor_id              text NOT NULL REFERENCES merchants,
    creditor_id            text NOT NULL REFERENCES merchants,
    points                 bigint NOT NULL CHECK (points <> 0),
    gross_value            bigint NOT NULL,
    fee                    bigint NOT NULL,
    created_at             timestamptz NOT NULL,
    reverses_obligation_id bigint,
    PRIMARY KEY (member_id, obligation_id),
    FOREIGN KEY (member_id, transaction_id) REFERENCES transactions DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (member_id, reverses_obligation_id) REFERENCES obligations,
    CHECK (debtor_id <> creditor_id),
    CHECK ((points > 0) = (reverses_obligation_id IS NULL)),
    CHECK (sign(gross_value) * sign(points) >= 0 AND sign(fee) * sign(points) >= 0),
    -- A cancellation rounds cumulatively, so one part's fee may exceed its gross by a unit;
    -- only originals must keep fee <= gross (reconciliation checks the cancelled totals).
    CHECK (reverses_obligation_id IS NOT NULL OR fee <= gross_value)
);
COMMENT ON TABLE obligations IS 'debtor (issuer) owes creditor (acceptor) gross_value - fee; the alliance keeps fee';
CREATE INDEX obligations_by_transaction ON obligations (member_id, transaction_id);
CREATE INDEX obligations_by_debtor ON obligations (debtor_id, created_at);
CREATE INDEX obligations_by_creditor ON obligations (creditor_id, created_at);

CREATE TABLE idempotency_records (
    merchant_id     text NOT NULL REFERENCES merchants,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash    bytea NOT NULL,
    response        text NOT NULL,  -- the first response's JSON, byte for byte
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
CREATE INDEX idempotency_records_age ON idempotency_records (created_at);

-- Double entry, checked by the database at commit: every transaction's postings sum to zero per
-- currency. Deferred, so the check sees all postings of the transaction.
CREATE FUNCTION check_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced text;
BEGIN
    SELECT currency INTO unbalanced
      FROM postings
     WHERE member_id = NEW.member_id AND transaction_id = NEW.transaction_id
     GROUP BY currency
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'transaction % does not balance in %', NEW.transaction_id, unbalanced
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_transaction_balanced();

-- History is append-only: corrections are new transactions (reversals), never edits.
CREATE FUNCTION refuse_history_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER transactions_append_only BEFORE UPDATE OR DELETE ON transactions
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER obligations_append_only BEFORE UPDATE OR DELETE ON obligations
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER alliance_settings_append_only BEFORE UPDATE OR DELETE ON alliance_settings
    FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
CREATE TRIGGER transactions_no_truncate BEFORE TRUNCATE ON transactions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_change();
"""

DOWNGRADE = r"""
DROP TABLE idempotency_records, obligations, holds, postings, lots, transactions, member_accounts,
    member_refs, members, exposure_slots, conversion_rates, currencies, merchant_keys, merchants,
    alliance_settings CASCADE;
DROP SEQUENCE lot_ids, obligation_ids;
DROP FUNCTION check_transaction_balanced(), refuse_history_change();
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
