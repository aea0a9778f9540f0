"""Plain values the rest of the system reads about merchants and the alliance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from enum import StrEnum

ALLIANCE_POINT = "AP"


class MerchantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    name: str
    status: MerchantStatus
    liability_limit: int
    webhook_url: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MerchantKey:
    key_id: str
    merchant_id: str
    public_key: bytes
    not_before: datetime
    not_after: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    def usable_at(self, instant: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= instant:
            return False
        if instant < self.not_before:
            return False
        return self.not_after is None or instant < self.not_after


@dataclass(frozen=True, slots=True)
class AllianceSettings:
    """One effective-dated version of the alliance's settings.

    `point_value` is in minor units of `currency` per alliance point (e.g. Decimal("1") = 1 fen).
    `fee_rate` is the share of a cross-merchant redemption's value the alliance keeps.
    """

    effective_from: datetime
    currency: str
    minor_units: int
    timezone: str
    cutoff: time
    point_value: Decimal
    fee_rate: Decimal
    points_lifetime_s: int | None
    hold_lifetime_s: int


@dataclass(frozen=True, slots=True)
class KeyCounts:
    """How many keys a merchant has, and how many of them are usable at the instant asked."""

    total: int
    usable: int


@dataclass(frozen=True, slots=True)
class Currency:
    """A points currency: the alliance point (no owner) or a merchant's own programme."""

    currency: str
    name: str
    owner_merchant_id: str | None


@dataclass(frozen=True, slots=True)
class ConversionRate:
    """Target points per source point, from `effective_from` on (until a later rate)."""

    source: str
    target: str
    rate: Decimal
    effective_from: datetime


@dataclass(frozen=True, slots=True)
class BankAccount:
    """Where settlement pays a merchant (and what it collects from): validated when set.

    `iban` and `bic` are in electronic form (upper case, no spaces); `bic` may be unknown.
    """

    merchant_id: str
    account_name: str
    iban: str
    bic: str | None
    updated_at: datetime
