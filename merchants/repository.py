"""The only SQL about merchants, keys, bank accounts, currencies and alliance settings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

import asyncpg

from merchants.models import (
    AllianceSettings,
    BankAccount,
    ConversionRate,
    Currency,
    KeyCounts,
    Merchant,
    MerchantKey,
    MerchantStatus,
)

# asyncpg ships no type information, so this alias is Any to mypy; it still documents intent.
Connection: TypeAlias = asyncpg.Connection


def _merchant(row: asyncpg.Record) -> Merchant:
    return Merchant(
        merchant_id=row["merchant_id"],
        name=row["name"],
        status=MerchantStatus(row["status"]),
        liability_limit=row["liability_limit"],
        webhook_url=row["webhook_url"],
        created_at=row["created_at"],
    )


async def get_merchant(conn: Connection, merchant_id: str) -> Merchant | None:
    row = await conn.fetchrow("SELECT * FROM merchants WHERE merchant_id = $1", merchant_id)
    return _merchant(row) if row else None


async def get_merchant_for_update(conn: Connection, merchant_id: str) -> Merchant | None:
    row = await conn.fetchrow(
        "SELECT * FROM merchants WHERE merchant_id = $1 FOR NO KEY UPDATE", merchant_id
    )
    return _merchant(row) if row else None


async def list_merchants(conn: Connection) -> list[Merchant]:
    rows = await conn.fetch("SELECT * FROM merchants ORDER BY created_at, merchant_id")
    return [_merchant(row) for row in rows]


async def insert_merchant(
    conn: Connection,
    *,
    merchant_id: str,
    name: str,
    liability_limit: int,
    webhook_url: str | None,
    now: datetime,
) -> Merchant:
    row = await conn.fetchrow(
        """INSERT INTO merchants (merchant_id, name, status, liability_limit, webhook_url,
                                  created_at, updated_at)
           VALUES ($1, $2, 'active', $3, $4, $5, $5) RETURNING *""",
        merchant_id,
        name,
        liability_limit,
        webhook_url,
        now,
    )
    assert row is not None
    return _merchant(row)


async def set_status(
    conn: Connection, merchant_id: str, status: MerchantStatus, now: datetime
) -> None:
    await conn.execute(
        "UPDATE merchants SET status = $2, updated_at = $3 WHERE merchant_id = $1",
        merchant_id,
        status.value,
        now,
    )


async def set_liability_limit(
    conn: Connection, merchant_id: str, liability_limit: int, now: datetime
) -> None:
    await conn.execute(
        "UPDATE merchants SET liability_limit = $2, updated_at = $3 WHERE merchant_id = $1",
        merchant_id,
        liability_limit,
        now,
    )


async def set_webhook_url(
    conn: Connection, merchant_id: str, webhook_url: str | None, now: datetime
) -> None:
    await conn.execute(
        "UPDATE merchants SET webhook_url = $2, updated_at = $3 WHERE merchant_id = $1",
        merchant_id,
        webhook_url,
        now,
    )


def _key(row: asyncpg.Record) -> MerchantKey:
    return MerchantKey(
        key_id=row["key_id"],
        merchant_id=row["merchant_id"],
        public_key=bytes(row["public_key"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        created_at=row["created_at"],
    )


async def taken_merchant_field(conn: Connection, *, merchant_id: str, name: str) -> str | None:
    """ "merchant_id" or "name" if a merchant already has it (names case-insensitively, as the
    unique index compares them), else None."""
    row = await conn.fetchrow(
        """SELECT merchant_id = $1 AS same_id FROM merchants
           WHERE merchant_id = $1 OR lower(name) = lower($2)
           ORDER BY merchant_id = $1 DESC LIMIT 1""",
        merchant_id,
        name,
    )
    if row is None:
        return None
    return "merchant_id" if row["same_id"] else "name"


async def reset_exposure_slots(conn: Connection, merchant_id: str) -> int:
    """Empty one merchant's escrowed headroom; the ledger recomputes exposure on its next issuance.

    Rows are kept (never deleted) so that concurrent issuers keep finding their slots.
    """
    # Rows are locked in slot order, as the ledger's rebalancing locks them, to avoid deadlocks.
    status: str = await conn.execute(
        """UPDATE exposure_slots SET headroom = 0
           WHERE (merchant_id, slot) IN (SELECT merchant_id, slot FROM exposure_slots
                                         WHERE merchant_id = $1 ORDER BY slot FOR UPDATE)""",
        merchant_id,
    )
    return _row_count(status)


async def reset_all_exposure_slots(conn: Connection) -> int:
    """Empty every merchant's escrowed headroom (a point value change moves every exposure)."""
    # One fixed lock order (merchant, slot) keeps concurrent rebalancing from deadlocking with it.
    status: str = await conn.execute(
        """UPDATE exposure_slots SET headroom = 0
           WHERE (merchant_id, slot) IN (SELECT merchant_id, slot FROM exposure_slots
                                         ORDER BY merchant_id, slot FOR UPDATE)"""
    )
    return _row_count(status)


