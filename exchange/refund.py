"""Reversals (refunds) of issuances and redemptions, in full or in parts.

Policy, for an issuance whose points were partly spent already: the reversal takes back only what
is left in the issuance's own lot (and not reserved by a hold); the rest is the issuer's shortfall,
recorded on the reversal (`shortfall_points`). The spent points stay spent, the obligations they
made stand, so no point is created or destroyed and no balance goes below zero. The requested
points, shortfall included, count against the original: reversals never add up to more than it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import asyncpg

from core.errors import NotFound, ValidationFailed
from exchange import exposure, repository, writer
from exchange.context import Context, check_points, check_reference
from exchange.errors import ReversalExceedsOriginal
from exchange.ledger import (
    ObligationDraft,
    Take,
    cancellations_for,
    consumption_postings,
    plan_clawback,
    plan_restoration,
    restoration_postings,
)
from merchants.models import ALLIANCE_POINT

REVERSIBLE_KINDS = ("issuance", "redemption")


async def reverse(
    conn: asyncpg.Connection,
    ctx: Context,
    *,
    transaction_id: str,
    points: int | None,
    reference: str,
) -> dict[str, Any]:
    check_reference(reference)
    if points is not None:
        check_points(points)
    original = await repository.transaction_by_id(conn, transaction_id)
    if original is None or original["merchant_id"] != ctx.merchant.merchant_id:
        raise NotFound("no such transaction")
    if original["kind"] not in REVERSIBLE_KINDS:
        raise ValidationFailed(
            f"a {original['kind']} cannot be reversed", fields={"transaction_id": "not reversible"}
        )
    member_id, currency = original["member_id"], original["currency"]
    await repository.lock_member_account(conn, member_id, currency)
    already = await repository.reversed_points(conn, member_id, transaction_id)
    requested = original["points"] - already if points is None else points
    if requested <= 0 or already + requested > original["points"]:
        raise ReversalExceedsOriginal(
            f"{already} of {original['points']} points already reversed",
            reversed_points=already,
            original_points=original["points"],
        )
    draft = writer.Draft(
        kind="reversal",
        member_id=member_id,
        currency=currency,
        merchant_id=ctx.merchant.merchant_id,
        points=requested,
        reference=reference,
        extra={"reverses": transaction_id, "requested_points": requested},
    )
    if original["kind"] == "issuance":
        await _claw_back(conn, ctx, draft, requested)
    else:
        await _restore(conn, ctx, draft, requested)
    return await writer.write(conn, draft, now=ctx.now)


async def _claw_back(
    conn: asyncpg.Connection, ctx: Context, draft: writer.Draft, requested: int
) -> None:
    original_id = draft.extra["reverses"]
    lot = await repository.lot_of_transaction(conn, draft.member_id, original_id)
    available = await repository.available_points(conn, draft.member_id, draft.currency, ctx.now)
    clawback = plan_clawback(
        requested_points=requested, lot=lot, member_available_points=available, now=ctx.now
    )
    draft.points = clawback.taken_points
    draft.extra["shortfall_points"] = clawback.shortfall_points
    if clawback.taken_points > 0:
        take = Take(lot.lot_id, lot.issuer_id, clawback.taken_points)
        draft.consumed.append(take)
        draft.postings += consumption_postings(draft.member_id, draft.currency, [take])


async def _restore(
    conn: asyncpg.Connection, ctx: Context, draft: writer.Draft, requested: int
) -> None:
    """Give back the very lots the redemption consumed, and cancel that share of its obligations."""
    original_id = draft.extra["reverses"]
    consumed = await repository.consumed_takes(conn, draft.member_id, original_id)
    restored = await repository.restored_by_lot(conn, draft.member_id, original_id)
    plan = plan_restoration(consumed, restored, requested)
    draft.restored += plan
    draft.postings += restoration_postings(draft.member_id, draft.currency, plan)
    originals = await repository.original_obligations(conn, draft.member_id, original_id)
    cancellations = cancellations_for(originals, plan)
    draft.obligations += cancellations
    if draft.currency == ALLIANCE_POINT:
        await exposure.debit(conn, _exposure_rises(ctx, plan, cancellations), ctx.now)


def _exposure_rises(
    ctx: Context, restored: list[Take], cancellations: list[ObligationDraft]
) -> dict[str, int]:
    """What a redemption reversal can add to exposures: the issuers get outstanding points back
    (less the payables cancelled), and the acceptor loses receivables."""
    restored_by_issuer: dict[str, int] = defaultdict(int)
    for take in restored:
        restored_by_issuer[take.issuer_id] += take.points
    cancelled_gross: dict[str, int] = defaultdict(int)
    for cancellation in cancellations:
        cancelled_gross[cancellation.debtor_id] += -cancellation.gross_value
    rises: dict[str, int] = defaultdict(int)
    for issuer_id, points in restored_by_issuer.items():
        rises[issuer_id] += exposure.rise_on_restoration(
            points, cancelled_gross[issuer_id], ctx.settings.point_value
        )
    rises[ctx.merchant.merchant_id] += -sum(c.settlement_value for c in cancellations)
    return dict(rises)
