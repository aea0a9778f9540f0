"""An in-memory reference model of the points ledger, for the model-based test (RELIABILITY L2).

Written from docs (DOMAIN.md, "The ledger" and "Liabilities"), not from the ledger's code: it
imports nothing from `exchange`, so a rule the ledger gets wrong is not copied here.

Where DOMAIN.md leaves a choice to the implementation, the model follows the ledger's *documented*
choice (its docstrings), re-implemented here:
- a partial reversal of a redemption gives back the lots it consumed, last consumed first;
- a reversal of an issuance takes back only what is left in the issuance's own lot, and, while the
  lot is unexpired, not more than the member has available (points reserved by holds stay); the
  rest is the issuer's shortfall, and the requested points (shortfall included) count against the
  original;
- money rounding is half-to-even to the minor unit, and a partial cancellation of an obligation is
  cumulative: after each reversal the total cancelled is the original value times the share
  reversed so far.

Every operation either raises `Refused(code)` before it changes anything, or changes the model
and returns the fields of the response it expects.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

# The alliance settings the tests run under (tests/factories.DEFAULT_SETTINGS, before 2031).
POINT_VALUE = Fraction(1)  # minor units per point
FEE_RATE = Fraction(5, 100)
POINTS_LIFETIME = timedelta(days=365)
HOLD_LIFETIME = timedelta(seconds=900)
IDEMPOTENCY_RETENTION = timedelta(days=7)


class Refused(Exception):
    """The model's prediction that the ledger refuses the operation with this code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def half_even(value: Fraction) -> int:
    """Round to the nearest integer, ties to even (Fraction's own rounding, spelled out)."""
    floor = value.numerator // value.denominator
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        return floor + 1
    return floor


def money(points: int) -> int:
    return half_even(points * POINT_VALUE)


def fee(gross: int) -> int:
    return half_even(gross * FEE_RATE)


@dataclass
class Lot:
    issuance_id: str
    seq: int  # creation order: lot ids are handed out in this order
    member: str
    issuer: str
    issued: int
    remaining: int
    issued_at: datetime
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def live(self, now: datetime) -> bool:
        return self.remaining > 0 and not self.expired(now)


@dataclass
class Hold:
    hold_id: str
    member: str
    merchant: str
    points: int
    expires_at: datetime
    status: str = "active"  # as stored: active until captured, voided, or lapsed by the job

    def active(self, now: datetime) -> bool:
        return self.status == "active" and self.expires_at > now


@dataclass
class Obligation:
    debtor: str
    creditor: str
    points: int
    gross: int
    fee: int
    cancelled_points: int = 0
    cancelled_gross: int = 0
    cancelled_fee: int = 0


@dataclass
class Issuance:
    transaction_id: str
    merchant: str
    member: str
    points: int
    reversed: int = 0  # requested points of its reversals, shortfalls included


@dataclass
class Redemption:
    transaction_id: str
    merchant: str
    member: str
    points: int
    takes: list[tuple[str, int]]  # (lot's issuance id, points), in consumption order
    obligations: dict[str, Obligation]  # by debtor
    restored: Counter[str] = field(default_factory=Counter)
    reversed: int = 0