def _row_count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 16".
    return int(status.rsplit(" ", 1)[-1])


async def key_counts(conn: Connection, instant: datetime) -> dict[str, KeyCounts]:
    """Per merchant with any key: all its keys, and those usable at `instant` (as `usable_at`)."""
    rows = await conn.fetch(
        """SELECT merchant_id, count(*) AS total,
                  count(*) FILTER (WHERE not_before <= $1
                                     AND (not_after IS NULL OR $1 < not_after)
                                     AND (revoked_at IS NULL OR $1 < revoked_at)) AS usable
           FROM merchant_keys GROUP BY merchant_id""",
        instant,
    )
    return {row["merchant_id"]: KeyCounts(row["total"], row["usable"]) for row in rows}


async def get_key(conn: Connection, key_id: str) -> MerchantKey | None:
    row = await conn.fetchrow("SELECT * FROM merchant_keys WHERE key_id = $1", key_id)
    return _key(row) if row else None


async def key_and_merchant(conn: Connection, key_id: str) -> tuple[Merchant, MerchantKey] | None:
    """One round trip: the hot path of every signed request looks its key up here."""
    row = await conn.fetchrow(
        """SELECT k.key_id, k.merchant_id, k.public_key, k.not_before, k.not_after,
                  k.revoked_at, k.created_at AS key_created_at,
                  m.name, m.status, m.liability_limit, m.webhook_url, m.created_at
           FROM merchant_keys k JOIN merchants m USING (merchant_id)
           WHERE k.key_id = $1""",
        key_id,
    )
    if row is None:
        return None
    key = MerchantKey(
        key_id=row["key_id"],
        merchant_id=row["merchant_id"],
        public_key=bytes(row["public_key"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        created_at=row["key_created_at"],
    )
    return _merchant(row), key


async def list_keys(conn: Connection, merchant_id: str) -> list[MerchantKey]:
    rows = await conn.fetch(
        "SELECT * FROM merchant_keys WHERE merchant_id = $1 ORDER BY created_at, key_id",
        merchant_id,
    )
    return [_key(row) for row in rows]


async def insert_key(
    conn: Connection,
    *,
    key_id: str,
    merchant_id: str,
    public_key: bytes,
    not_before: datetime,
    not_after: datetime | None,
    now: datetime,
) -> MerchantKey:
    row = await conn.fetchrow(
        """INSERT INTO merchant_keys (key_id, merchant_id, public_key, not_before, not_after,
                                      created_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        key_id,
        merchant_id,
        public_key,
        not_before,
        not_after,
        now,
    )
    assert row is not None
    return _key(row)


async def revoke_key(conn: Connection, key_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE merchant_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
        now,
    )


def _settings(row: asyncpg.Record) -> AllianceSettings:
    return AllianceSettings(
        effective_from=row["effective_from"],
        currency=row["currency"],
        minor_units=row["minor_units"],
        timezone=row["timezone"],
        cutoff=row["cutoff"],
        point_value=row["point_value"],
        fee_rate=row["fee_rate"],
        points_lifetime_s=row["points_lifetime_s"],
        hold_lifetime_s=row["hold_lifetime_s"],
    )


async def settings_at(conn: Connection, instant: datetime) -> AllianceSettings | None:
    row = await conn.fetchrow(
        """SELECT * FROM alliance_settings WHERE effective_from <= $1
           ORDER BY effective_from DESC LIMIT 1""",
        instant,
    )
    return _settings(row) if row else None


async def merchant_and_settings_at(
    conn: Connection, merchant_id: str, instant: datetime
) -> tuple[Merchant | None, AllianceSettings | None]:
    """One round trip for what every ledger operation starts from: its merchant and the
    alliance settings in force at `instant` (each row comes back as a composite record)."""
    row = await conn.fetchrow(
        """SELECT (SELECT m FROM merchants m WHERE m.merchant_id = $1) AS merchant,
                  (SELECT s FROM alliance_settings s WHERE s.effective_from <= $2
                   ORDER BY s.effective_from DESC LIMIT 1) AS settings""",
        merchant_id,
        instant,
    )
    assert row is not None  # a SELECT without FROM returns exactly one row
    merchant, settings = row["merchant"], row["settings"]
    return (
        _merchant(merchant) if merchant is not None else None,
        _settings(settings) if settings is not None else None,
    )


async def next_settings_change_after(conn: Connection, instant: datetime) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT min(effective_from) FROM alliance_settings WHERE effective_from > $1", instant
    )
    return value


async def latest_settings(conn: Connection) -> AllianceSettings | None:
    """The version with the latest effective_from, in force or scheduled; None before any."""
    row = await conn.fetchrow(
        "SELECT * FROM alliance_settings ORDER BY effective_from DESC LIMIT 1"
    )
    return _settings(row) if row else None


async def settings_after(conn: Connection, instant: datetime) -> list[AllianceSettings]:
    """Versions scheduled to take effect after `instant`, soonest first."""
    rows = await conn.fetch(
        "SELECT * FROM alliance_settings WHERE effective_from > $1 ORDER BY effective_from",
        instant,
    )
    return [_settings(row) for row in rows]


async def settings_exist_at(conn: Connection, effective_from: datetime) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM alliance_settings WHERE effective_from = $1)",
        effective_from,
    )
    return found


async def lock_settings(conn: Connection) -> None:
    """Serialise settings changes (the first-ever one is judged on "none exist yet").

    SHARE ROW EXCLUSIVE conflicts with itself and with inserts, never with readers.
    """
    await conn.execute("LOCK TABLE alliance_settings IN SHARE ROW EXCLUSIVE MODE")


async def insert_settings(conn: Connection, settings: AllianceSettings) -> None:
    await conn.execute(
        """INSERT INTO alliance_settings (effective_from, currency, minor_units, timezone, cutoff,
               point_value, fee_rate, points_lifetime_s, hold_lifetime_s)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        settings.effective_from,
        settings.currency,
        settings.minor_units,
        settings.timezone,
        settings.cutoff,
        settings.point_value,
        settings.fee_rate,
        settings.points_lifetime_s,
        settings.hold_lifetime_s,
    )


async def currency_owner(conn: Connection, currency: str) -> tuple[bool, str | None]:
    """(exists, owner merchant id or None for the alliance point)."""
    row = await conn.fetchrow(
        "SELECT owner_merchant_id FROM currencies WHERE currency = $1", currency
    )
    return (row is not None, row["owner_merchant_id"] if row else None)


async def get_currency(conn: Connection, currency: str) -> Currency | None:
    row = await conn.fetchrow("SELECT * FROM currencies WHERE currency = $1", currency)
    if row is None:
        return None
    return Currency(row["currency"], row["name"], row["owner_merchant_id"])


async def list_currencies(conn: Connection) -> list[Currency]:
    rows = await conn.fetch("SELECT * FROM currencies ORDER BY currency")
    return [Currency(row["currency"], row["name"], row["owner_merchant_id"]) for row in rows]


async def insert_currency(
    conn: Connection, *, currency: str, name: str, owner_merchant_id: str
) -> None:
    await conn.execute(
        "INSERT INTO currencies (currency, name, owner_merchant_id) VALUES ($1, $2, $3)",
        currency,
        name,
        owner_merchant_id,
    )


async def conversion_rate_at(
    conn: Connection, source: str, target: str, instant: datetime
) -> Decimal | None:
    rate: Decimal | None = await conn.fetchval(
        """SELECT rate FROM conversion_rates
           WHERE source_currency = $1 AND target_currency = $2 AND effective_from <= $3
           ORDER BY effective_from DESC LIMIT 1""",
        source,
        target,
        instant,
    )
    return rate


async def conversion_rate_exists(
    conn: Connection, *, source: str, target: str, effective_from: datetime
) -> bool:
    found: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM conversion_rates WHERE source_currency = $1
                          AND target_currency = $2 AND effective_from = $3)""",
        source,
        target,
        effective_from,
    )
    return found


async def list_conversion_rates(conn: Connection) -> list[ConversionRate]:
    rows = await conn.fetch(
        """SELECT * FROM conversion_rates
           ORDER BY source_currency, target_currency, effective_from"""
    )
    return [
        ConversionRate(
            row["source_currency"], row["target_currency"], row["rate"], row["effective_from"]
        )
        for row in rows
    ]


async def insert_conversion_rate(
    conn: Connection, *, source: str, target: str, rate: Decimal, effective_from: datetime
) -> None:
    await conn.execute(
        """INSERT INTO conversion_rates (source_currency, target_currency, effective_from, rate)
           VALUES ($1, $2, $3, $4)""",
        source,
        target,
        effective_from,
        rate,
    )


def _bank_account(row: asyncpg.Record) -> BankAccount:
    return BankAccount(
        merchant_id=row["merchant_id"],
        account_name=row["account_name"],
        iban=row["iban"],
        bic=row["bic"],
        updated_at=row["updated_at"],
    )


async def set_bank_account(
    conn: Connection,
    *,
    merchant_id: str,
    account_name: str,
    iban: str,
    bic: str | None,
    now: datetime,
) -> BankAccount:
    """Insert or replace the merchant's one bank account."""
    row = await conn.fetchrow(
        """INSERT INTO merchant_bank_accounts (merchant_id, account_name, iban, bic, updated_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (merchant_id) DO UPDATE
              SET account_name = EXCLUDED.account_name, iban = EXCLUDED.iban,
                  bic = EXCLUDED.bic, updated_at = EXCLUDED.updated_at
           RETURNING *""",
        merchant_id,
        account_name,
        iban,
        bic,
        now,
    )
    assert row is not None
    return _bank_account(row)


async def bank_account(conn: Connection, merchant_id: str) -> BankAccount | None:
    row = await conn.fetchrow(
        "SELECT * FROM merchant_bank_accounts WHERE merchant_id = $1", merchant_id
    )
    return _bank_account(row) if row else None


async def bank_accounts(conn: Connection, merchant_ids: Sequence[str]) -> dict[str, BankAccount]:
    """The accounts of those of `merchant_ids` that have one, by merchant id."""
    rows = await conn.fetch(
        "SELECT * FROM merchant_bank_accounts WHERE merchant_id = ANY($1::text[])",
        list(merchant_ids),
    )
    return {row["merchant_id"]: _bank_account(row) for row in rows}
