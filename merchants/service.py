"""Merchant onboarding, keys, limits, and the alliance's settings, currencies and rates.

Every public function is one unit of work (one transaction) and takes `now` from the caller's
clock, so that tests and replays decide what time it is. Lock order, kept by every function here:
the merchant row first, then exposure slots in (merchant, slot) order, as the ledger's rebalancing
takes them, so that a limit or settings change queues behind issuances instead of deadlocking.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from core.config import webhook_private_targets_allowed
from core.database import Database
from core.ids import new_id
from core.limits import HOLD_LIFETIME_S_MAX
from merchants import banking, repository, webhook_urls
from merchants.errors import (
    CurrencyNotFound,
    DuplicateCurrency,
    DuplicateKey,
    DuplicateMerchant,
    InvalidField,
    InvalidSettings,
    KeyNotFound,
    MerchantClosed,
    MerchantNotFound,
)
from merchants.keys import KEY_ID_PATTERN, check_key_id, check_public_key, new_key_id
from merchants.models import (
    ALLIANCE_POINT,
    AllianceSettings,
    BankAccount,
    ConversionRate,
    Currency,
    KeyCounts,
    Merchant,
    MerchantKey,
    MerchantStatus,
)

MONEY_MAX = 2**63 - 1
"""Liability limits are stored as bigint minor units."""
NAME_LENGTH_MAX = 200
DECIMAL_PLACES_MAX = 12
"""Point values, fee rates and conversion rates are numeric(_, 12): more places would be rounded
silently by PostgreSQL, so they are refused instead."""
DECIMAL_INTEGER_DIGITS_MAX = 18
NO_SETTINGS = "the alliance has no settings yet; run alliance demo or alliance settings set"
_CURRENCY_CODE = re.compile(r"[A-Z][A-Z0-9]{1,11}")
_SETTLEMENT_CURRENCY = re.compile(r"[A-Z]{3}")


# Merchants


async def create_merchant(
    db: Database,
    *,
    name: str,
    liability_limit: int,
    webhook_url: str | None = None,
    merchant_id: str | None = None,
    now: datetime,
) -> Merchant:
    _check_aware(now, "now")
    name = _check_name(name)
    _check_limit(liability_limit)
    merchant_id = new_id("mer") if merchant_id is None else _check_id(merchant_id, "merchant_id")
    webhook_url = None if webhook_url is None else _check_webhook_url(webhook_url)
    async with db.transaction() as conn:
        taken = await repository.taken_merchant_field(conn, merchant_id=merchant_id, name=name)
        if taken is not None:
            raise _duplicate_merchant(taken, merchant_id, name)
        try:
            return await repository.insert_merchant(
                conn,
                merchant_id=merchant_id,
                name=name,
                liability_limit=liability_limit,
                webhook_url=webhook_url,
                now=now,
            )
        except asyncpg.UniqueViolationError:
            # A concurrent create took the id or name between the check and the insert.
            raise _duplicate_merchant("name", merchant_id, name) from None


async def get_merchant(db: Database, merchant_id: str) -> Merchant:
    async with db.transaction() as conn:
        return await _merchant(conn, merchant_id)


async def list_merchants(db: Database) -> list[Merchant]:
    async with db.transaction() as conn:
        return await repository.list_merchants(conn)


async def key_counts(db: Database, now: datetime) -> dict[str, KeyCounts]:
    """Keys per merchant id (all, and usable at `now`); merchants without keys are absent."""
    async with db.transaction() as conn:
        return await repository.key_counts(conn, now)


async def suspend(db: Database, merchant_id: str, now: datetime) -> Merchant:
    return await _change_status(db, merchant_id, MerchantStatus.SUSPENDED, now)


async def reactivate(db: Database, merchant_id: str, now: datetime) -> Merchant:
    return await _change_status(db, merchant_id, MerchantStatus.ACTIVE, now)


async def close(db: Database, merchant_id: str, now: datetime) -> Merchant:
    """Close for good. Closing a closed merchant is a no-op, so an operator may retry."""
    return await _change_status(db, merchant_id, MerchantStatus.CLOSED, now)


async def set_liability_limit(
    db: Database, merchant_id: str, limit: int, now: datetime
) -> Merchant:
    """Change the limit and, in the same transaction, empty the merchant's escrowed headroom.

    Headroom escrowed under the old limit may exceed the new one; zero headroom makes the ledger
    recompute exposure exactly on the next issuance, so the new limit holds from this commit on.
    """
    _check_aware(now, "now")
    _check_limit(limit)
    async with db.transaction() as conn:
        merchant = await _open_merchant_for_update(conn, merchant_id)
        await repository.set_liability_limit(conn, merchant_id, limit, now)
        await repository.reset_exposure_slots(conn, merchant_id)
        return dataclasses.replace(merchant, liability_limit=limit)


async def set_webhook_url(
    db: Database, merchant_id: str, webhook_url: str | None, now: datetime
) -> Merchant:
    """Set (or, with None, clear) where the merchant's webhooks go, checked as at creation.

    Events already queued go to the URL the merchant has when each attempt is made; with none,
    they are given up. A closed merchant's URL cannot be changed.
    """
    _check_aware(now, "now")
    webhook_url = None if webhook_url is None else _check_webhook_url(webhook_url)
    async with db.transaction() as conn:
        merchant = await _open_merchant_for_update(conn, merchant_id)
        await repository.set_webhook_url(conn, merchant_id, webhook_url, now)
        return dataclasses.replace(merchant, webhook_url=webhook_url)


async def _change_status(
    db: Database, merchant_id: str, status: MerchantStatus, now: datetime
) -> Merchant:
    _check_aware(now, "now")
    async with db.transaction() as conn:
        merchant = await _merchant_for_update(conn, merchant_id)
        if merchant.status is status:
            return merchant
        if merchant.status is MerchantStatus.CLOSED:
            raise MerchantClosed(f"merchant {merchant_id} is closed; closing is final")
        await repository.set_status(conn, merchant_id, status, now)
        return dataclasses.replace(merchant, status=status)


# Keys


async def add_key(
    db: Database,
    *,
    merchant_id: str,
    public_key: bytes,
    key_id: str | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    now: datetime,
) -> MerchantKey:
    """Register an Ed25519 public key (32 raw bytes; see merchants.keys to parse other forms)."""
    _check_aware(now, "now")
    check_public_key(public_key)
    key_id = new_key_id() if key_id is None else check_key_id(key_id)
    not_before = now if not_before is None else _check_aware(not_before, "not_before")
    _check_window(not_before, not_after, now)
    async with db.transaction() as conn:
        await _open_merchant_for_update(conn, merchant_id)
        if await repository.get_key(conn, key_id) is not None:
            raise DuplicateKey(f"key id {key_id} is already in use", field="key_id")
        try:
            return await repository.insert_key(
                conn,
                key_id=key_id,
                merchant_id=merchant_id,
                public_key=public_key,
                not_before=not_before,
                not_after=not_after,
                now=now,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateKey(f"key id {key_id} is already in use", field="key_id") from None


async def revoke_key(db: Database, *, merchant_id: str, key_id: str, now: datetime) -> MerchantKey:
    """Revoke from `now` on, for good. A revoked key stays revoked from its first revocation."""
    _check_aware(now, "now")
    async with db.transaction() as conn:
        await _merchant_for_update(conn, merchant_id)
        key = await repository.get_key(conn, key_id)
        if key is None or key.merchant_id != merchant_id:
            # Another merchant's key answers exactly as a missing one.
            raise KeyNotFound(f"merchant {merchant_id} has no key {key_id}")
        if key.revoked_at is not None:
            return key
        await repository.revoke_key(conn, key_id, now)
        return dataclasses.replace(key, revoked_at=now)


async def list_keys(db: Database, merchant_id: str) -> list[MerchantKey]:
    async with db.transaction() as conn:
        await _merchant(conn, merchant_id)
        return await repository.list_keys(conn, merchant_id)


async def find_key(db: Database, key_id: str) -> tuple[Merchant, MerchantKey] | None:
    """The key and its merchant whatever their state, for callers that tell apart why a key
    fails (unknown, revoked, outside its window)."""
    async with db.connection() as conn:
        return await find_key_on(conn, key_id)


async def find_key_on(
    conn: repository.Connection, key_id: str
) -> tuple[Merchant, MerchantKey] | None:
    """`find_key` on a connection the caller holds (the gateway does more on it)."""
    if not KEY_ID_PATTERN.fullmatch(key_id):
        return None
    return await repository.key_and_merchant(conn, key_id)


async def find_usable_key(
    db: Database, key_id: str, now: datetime
) -> tuple[Merchant, MerchantKey] | None:
    """The key if it is usable at `now` (window, revocation), with its merchant.

    The merchant's status is not judged here: the caller refuses suspended and closed merchants
    with its own error codes.
    """
    found = await find_key(db, key_id)
    if found is None or not found[1].usable_at(now):
        return None
    return found


async def _merchant(conn: repository.Connection, merchant_id: str) -> Merchant:
    merchant = await repository.get_merchant(conn, merchant_id)
    if merchant is None:
        raise MerchantNotFound(f"no merchant {merchant_id}")
    return merchant


async def _merchant_for_update(conn: repository.Connection, merchant_id: str) -> Merchant:
    merchant = await repository.get_merchant_for_update(conn, merchant_id)
    if merchant is None:
        raise MerchantNotFound(f"no merchant {merchant_id}")
    return merchant


async def _open_merchant_for_update(conn: repository.Connection, merchant_id: str) -> Merchant:
    """The merchant, locked against a concurrent close, if it is not closed."""
    merchant = await _merchant_for_update(conn, merchant_id)
    if merchant.status is MerchantStatus.CLOSED:
        raise MerchantClosed(f"merchant {merchant_id} is closed")
    return merchant


# Alliance settings


async def set_alliance_settings(
    db: Database, settings: AllianceSettings, now: datetime
) -> AllianceSettings:
    """Add a settings version from `settings.effective_from` on; never retroactive.

    Only the very first version may start in the past (a new alliance backdates its opening).
    Every issuer's escrowed headroom is emptied in the same transaction: a point value change
    moves every exposure, and the ledger recomputes it exactly on the next issuance.
    """
    _check_aware(now, "now")
    _check_settings(settings)
    async with db.transaction() as conn:
        await repository.lock_settings(conn)
        has_settings = await repository.latest_settings(conn) is not None
        if has_settings and settings.effective_from < now:
            raise InvalidSettings(
                f"settings cannot take effect in the past ({settings.effective_from.isoformat()} "
                f"is before now, {now.isoformat()}); changes are never retroactive",
                field="effective_from",
            )
        if await repository.settings_exist_at(conn, settings.effective_from):
            raise InvalidSettings(
                f"a settings version already takes effect at {settings.effective_from.isoformat()}",
                field="effective_from",
            )
        await repository.insert_settings(conn, settings)
        await repository.reset_all_exposure_slots(conn)
        return settings


async def current_settings(db: Database, now: datetime) -> AllianceSettings:
    async with db.transaction() as conn:
        settings = await repository.settings_at(conn, now)
    if settings is None:
        raise InvalidSettings(NO_SETTINGS)
    return settings


async def upcoming_settings(db: Database, now: datetime) -> list[AllianceSettings]:
    """Versions scheduled after `now`, soonest first."""
    async with db.transaction() as conn:
        return await repository.settings_after(conn, now)


def _check_settings(settings: AllianceSettings) -> None:
    _check_aware(settings.effective_from, "effective_from")
    if not _SETTLEMENT_CURRENCY.fullmatch(settings.currency):
        raise InvalidSettings("currency must be an ISO 4217 code like CNY", field="currency")
    if not 0 <= settings.minor_units <= 4:
        raise InvalidSettings("minor units must be between 0 and 4", field="minor_units")
    _check_timezone(settings.timezone)
    if settings.cutoff.tzinfo is not None:
        raise InvalidSettings(
            "the cutoff is a wall-clock time in the alliance timezone", field="cutoff"
        )
    _check_decimal(settings.point_value, "point_value")
    if settings.point_value <= 0:
        raise InvalidSettings("the point value must be greater than 0", field="point_value")
    _check_decimal(settings.fee_rate, "fee_rate")
    if not 0 <= settings.fee_rate < 1:
        raise InvalidSettings("the fee rate must be at least 0 and less than 1", field="fee_rate")
    if settings.points_lifetime_s is not None and settings.points_lifetime_s <= 0:
        raise InvalidSettings("the points lifetime must be positive", field="points_lifetime_s")
    if not 0 < settings.hold_lifetime_s <= HOLD_LIFETIME_S_MAX:
        raise InvalidSettings(
            f"the hold lifetime must be 1 to {HOLD_LIFETIME_S_MAX} seconds",
            field="hold_lifetime_s",
        )


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSettings(
            f"unknown timezone {name!r}; use an IANA name like Asia/Shanghai", field="timezone"
        ) from None


def _check_decimal(value: Decimal, field: str) -> None:
    """Finite, at most 12 decimal places and 18 integer digits: what numeric(30, 12) holds."""
    if not value.is_finite():
        raise InvalidSettings(f"{field} must be a finite number", field=field)
    if _decimal_places(value) > DECIMAL_PLACES_MAX:
        raise InvalidSettings(
            f"{field} has more than {DECIMAL_PLACES_MAX} decimal places", field=field
        )
    if abs(value) >= Decimal(10) ** DECIMAL_INTEGER_DIGITS_MAX:
        raise InvalidSettings(f"{field} is too large", field=field)


def _decimal_places(value: Decimal) -> int:
    """Places needed to write `value` exactly (trailing zeros do not count)."""
    if value == 0:
        return 0
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked by the caller
    places = -exponent
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, places - trailing_zeros)


# Currencies and conversion rates


async def create_currency(
    db: Database, *, currency: str, name: str, owner_merchant_id: str, now: datetime
) -> Currency:
    """A merchant's own points programme joins the exchange with its own currency code.

    `now` is taken like everywhere else, though currencies carry no timestamp yet.
    """
    _check_aware(now, "now")
    _check_currency_code(currency)
    name = _check_name(name)
    async with db.transaction() as conn:
        await _open_merchant_for_update(conn, owner_merchant_id)
        if await repository.get_currency(conn, currency) is not None:
            raise DuplicateCurrency(f"currency {currency} already exists", field="currency")
        try:
            await repository.insert_currency(
                conn, currency=currency, name=name, owner_merchant_id=owner_merchant_id
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateCurrency(
                f"currency {currency} already exists", field="currency"
            ) from None
    return Currency(currency, name, owner_merchant_id)


async def list_currencies(db: Database) -> list[Currency]:
    async with db.transaction() as conn:
        return await repository.list_currencies(conn)


async def set_conversion_rate(
    db: Database,
    *,
    source: str,
    target: str,
    rate: Decimal,
    effective_from: datetime,
    now: datetime,
) -> ConversionRate:
    """Target points per source point from `effective_from` on; never retroactive."""
    _check_aware(now, "now")
    _check_aware(effective_from, "effective_from")
    if source == target:
        raise InvalidSettings("a conversion needs two different currencies", field="target")
    _check_decimal(rate, "rate")
    if rate <= 0:
        raise InvalidSettings("the rate must be greater than 0", field="rate")
    if effective_from < now:
        raise InvalidSettings(
            "a rate cannot take effect in the past; changes are never retroactive",
            field="effective_from",
        )
    async with db.transaction() as conn:
        for code in (source, target):
            if await repository.get_currency(conn, code) is None:
                raise CurrencyNotFound(f"no currency {code}")
        if await repository.conversion_rate_exists(
            conn, source=source, target=target, effective_from=effective_from
        ):
            raise InvalidSettings(
                f"a {source}->{target} rate already takes effect at {effective_from.isoformat()}",
                field="effective_from",
            )
        await repository.insert_conversion_rate(
            conn, source=source, target=target, rate=rate, effective_from=effective_from
        )
    return ConversionRate(source, target, rate, effective_from)


async def list_conversion_rates(db: Database) -> list[ConversionRate]:
    async with db.transaction() as conn:
        return await repository.list_conversion_rates(conn)


def _check_currency_code(currency: str) -> None:
    if currency == ALLIANCE_POINT:
        raise InvalidField(f"{ALLIANCE_POINT} is the alliance point", field="currency")
    if not _CURRENCY_CODE.fullmatch(currency):
        raise InvalidField(
            "a currency code is 2-12 characters of A-Z and 0-9, starting with a letter",
            field="currency",
        )


# Field checks shared by the sections above


def _check_aware(instant: datetime, field: str) -> datetime:
    # A naive time would be read in the server's zone; refusing it keeps instants unambiguous.
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InvalidField(f"{field} needs a timezone (RFC 3339, e.g. ...Z)", field=field)
    return instant


def _check_name(name: str) -> str:
    stripped = name.strip()
    if not 1 <= len(stripped) <= NAME_LENGTH_MAX:
        raise InvalidField(f"a name is 1 to {NAME_LENGTH_MAX} characters", field="name")
    return stripped


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not 0 <= limit <= MONEY_MAX:
        raise InvalidField(
            "the liability limit is whole minor units, 0 or more", field="liability_limit"
        )


def _check_id(value: str, field: str) -> str:
    # Ids appear in URLs, logs and CSV files; the key id alphabet is safe in all of them.
    if not KEY_ID_PATTERN.fullmatch(value):
        raise InvalidField(f"{field} must be 1-128 characters of A-Z a-z 0-9 . _ : -", field=field)
    return value


def _check_webhook_url(url: str) -> str:
    # Webhooks carry settlement data and are sent from inside the exchange's network: public
    # https:// only (merchants.webhook_urls, ADR 0022). The host is not resolved here: an answer
    # now proves nothing about the one at delivery, where every attempt resolves, checks and
    # connects to the checked address; and registration neither waits on DNS nor tells a
    # registrant which internal names exist.
    try:
        webhook_urls.check_url(url, allow_private=webhook_private_targets_allowed())
    except webhook_urls.UnsafeWebhookUrl as unsafe:
        raise InvalidField(str(unsafe), field="webhook_url") from None
    return url


def _check_window(not_before: datetime, not_after: datetime | None, now: datetime) -> None:
    if not_after is None:
        return
    _check_aware(not_after, "not_after")
    if not_after <= not_before:
        raise InvalidField("not_after must be later than not_before", field="not_after")
    if not_after <= now:
        raise InvalidField(
            "not_after is already past; the key could never be used", field="not_after"
        )


def _duplicate_merchant(field: str, merchant_id: str, name: str) -> DuplicateMerchant:
    if field == "merchant_id":
        return DuplicateMerchant(f"merchant id {merchant_id} is already taken", field=field)
    return DuplicateMerchant(f"a merchant is already named {name!r} (in any case)", field="name")


# Bank accounts


async def set_bank_account(
    db: Database,
    merchant_id: str,
    account_name: str,
    iban: str,
    bic: str | None,
    now: datetime,
) -> BankAccount:
    """Set (or replace) the account settlement pays the merchant to and collects from.

    The IBAN must pass ISO 13616's mod-97 check and its country's length, the BIC (optional)
    ISO 9362's shape; both are stored in electronic form. A suspended merchant may change its
    account (it is still settled); a closed one may not, like anything else about it.
    """
    _check_aware(now, "now")
    account_name = banking.check_account_name(account_name)
    iban = banking.normalize_iban(iban)
    bic = None if bic is None else banking.normalize_bic(bic)
    async with db.transaction() as conn:
        await _open_merchant_for_update(conn, merchant_id)
        return await repository.set_bank_account(
            conn, merchant_id=merchant_id, account_name=account_name, iban=iban, bic=bic, now=now
        )


async def bank_accounts(db: Database, merchant_ids: Sequence[str]) -> dict[str, BankAccount]:
    """The accounts of those merchants that have one, by merchant id (others are absent)."""
    async with db.transaction() as conn:
        return await repository.bank_accounts(conn, merchant_ids)
