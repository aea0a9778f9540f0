"""Plain functions that make what tests need, on the real database, with unique ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from decimal import Decimal

from core.database import Database
from exchange.service import Ledger
from merchants import repository as merchant_repository
from merchants.models import AllianceSettings

DEFAULT_SETTINGS = AllianceSettings(
    effective_from=datetime(2020, 1, 1, tzinfo=UTC),
    currency="CNY",
    minor_units=2,
    timezone="Asia/Shanghai",
    cutoff=time(0, 0),
    point_value=Decimal("1"),
    fee_rate=Decimal("0.05"),
    points_lifetime_s=365 * 24 * 3600,
    hold_lifetime_s=900,
)
"""In force for every test whose clock is before 2031; settings tests use later instants."""

CREATED_AT = datetime(2020, 1, 1, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


async def make_merchant(
    db: Database, *, name: str | None = None, liability_limit: int = 10**12
) -> str:
    merchant_id = unique("mer")
    async with db.transaction() as conn:
        await merchant_repository.insert_merchant(
            conn,
            merchant_id=merchant_id,
            name=name or merchant_id,
            liability_limit=liability_limit,
            webhook_url=None,
            now=CREATED_AT,
        )
    return merchant_id


async def make_member(ledger: Ledger) -> str:
    return (await ledger.register_member(external_ref=unique("card"))).member_id


async def issue(
    ledger: Ledger, merchant_id: str, member_id: str, points: int, **extra: object
) -> dict[str, object]:
    outcome = await ledger.issue(
        merchant_id=merchant_id,
        idempotency_key=unique("key"),
        member_id=member_id,
        points=points,
        reference=unique("ref"),
        **extra,  # type: ignore[arg-type]
    )
    return outcome.body


async def redeem(
    ledger: Ledger, merchant_id: str, member_id: str, points: int
) -> dict[str, object]:
    outcome = await ledger.redeem(
        merchant_id=merchant_id,
        idempotency_key=unique("key"),
        member_id=member_id,
        points=points,
        reference=unique("ref"),
    )
    return outcome.body