class Model:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.lots: dict[str, Lot] = {}  # by issuance transaction id
        self.holds: dict[str, Hold] = {}
        self.issuances: dict[str, Issuance] = {}
        self.redemptions: dict[str, Redemption] = {}
        self.reversals: dict[str, str] = {}  # reversal transaction id -> acting merchant
        # Net obligations per (debtor, creditor): [points, gross value, fee].
        self.net_obligations: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        self.transactions: Counter[tuple[str, str]] = Counter()  # (member, kind)

    # --- reads ---------------------------------------------------------------------------

    def member_lots(self, member: str) -> list[Lot]:
        return [lot for lot in self.lots.values() if lot.member == member]

    def held(self, member: str) -> int:
        return sum(
            hold.points
            for hold in self.holds.values()
            if hold.member == member and hold.active(self.now)
        )

    def live_points(self, member: str) -> int:
        return sum(lot.remaining for lot in self.member_lots(member) if lot.live(self.now))

    def available(self, member: str) -> int:
        """Unexpired lots' remaining points less active holds, never below zero (a hold may
        outlive the lots it reserved: docs/ledger.md)."""
        return max(self.live_points(member) - self.held(member), 0)

    def next_expiry(self, member: str) -> tuple[int, datetime] | None:
        upcoming = [
            lot for lot in self.member_lots(member) if lot.live(self.now) and lot.expires_at
        ]
        if not upcoming:
            return None
        at = min(lot.expires_at for lot in upcoming if lot.expires_at)
        return sum(lot.remaining for lot in upcoming if lot.expires_at == at), at

    def outstanding(self, issuer: str) -> int:
        """Points of the issuer's lots not yet spent, clawed back or written off."""
        return sum(lot.remaining for lot in self.lots.values() if lot.issuer == issuer)

    def expiry_due(self) -> bool:
        """Whether the expiry job has anything to write off or to lapse."""
        return any(
            lot.expired(self.now) and lot.remaining > 0 for lot in self.lots.values()
        ) or any(
            hold.status == "active" and hold.expires_at <= self.now for hold in self.holds.values()
        )

    def future_instants(self) -> list[datetime]:
        """Instants at which something lapses: lot expiries and hold expiries still ahead."""
        instants = {lot.expires_at for lot in self.lots.values() if lot.expires_at}
        instants |= {hold.expires_at for hold in self.holds.values() if hold.status == "active"}
        return sorted(instant for instant in instants if instant > self.now)

    # --- operations ----------------------------------------------------------------------

    def issue(
        self,
        *,
        merchant: str,
        member: str,
        points: int,
        expires_at: datetime | None,
        transaction_id: str,
    ) -> dict[str, Any]:
        if expires_at is not None and expires_at <= self.now:
            raise Refused("validation_error")
        self.lots[transaction_id] = Lot(
            issuance_id=transaction_id,
            seq=len(self.lots),
            member=member,
            issuer=merchant,
            issued=points,
            remaining=points,
            issued_at=self.now,
            expires_at=expires_at if expires_at is not None else self.now + POINTS_LIFETIME,
        )
        self.issuances[transaction_id] = Issuance(transaction_id, merchant, member, points)
        self.transactions[member, "issuance"] += 1
        return {
            "kind": "issuance",
            "merchant_id": merchant,
            "member_id": member,
            "points": points,
            "settlement_value": 0,
            "balance_after": self.available(member),
            "reverses": None,
        }

    def _consume(self, merchant: str, member: str, points: int, transaction_id: str) -> int:
        """Take `points` from the member's unexpired lots in the fixed order; make obligations.

        Returns what the acceptor will receive (the obligations' value less the fee).
        """
        order = sorted(
            (lot for lot in self.member_lots(member) if lot.live(self.now)),
            key=lambda lot: (
                lot.expires_at is None,  # never-expiring lots last
                lot.expires_at or datetime.max.replace(tzinfo=self.now.tzinfo),
                lot.issued_at,
                lot.seq,
            ),
        )
        takes: list[tuple[str, int]] = []
        left = points
        for lot in order:
            if left == 0:
                break
            taken = min(left, lot.remaining)
            lot.remaining -= taken
            takes.append((lot.issuance_id, taken))
            left -= taken
        assert left == 0, "the model let a redemption past the available balance"
        foreign: Counter[str] = Counter()
        for lot_id, taken in takes:
            issuer = self.lots[lot_id].issuer
            if issuer != merchant:
                foreign[issuer] += taken
        obligations: dict[str, Obligation] = {}
        for debtor, debtor_points in foreign.items():
            gross = money(debtor_points)
            obligations[debtor] = Obligation(debtor, merchant, debtor_points, gross, fee(gross))
            net = self.net_obligations[debtor, merchant]
            net[0] += debtor_points
            net[1] += gross
            net[2] += obligations[debtor].fee
        self.redemptions[transaction_id] = Redemption(
            transaction_id, merchant, member, points, takes, obligations
        )
        self.transactions[member, "redemption"] += 1
        return sum(obligation.gross - obligation.fee for obligation in obligations.values())

    def redeem(
        self, *, merchant: str, member: str, points: int, transaction_id: str
    ) -> dict[str, Any]:
        if points > self.available(member):
            raise Refused("insufficient_points")
        value = self._consume(merchant, member, points, transaction_id)
        return {
            "kind": "redemption",
            "merchant_id": merchant,
            "member_id": member,
            "points": points,
            "settlement_value": value,
            "balance_after": self.available(member),
            "reverses": None,
        }

    def hold(
        self, *, merchant: str, member: str, points: int, lifetime_s: int | None, hold_id: str
    ) -> dict[str, Any]:
        if points > self.available(member):
            raise Refused("insufficient_points")
        lifetime = HOLD_LIFETIME if lifetime_s is None else timedelta(seconds=lifetime_s)
        self.holds[hold_id] = Hold(hold_id, member, merchant, points, self.now + lifetime)
        return {
            "status": "active",
            "merchant_id": merchant,
            "member_id": member,
            "points": points,
        }

    def _own_active_hold(self, merchant: str, hold_id: str) -> Hold:
        hold = self.holds.get(hold_id)
        if hold is None or hold.merchant != merchant:
            raise Refused("not_found")  # another merchant's hold is a missing one
        if not hold.active(self.now):
            raise Refused("hold_not_active")
        return hold

    def capture(
        self, *, merchant: str, hold_id: str, points: int | None, transaction_id: str
    ) -> dict[str, Any]:
        hold = self._own_active_hold(merchant, hold_id)
        captured = hold.points if points is None else points
        if captured > hold.points:
            raise Refused("insufficient_points")
        # The hold's own reservation is what is being captured; other holds stay reserved.
        if captured > self.live_points(hold.member) - (self.held(hold.member) - hold.points):
            raise Refused("insufficient_points")
        hold.status = "captured"  # the rest of the hold is released
        value = self._consume(merchant, hold.member, captured, transaction_id)
        return {
            "kind": "redemption",
            "merchant_id": merchant,
            "member_id": hold.member,
            "points": captured,
            "settlement_value": value,
            "balance_after": self.available(hold.member),
            "hold_id": hold_id,
        }

    def void(self, *, merchant: str, hold_id: str) -> dict[str, Any]:
        hold = self._own_active_hold(merchant, hold_id)
        hold.status = "voided"
        return {"status": "voided", "points": hold.points, "hold_id": hold_id}

    def reverse(
        self, *, merchant: str, original_id: str, points: int | None, transaction_id: str
    ) -> dict[str, Any]:
        original: Issuance | Redemption | None = self.issuances.get(
            original_id
        ) or self.redemptions.get(original_id)
        if original is None:
            if self.reversals.get(original_id) == merchant:
                raise Refused("validation_error")  # a reversal is not reversible
            raise Refused("not_found")
        if original.merchant != merchant:
            raise Refused("not_found")  # another merchant's transaction is a missing one
        requested = original.points - original.reversed if points is None else points
        if requested <= 0 or original.reversed + requested > original.points:
            raise Refused("reversal_exceeds_original")
        original.reversed += requested
        member = original.member
        self.reversals[transaction_id] = merchant
        self.transactions[member, "reversal"] += 1
        expected: dict[str, Any] = {
            "kind": "reversal",
            "merchant_id": merchant,
            "member_id": member,
            "reverses": original_id,
            "requested_points": requested,
        }
        if isinstance(original, Issuance):
            lot = self.lots[original_id]
            takeable = lot.remaining
            if not lot.expired(self.now):
                takeable = min(takeable, self.available(member))
            taken = min(requested, takeable)
            lot.remaining -= taken
            expected |= {
                "points": taken,
                "shortfall_points": requested - taken,
                "settlement_value": 0,
            }
        else:
            expected |= {
                "points": requested,
                "settlement_value": self._restore(original, requested),
            }
        expected["balance_after"] = self.available(member)
        return expected

    def _restore(self, redemption: Redemption, points: int) -> int:
        """Give back the very lots the redemption took, last taken first; cancel obligations.

        Returns the change in what the acceptor receives (negative).
        """
        left = points
        by_debtor: Counter[str] = Counter()
        for lot_id, taken in reversed(redemption.takes):
            if left == 0:
                break
            given = min(left, taken - redemption.restored[lot_id])
            if given <= 0:
                continue
            redemption.restored[lot_id] += given
            lot = self.lots[lot_id]
            lot.remaining += given
            if lot.issuer != redemption.merchant:
                by_debtor[lot.issuer] += given
            left -= given
        assert left == 0, "the model restored more than the redemption took"
        value = 0
        for debtor, debtor_points in by_debtor.items():
            original = redemption.obligations[debtor]
            cancelled = original.cancelled_points + debtor_points
            share = Fraction(cancelled, original.points)
            gross = half_even(original.gross * share) - original.cancelled_gross
            cancelled_fee = half_even(original.fee * share) - original.cancelled_fee
            original.cancelled_points = cancelled
            original.cancelled_gross += gross
            original.cancelled_fee += cancelled_fee
            net = self.net_obligations[debtor, original.creditor]
            net[0] -= debtor_points
            net[1] -= gross
            net[2] -= cancelled_fee
            value -= gross - cancelled_fee
        return value

    def expire(self) -> None:
        """The expiry job: write off every expired lot with points left; lapse holds."""
        written_off: set[str] = set()
        for lot in self.lots.values():
            if lot.expired(self.now) and lot.remaining > 0:
                lot.remaining = 0
                written_off.add(lot.member)
        for member in written_off:
            self.transactions[member, "expiry"] += 1
        for hold in self.holds.values():
            if hold.status == "active" and hold.expires_at <= self.now:
                hold.status = "lapsed"
