"""Spending points: redeem, and hold then capture or void."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from core.errors import NotFound, ValidationFailed
from core.ids import new_id
from core.limits import HOLD_LIFETIME_S_MAX, LOTS_PER_REDEMPTION_MAX
from exchange import exposure, repository, writer
from exchange.context import Context, check_points, check_reference
from exchange.earn import lock_member
from exchange.errors import HoldNotActive, InsufficientPoints
from exchange.ledger import (
    Lot,
    consumption_postings,
    obligations_for,
    plan_consumption,
)
from exchange.repository import HoldRow
from exchange.views import hold_view
from merchants.models import ALLIANCE_POINT


def refuse_insufficient(points: int, available: int) -> InsufficientPoints:
    return InsufficientPoints(
        f"the member has {max(available, 0)} points available, {points} asked",
        available=max(available, 0),
    )


async def spendable_lots(
    conn: asyncpg.Connection,
    ctx: Context,
    *,
    member_id: str,
    currency: str,
    points: int,
    excluding_hold_id: str | None = None,
) -> list[Lot]:
    """The member's live lots, once `points` are known to fit beside the holds on them.

    The caller holds the member account lock, so what it reads here stays true until commit.
    """
    lots, held = await repository.live_lots_and_held(
        conn, member_id, currency, ctx.now, excluding_hold_id=excluding_hold_id
    )
    available = sum(lot.remaining_points for lot in lots) - held
    if points > available:
        raise refuse_insufficient(points, available)
    return lots


async def consume(
    conn: asyncpg.Connection, ctx: Context, draft: writer.Draft, lots: list[Lot], points: int
) -> None:
    """Add to `draft` the consumption of `points` from `lots` and the obligations it makes."""
    takes = plan_consumption(lots, points, ctx.now)
    if len(takes) > LOTS_PER_REDEMPTION_MAX:
        raise ValidationFailed("this redemption spans too many lots; redeem in parts")
    draft.consumed += takes
    draft.postings += consumption_postings(draft.member_id, draft.currency, takes)
    if draft.currency != ALLIANCE_POINT:
        return
    obligations = obligations_for(
        takes,
        acceptor_id=ctx.merchant.merchant_id,
        point_value=ctx.settings.point_value,
        fee_rate=ctx.settings.fee_rate,
    )
    draft.obligations += obligations
    await exposure.debit(
        conn,
        {
            obligation.debtor_id: exposure.rise_on_consumption(obligation, ctx.settings.point_value)
            for obligation in obligations
        },
        ctx.now,
    )


async def redeem(
    conn: asyncpg.Connection,
    ctx: Context,
    *,
    member_id: str,
    points: int,
    reference: str,
    currency: str = ALLIANCE_POINT,
) -> dict[str, Any]:
    check_points(points)
    check_reference(reference)
    await lock_member(conn, member_id, currency)
    lots = await spendable_lots(conn, ctx, member_id=member_id, currency=currency, points=points)
    draft = writer.Draft(
        kind="redemption",
        member_id=member_id,
        currency=currency,
        merchant_id=ctx.merchant.merchant_id,
        points=points,
        reference=reference,
    )
    await consume(conn, ctx, draft, lots, points)
    return await writer.write(conn, draft, now=ctx.now)


async def hold(
    conn: asyncpg.Connection,
    ctx: Context,
    *,
    member_id: str,
    points: int,
    reference: str,
    expires_in_seconds: int | None,
    currency: str = ALLIANCE_POINT,
) -> dict[str, Any]:
    check_points(points)
    check_reference(reference)
    lifetime_s = ctx.settings.hold_lifetime_s if expires_in_seconds is None else expires_in_seconds
    if isinstance(lifetime_s, bool) or not 1 <= lifetime_s <= HOLD_LIFETIME_S_MAX:
        raise ValidationFailed(
            f"expires_in_seconds must be between 1 and {HOLD_LIFETIME_S_MAX}",
            fields={"expires_in_seconds": "out of range"},
        )
    await lock_member(conn, member_id, currency)
    available = await repository.available_points(conn, member_id, currency, ctx.now)
    if points > available:
        raise refuse_insufficient(points, available)
    row = HoldRow(
        member_id=member_id,
        hold_id=new_id("hld"),
        merchant_id=ctx.merchant.merchant_id,
        currency=currency,
        points=points,
        reference=reference,
        status="active",
        created_at=ctx.now,
        expires_at=ctx.now + timedelta(seconds=lifetime_s),
        closed_at=None,
        captured_points=None,
        capture_transaction_id=None,
    )
    await repository.insert_hold(conn, row)
    return hold_view(row, now=ctx.now)


async def _active_hold(conn: asyncpg.Connection, ctx: Context, hold_id: str) -> HoldRow:
    """The merchant's own hold, locked (member account first, as every writer does)."""
    located = await repository.hold_member(conn, hold_id)
    if located is None:
        raise NotFound("no such hold")
    member_id, currency = located
    await repository.lock_member_account(conn, member_id, currency)
    found = await repository.hold_for_update(conn, member_id, hold_id)
    if found.merchant_id != ctx.merchant.merchant_id:
        raise NotFound("no such hold")
    if found.status != "active" or found.expires_at <= ctx.now:
        status = "lapsed" if found.status == "active" else found.status
        raise HoldNotActive(f"the hold is {status}", hold_status=status)
    return found


async def capture(
    conn: asyncpg.Connection, ctx: Context, *, hold_id: str, points: int | None
) -> dict[str, Any]:
    found = await _active_hold(conn, ctx, hold_id)
    captured = found.points if points is None else points
    check_points(captured)
    if captured > found.points:
        raise InsufficientPoints(
            f"the hold reserves {found.points} points, {captured} asked", held=found.points
        )
    lots = await spendable_lots(
        conn,
        ctx,
        member_id=found.member_id,
        currency=found.currency,
        points=captured,
        excluding_hold_id=hold_id,
    )
    draft = writer.Draft(
        kind="redemption",
        member_id=found.member_id,
        currency=found.currency,
        merchant_id=ctx.merchant.merchant_id,
        points=captured,
        reference=found.reference,
        extra={"hold_id": hold_id},
    )
    await consume(conn, ctx, draft, lots, captured)
    # Close the hold before the transaction row is written, so balance_after sees it released.
    await repository.close_hold(
        conn,
        member_id=found.member_id,
        hold_id=hold_id,
        status="captured",
        closed_at=ctx.now,
        captured_points=captured,
        capture_transaction_id=draft.transaction_id,
    )
    return await writer.write(conn, draft, now=ctx.now)


async def void(conn: asyncpg.Connection, ctx: Context, *, hold_id: str) -> dict[str, Any]:
    found = await _active_hold(conn, ctx, hold_id)
    await repository.close_hold(
        conn, member_id=found.member_id, hold_id=hold_id, status="voided", closed_at=ctx.now
    )
    voided = await repository.hold_for_update(conn, found.member_id, hold_id)
    return hold_view(voided, now=ctx.now)
