"""Issue (earn): a merchant gives a member points, as a new lot it is liable for."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.errors import NotFound, ValidationFailed
from exchange import exposure, repository, writer
from exchange.context import Context, check_points, check_reference
from exchange.ledger import Posting, issuer_account, member_account
from exchange.rounding import exposure_value
from merchants import repository as merchant_repository
from merchants.models import ALLIANCE_POINT


def lot_expiry(ctx: Context, expires_at: datetime | None) -> datetime | None:
    """The issuance's own expiry, else the alliance default lifetime (which may be never)."""
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValidationFailed("expires_at needs a time zone", fields={"expires_at": "naive"})
        if expires_at <= ctx.now:
            raise ValidationFailed(
                "expires_at must be in the future", fields={"expires_at": "in the past"}
            )
        return expires_at
    lifetime = ctx.settings.points_lifetime_s
    return None if lifetime is None else ctx.now + timedelta(seconds=lifetime)


async def lock_member(conn: asyncpg.Connection, member_id: str, currency: str) -> None:
    """Lock the member's account in `currency`, the first step of every writer; refuse an
    unknown member."""
    if await repository.lock_member_account(conn, member_id, currency) is None:
        raise NotFound("no such member", fields={"member_id": "not found"})


async def require_own_currency(conn: asyncpg.Connection, ctx: Context, currency: str) -> None:
    """Merchants issue alliance points, or points of their own programme; nobody else's."""
    if currency == ALLIANCE_POINT:
        return  # the migrations create it, and every merchant may issue it
    exists, owner = await merchant_repository.currency_owner(conn, currency)
    if not exists:
        raise ValidationFailed(f"unknown currency {currency}", fields={"currency": "unknown"})
    if currency != ALLIANCE_POINT and owner != ctx.merchant.merchant_id:
        raise ValidationFailed(
            f"{currency} belongs to another programme", fields={"currency": "not yours"}
        )


def issuance_postings(
    ctx: Context, member_id: str, currency: str, points: int, lot_id: int
) -> list[Posting]:
    return [
        Posting(member_account(member_id), currency, points, lot_id),
        Posting(issuer_account(ctx.merchant.merchant_id), currency, -points),
    ]


async def create_lot(
    conn: asyncpg.Connection,
    ctx: Context,
    draft: writer.Draft,
    *,
    currency: str,
    points: int,
    expires_at: datetime | None,
) -> None:
    """Add a lot issued by the acting merchant to `draft`, within its liability limit."""
    if currency == ALLIANCE_POINT:
        await exposure.reserve(
            conn,
            merchant_id=ctx.merchant.merchant_id,
            value=exposure_value(points, ctx.settings.point_value),
            settings=ctx.settings,
            now=ctx.now,
        )
    lot_id = await repository.insert_lot(
        conn,
        member_id=draft.member_id,
        currency=currency,
        issuer_id=ctx.merchant.merchant_id,
        points=points,
        issued_at=ctx.now,
        expires_at=expires_at,
        transaction_id=draft.transaction_id,
    )
    draft.postings += issuance_postings(ctx, draft.member_id, currency, points, lot_id)


async def issue(
    conn: asyncpg.Connection,
    ctx: Context,
    *,
    member_id: str,
    points: int,
    reference: str,
    expires_at: datetime | None,
    currency: str,
) -> dict[str, Any]:
    check_points(points)
    check_reference(reference)
    expiry = lot_expiry(ctx, expires_at)
    await require_own_currency(conn, ctx, currency)
    await lock_member(conn, member_id, currency)
    draft = writer.Draft(
        kind="issuance",
        member_id=member_id,
        currency=currency,
        merchant_id=ctx.merchant.merchant_id,
        points=points,
        reference=reference,
    )
    await create_lot(conn, ctx, draft, currency=currency, points=points, expires_at=expiry)
    return await writer.write(conn, draft, now=ctx.now)
