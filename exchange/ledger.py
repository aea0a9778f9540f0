"""The ledger's rules as pure functions over plain values: no database, no framework.

Accounts, per point currency:
- `member:<member_id>`  the points a member holds; every posting to it names the lot it moves;
- `issuer:<merchant_id>` the issuer's side: its balance is minus the issuer's outstanding points.
Every transaction's postings sum to zero per currency (checked here, and again by the database).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from core.errors import InvariantViolation
from exchange.rounding import fee_of, money_value, proportional_share


def member_account(member_id: str) -> str:
    return f"member:{member_id}"


def issuer_account(merchant_id: str) -> str:
    return f"issuer:{merchant_id}"


@dataclass(frozen=True, slots=True)
class Lot:
    lot_id: int
    issuer_id: str
    remaining_points: int
    issued_at: datetime
    expires_at: datetime | None

    def is_live(self, now: datetime) -> bool:
        """Unexpired with points left; expired points are unavailable from the instant of expiry."""
        return self.remaining_points > 0 and (self.expires_at is None or self.expires_at > now)


def consumption_order(lot: Lot) -> tuple[bool, datetime, datetime, int]:
    """Soonest expiry first (never-expiring last), then oldest issue, then lowest lot id."""
    return (lot.expires_at is None, lot.expires_at or lot.issued_at, lot.issued_at, lot.lot_id)


@dataclass(frozen=True, slots=True)
class Take:
    """Points moved out of (or, in a reversal, back into) one lot."""

    lot_id: int
    issuer_id: str
    points: int


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    currency: str
    amount: int
    lot_id: int | None = None


@dataclass(frozen=True, slots=True)
class ObligationDraft:
    debtor_id: str
    creditor_id: str
    points: int
    gross_value: int
    fee: int
    reverses_obligation_id: int | None = None

    @property
    def settlement_value(self) -> int:
        """What the creditor receives: the value less the alliance's fee."""
        return self.gross_value - self.fee


def available_points(lots: Iterable[Lot], *, held_points: int, now: datetime) -> int:
    return sum(lot.remaining_points for lot in lots if lot.is_live(now)) - held_points


def plan_consumption(lots: Sequence[Lot], points: int, now: datetime) -> list[Take]:
    """Take `points` from live lots in consumption order. The caller has checked availability."""
    if points <= 0:
        raise InvariantViolation(f"consumption of {points} points")
    takes: list[Take] = []
    left = points
    for lot in sorted((lot for lot in lots if lot.is_live(now)), key=consumption_order):
        if left == 0:
            break
        taken = min(left, lot.remaining_points)
        takes.append(Take(lot.lot_id, lot.issuer_id, taken))
        left -= taken
    if left != 0:
        raise InvariantViolation(f"{left} points short after availability check")
    return takes


def plan_restoration(consumed: Sequence[Take], restored: dict[int, int], points: int) -> list[Take]:
    """Which lots a partial reversal of a redemption gives back: the last consumed first.

    `consumed` is the redemption's takes in consumption order; `restored` the points earlier
    reversals already gave back per lot. Restoring last-consumed first means that a full reversal,
    in any number of parts, leaves the member's lots exactly as before the redemption.
    """
    plan: list[Take] = []
    left = points
    for take in reversed(consumed):
        if left == 0:
            break
        open_points = take.points - restored.get(take.lot_id, 0)
        if open_points <= 0:
            continue
        given = min(left, open_points)
        plan.append(Take(take.lot_id, take.issuer_id, given))
        left -= given
    if left != 0:
        raise InvariantViolation(f"{left} points beyond what the redemption consumed")
    return plan


@dataclass(frozen=True, slots=True)
class Clawback:
    """An issuance reversal: what comes back out of the lot, and what the issuer bears."""

    taken_points: int
    shortfall_points: int


def plan_clawback(
    *, requested_points: int, lot: Lot, member_available_points: int, now: datetime
) -> Clawback:
    """Take back up to `requested_points` from the issuance's own lot, never from other lots.

    Points already spent (or written off, or reserved by an active hold) stay where they are: the
    issuer bears that shortfall, and its obligations for points redeemed elsewhere stand. So no
    point is created or destroyed and no balance goes below zero.
    """
    takeable = lot.remaining_points
    if lot.is_live(now):
        takeable = min(takeable, max(member_available_points, 0))
    taken = min(requested_points, takeable)
    return Clawback(taken_points=taken, shortfall_points=requested_points - taken)


def obligations_for(
    takes: Iterable[Take], *, acceptor_id: str, point_value: Decimal, fee_rate: Decimal
) -> list[ObligationDraft]:
    """One obligation per foreign issuer: it owes the acceptor its points' value less the fee."""
    points_by_issuer: dict[str, int] = defaultdict(int)
    for take in takes:
        if take.issuer_id != acceptor_id:
            points_by_issuer[take.issuer_id] += take.points
    drafts = []
    for issuer_id in sorted(points_by_issuer):
        points = points_by_issuer[issuer_id]
        gross = money_value(points, point_value)
        drafts.append(
            ObligationDraft(issuer_id, acceptor_id, points, gross, fee_of(gross, fee_rate))
        )
    return drafts


@dataclass(frozen=True, slots=True)
class OriginalObligation:
    obligation_id: int
    debtor_id: str
    creditor_id: str
    points: int
    gross_value: int
    fee: int
    cancelled_points: int
    cancelled_gross_value: int
    cancelled_fee: int


def cancellations_for(
    originals: Iterable[OriginalObligation], restored: Iterable[Take]
) -> list[ObligationDraft]:
    """Negative obligations that cancel the share of each original a reversal gives back.

    Cumulative rounding: after the reversal, the total cancelled is the original's value times the
    total share reversed so far, so parts always add up to exactly the original.
    """
    restored_by_issuer: dict[str, int] = defaultdict(int)
    for take in restored:
        restored_by_issuer[take.issuer_id] += take.points
    drafts = []
    for original in originals:
        points = restored_by_issuer.get(original.debtor_id, 0)
        if points == 0:
            continue
        cancelled = original.cancelled_points + points
        if cancelled > original.points:
            raise InvariantViolation(f"obligation {original.obligation_id} over-cancelled")
        gross = proportional_share(original.gross_value, cancelled, original.points)
        fee = proportional_share(original.fee, cancelled, original.points)
        drafts.append(
            ObligationDraft(
                debtor_id=original.debtor_id,
                creditor_id=original.creditor_id,
                points=-points,
                gross_value=-(gross - original.cancelled_gross_value),
                fee=-(fee - original.cancelled_fee),
                reverses_obligation_id=original.obligation_id,
            )
        )
    return drafts


def consumption_postings(member_id: str, currency: str, takes: Iterable[Take]) -> list[Posting]:
    """Points leave the member's lots and return to each lot's issuer (its liability ends)."""
    postings = []
    for take in takes:
        postings.append(Posting(member_account(member_id), currency, -take.points, take.lot_id))
        postings.append(Posting(issuer_account(take.issuer_id), currency, take.points))
    return postings


def restoration_postings(member_id: str, currency: str, takes: Iterable[Take]) -> list[Posting]:
    postings = []
    for take in takes:
        postings.append(Posting(member_account(member_id), currency, take.points, take.lot_id))
        postings.append(Posting(issuer_account(take.issuer_id), currency, -take.points))
    return postings


def check_balanced(postings: Iterable[Posting]) -> None:
    """Double entry: the postings of one transaction sum to zero in every currency."""
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        if posting.amount == 0:
            raise InvariantViolation("zero posting")
        totals[posting.currency] += posting.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise InvariantViolation(f"unbalanced postings: {unbalanced}")
