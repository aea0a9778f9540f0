"""Writing one ledger transaction: postings, lot changes, obligations, then the transaction row.

The transaction row goes last (its foreign keys are deferred) because it carries the member's
available balance right after the change, which its insert computes from everything else written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from core.ids import new_id
from exchange import repository
from exchange.ledger import ObligationDraft, Posting, Take, check_balanced
from exchange.views import transaction_view


@dataclass(slots=True)
class Draft:
    """A transaction being assembled by an operation before it is written."""

    kind: str
    member_id: str
    currency: str
    merchant_id: str | None
    points: int
    reference: str | None
    transaction_id: str = field(default_factory=lambda: new_id("txn"))
    postings: list[Posting] = field(default_factory=list)
    consumed: list[Take] = field(default_factory=list)
    restored: list[Take] = field(default_factory=list)
    obligations: list[ObligationDraft] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def settlement_value(self) -> int:
        """What the acting merchant receives from the obligations this transaction makes."""
        return sum(
            draft.settlement_value
            for draft in self.obligations
            if draft.creditor_id == self.merchant_id
        )


async def write(conn: asyncpg.Connection, draft: Draft, *, now: Any) -> dict[str, Any]:
    """Persist `draft` and return the transaction as merchants see it."""
    check_balanced(draft.postings)
    if draft.consumed:
        await repository.change_lots(conn, draft.member_id, draft.consumed, -1)
    if draft.restored:
        await repository.change_lots(conn, draft.member_id, draft.restored, +1)
    if draft.postings:
        await repository.insert_postings(
            conn, draft.member_id, draft.transaction_id, draft.postings
        )
    if draft.obligations:
        await repository.insert_obligations(
            conn,
            member_id=draft.member_id,
            transaction_id=draft.transaction_id,
            drafts=draft.obligations,
            now=now,
        )
    row = transaction_row(draft, now=now)
    row["balance_after"] = await repository.insert_transaction(conn, row)
    return transaction_view(row)


def transaction_row(draft: Draft, *, now: Any) -> dict[str, Any]:
    """The `transactions` row of `draft`, but for its `balance_after`."""
    row: dict[str, Any] = {
        "member_id": draft.member_id,
        "transaction_id": draft.transaction_id,
        "kind": draft.kind,
        "merchant_id": draft.merchant_id,
        "currency": draft.currency,
        "points": draft.points,
        "reference": draft.reference,
        "created_at": now,
        "settlement_value": draft.settlement_value,
        "reverses": None,
        "requested_points": None,
        "shortfall_points": None,
        "hold_id": None,
        "target_currency": None,
        "target_points": None,
    }
    row.update(draft.extra)
    return row
