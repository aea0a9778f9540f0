"""Merchant API v1: replay protection for signed requests, and the exchange's own signing keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from migrations.sql import run_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- A (keyid, nonce) pair is accepted once. Rows live until the signature could no longer be
-- accepted anyway (created + tolerance), then `alliance expire` prunes them.
CREATE TABLE request_nonces (
    key_id     text NOT NULL,
    nonce      text NOT NULL CHECK (length(nonce) BETWEEN 1 AND 255),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX request_nonces_expiry ON request_nonces (expires_at);

-- The exchange's Ed25519 keys: the newest active one signs responses and webhooks; every key not
-- yet retired is published at /v1/exchange-keys so clients can verify across a rotation.
CREATE TABLE exchange_keys (
    key_id       text PRIMARY KEY,
    private_key  bytea NOT NULL CHECK (length(private_key) = 32),
    public_key   bytea NOT NULL CHECK (length(public_key) = 32),
    created_at   timestamptz NOT NULL,
    retires_at   timestamptz,
    CHECK (retires_at IS NULL OR retires_at > created_at)
);
"""

DOWNGRADE = r"""
DROP TABLE exchange_keys, request_nonces;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
