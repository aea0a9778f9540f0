"""Multilateral netting with the alliance as central counterparty. Pure; no I/O.

Each obligation (debtor B, creditor A, gross, fee) is a receivable of A and a payable of B; the
alliance keeps the fee out of A's receivable. Per merchant:

    net = receivable - payable - fees      (positive: the alliance pays the merchant)

Every gross is counted once as a receivable and once as a payable, so over a period
sum(net) + sum(fees) = 0 exactly, in integers. Rounding happened once, per obligation, when it
was made (exchange/rounding.py); netting adds and subtracts integers and never rounds. What the
per-obligation fee rounding gained or lost against the exact rate is the alliance's rounding
residue, reported per run (`fee_residue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class PairTotal:
    """Claimed obligations of one (debtor, creditor) pair, under one fee rate."""

    debtor_id: str
    creditor_id: str
    points: int
    gross: int
    fee: int
    obligations: int
    fee_rate: Decimal


@dataclass(frozen=True, slots=True)
class Activity:
    """A merchant's own transactions in the period."""

    issued_points: int = 0
    redeemed_points: int = 0
    reversed_points: int = 0
    transactions: int = 0


@dataclass(slots=True)
class Line:
    counterparty_id: str
    accepted_points: int = 0
    redeemed_elsewhere_points: int = 0
    receivable: int = 0
    payable: int = 0
    fees: int = 0
    obligations: int = 0

    @property
    def net(self) -> int:
        return self.receivable - self.payable - self.fees


@dataclass(slots=True)
class MerchantNet:
    merchant_id: str
    activity: Activity
    lines: dict[str, Line] = field(default_factory=dict)

    @property
    def receivable(self) -> int:
        return sum(line.receivable for line in self.lines.values())

    @property
    def payable(self) -> int:
        return sum(line.payable for line in self.lines.values())

    @property
    def fees(self) -> int:
        return sum(line.fees for line in self.lines.values())

    @property
    def net(self) -> int:
        return self.receivable - self.payable - self.fees

    @property
    def direction(self) -> str:
        return "receive" if self.net > 0 else "pay" if self.net < 0 else "none"

    def line(self, counterparty_id: str) -> Line:
        return self.lines.setdefault(counterparty_id, Line(counterparty_id))


@dataclass(frozen=True, slots=True)
class Netting:
    merchants: Sequence[MerchantNet]
    obligations: int
    gross_total: int
    fee_total: int
    fee_residue: Decimal

    @property
    def nets_total(self) -> int:
        return sum(merchant.net for merchant in self.merchants)


def net(pairs: Iterable[PairTotal], activity: Mapping[str, Activity]) -> Netting:
    """Statements' figures for every merchant with obligations or activity in the period."""
    merchants: dict[str, MerchantNet] = {}

    def merchant(merchant_id: str) -> MerchantNet:
        if merchant_id not in merchants:
            merchants[merchant_id] = MerchantNet(merchant_id, activity.get(merchant_id, Activity()))
        return merchants[merchant_id]

    count = gross_total = fee_total = 0
    exact_fees = Decimal(0)
    for pair in pairs:
        assert pair.debtor_id != pair.creditor_id, "own points make no obligation"
        creditor_line = merchant(pair.creditor_id).line(pair.debtor_id)
        creditor_line.accepted_points += pair.points
        creditor_line.receivable += pair.gross
        creditor_line.fees += pair.fee
        creditor_line.obligations += pair.obligations
        debtor_line = merchant(pair.debtor_id).line(pair.creditor_id)
        debtor_line.redeemed_elsewhere_points += pair.points
        debtor_line.payable += pair.gross
        debtor_line.obligations += pair.obligations
        count += pair.obligations
        gross_total += pair.gross
        fee_total += pair.fee
        exact_fees += Decimal(pair.gross) * pair.fee_rate
    for merchant_id in activity:
        merchant(merchant_id)

    ordered = [merchants[merchant_id] for merchant_id in sorted(merchants)]
    netting = Netting(
        merchants=ordered,
        obligations=count,
        gross_total=gross_total,
        fee_total=fee_total,
        fee_residue=Decimal(fee_total) - exact_fees,
    )
    # The alliance is a central counterparty: what it collects and pays, plus its fees, is zero.
    assert netting.nets_total + netting.fee_total == 0, "nets plus fees sum to zero"
    assert sum(m.receivable for m in ordered) == sum(m.payable for m in ordered) == gross_total
    return netting
