"""Conversion between the alliance point and a merchant's own points programme.

One side is always the alliance point (AP) and the other the acting merchant's own currency;
conversions between two programmes go through AP in two steps. At the alliance-set rate, rounded
down. AP -> own points: the merchant accepts the AP (obligations from foreign issuers, as for a
redemption) and issues its own points. Own points -> AP: the merchant takes back its points and
issues AP as a new lot it is liable for, within its liability limit. One transaction, balanced
in each currency.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from core.errors import ValidationFailed
from exchange import writer
from exchange.context import Context, check_points, check_reference
from exchange.earn import create_lot, lock_member, lot_expiry
from exchange.rounding import converted_points
from exchange.spend import consume, spendable_lots
from merchants import repository as merchant_repository
from merchants.models import ALLIANCE_POINT


async def _check_pair(conn: asyncpg.Connection, ctx: Context, source: str, target: str) -> None:
    if source == target or ALLIANCE_POINT not in (source, target):
        raise ValidationFailed(
            "a conversion is between the alliance point and one programme's points",
            fields={"target_currency": "unsupported pair"},
        )
    programme = target if source == ALLIANCE_POINT else source
    exists, owner = await merchant_repository.currency_owner(conn, programme)
    if not exists or owner != ctx.merchant.merchant_id:
        raise ValidationFailed(
            f"{programme} is not this merchant's programme", fields={"currency": "not yours"}
        )


async def convert(
    conn: asyncpg.Connection,
    ctx: Context,
    *,
    member_id: str,
    points: int,
    source_currency: str,
    target_currency: str,
    reference: str,
) -> dict[str, Any]:
    check_points(points)
    check_reference(reference)
    await _check_pair(conn, ctx, source_currency, target_currency)
    rate = await merchant_repository.conversion_rate_at(
        conn, source_currency, target_currency, ctx.now
    )
    if rate is None:
        raise ValidationFailed(f"no rate from {source_currency} to {target_currency}")
    target_points = converted_points(points, rate)
    if target_points < 1:
        raise ValidationFailed("the conversion would yield no points", fields={"points": "too few"})
    for currency in sorted((source_currency, target_currency)):
        await lock_member(conn, member_id, currency)
    lots = await spendable_lots(
        conn, ctx, member_id=member_id, currency=source_currency, points=points
    )
    draft = writer.Draft(
        kind="conversion",
        member_id=member_id,
        currency=source_currency,
        merchant_id=ctx.merchant.merchant_id,
        points=points,
        reference=reference,
        extra={"target_currency": target_currency, "target_points": target_points},
    )
    await consume(conn, ctx, draft, lots, points)
    await create_lot(
        conn,
        ctx,
        draft,
        currency=target_currency,
        points=target_points,
        expires_at=lot_expiry(ctx, None),
    )
    return await writer.write(conn, draft, now=ctx.now)
