"""Writing off expired lots (breakage), and closing lapsed holds.

Expired points are unavailable from the instant of expiry whatever this job has done; the job
turns that fact into postings, ending each issuer's liability for them. One member per database
transaction, so a crash loses nothing and a re-run simply continues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from core.clock import Clock
from core.database import Database
from core.limits import EXPIRY_BATCH_MEMBERS
from exchange import repository, writer
from exchange.ledger import Take, consumption_postings


@dataclass(slots=True)
class ExpiryReport:
    members: int = 0
    lots: int = 0
    points: int = 0
    breakage_by_issuer: dict[tuple[str, str], int] = field(default_factory=dict)
    holds_lapsed: int = 0


async def _expire_member(db: Database, member_id: str, now: datetime, report: ExpiryReport) -> None:
    async with db.transaction() as conn:
        lapsed = await repository.lapsed_lots(conn, member_id, now)
        currencies = sorted({currency for currency, _ in lapsed})
        for currency in currencies:
            await repository.lock_member_account(conn, member_id, currency)
        # Re-read under the locks: a concurrent reversal may have changed the lots.
        lapsed = await repository.lapsed_lots(conn, member_id, now)
        for currency in currencies:
            takes = [
                Take(lot.lot_id, lot.issuer_id, lot.remaining_points)
                for lot_currency, lot in lapsed
                if lot_currency == currency
            ]
            if not takes:
                continue
            draft = writer.Draft(
                kind="expiry",
                member_id=member_id,
                currency=currency,
                merchant_id=None,
                points=sum(take.points for take in takes),
                reference=None,
            )
            draft.consumed += takes
            draft.postings += consumption_postings(member_id, currency, takes)
            await writer.write(conn, draft, now=now)
            for take in takes:
                key = (take.issuer_id, currency)
                report.breakage_by_issuer[key] = report.breakage_by_issuer.get(key, 0) + take.points
            report.lots += len(takes)
            report.points += draft.points
    report.members += 1


async def expire(
    db: Database, clock: Clock, *, on_progress: Callable[[int, int], None] | None = None
) -> ExpiryReport:
    """Write off every lot expired by now; `on_progress(members_done, points_done)` as it goes."""
    now = clock.now()
    report = ExpiryReport()
    while True:
        async with db.connection() as conn:
            members = await repository.members_with_lapsed_lots(conn, now, EXPIRY_BATCH_MEMBERS)
        if not members:
            break
        for member_id in members:
            await _expire_member(db, member_id, now, report)
            if on_progress is not None:
                on_progress(report.members, report.points)
    while True:
        async with db.transaction() as conn:
            lapsed = await repository.lapse_holds(conn, now, EXPIRY_BATCH_MEMBERS)
        report.holds_lapsed += lapsed
        if lapsed == 0:
            break
    return report
