"""Manual adjustments: one operator proposes, a different operator approves, and only then is the
adjustment posted through the ledger as an ordinary transaction.

How an adjustment becomes a ledger transaction (docs/decisions/0020-admin-console.md):

- a **credit** (goodwill) is `Ledger.issue` in the name of the merchant that funds it: a new lot
  with that merchant as issuer, so it is the merchant's liability, counts against its limit, and
  expires like any other points;
- a **reversal** (a correction) is `Ledger.reverse` of the transaction it corrects, for all or
  part of its points, in the name of that transaction's merchant: a wrong issuance is taken back
  (the issuer bears any shortfall, as for any reversal), a wrong redemption gives the member back
  the very lots it consumed and cancels its obligations.

Nothing new is written to the ledger tables by the console; the ledger's own rules (balances,
limits, lot order, reversal caps) apply unchanged. The idempotency key is the adjustment's id, so
an approval retried after a crash replays the first posting instead of posting twice. Approval,
posting and the audit entry are one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from console import audit
from console.errors import (
    AdjustmentDecided,
    AdjustmentNotFound,
    Forbidden,
    FourEyesViolation,
    InvalidInput,
)
from console.limits import REASON_LENGTH_MAX
from console.unit import bound
from console.users import Role, User
from core.clock import Clock
from core.database import Database
from core.errors import DomainError
from core.ids import new_id
from core.limits import POINTS_PER_OPERATION_MAX, REFERENCE_LENGTH_MAX
from exchange.service import Ledger

KINDS = ("credit", "reversal")
REVERSIBLE_KINDS = ("issuance", "redemption")


@dataclass(frozen=True, slots=True)
class Adjustment:
    adjustment_id: str
    kind: str
    merchant_id: str
    member_id: str
    transaction_id: str | None
    points: int
    expires_at: datetime | None
    reason: str
    status: str
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    posted_transaction_id: str | None


def _adjustment(row: asyncpg.Record) -> Adjustment:
    return Adjustment(**{name: row[name] for name in Adjustment.__dataclass_fields__})


def _check_operator(user: User) -> None:
    if not user.role.allows(Role.OPERATOR):
        raise Forbidden("only operators and admins handle adjustments")


def _check_points(points: int) -> None:
    if not 1 <= points <= POINTS_PER_OPERATION_MAX:
        raise InvalidInput(
            f"points must be between 1 and {POINTS_PER_OPERATION_MAX}", field="points"
        )


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not 1 <= len(reason) <= REASON_LENGTH_MAX:
        raise InvalidInput(f"a reason is 1 to {REASON_LENGTH_MAX} characters", field="reason")
    return reason


def ledger_reference(adjustment: Adjustment) -> str:
    """The reference the ledger transaction carries: the adjustment id first, then the reason."""
    return f"adjustment {adjustment.adjustment_id}: {adjustment.reason}"[:REFERENCE_LENGTH_MAX]


async def propose_credit(
    db: Database,
    *,
    merchant_id: str,
    member_id: str,
    points: int,
    reason: str,
    expires_at: datetime | None,
    proposer: User,
    now: datetime,
) -> Adjustment:
    _check_operator(proposer)
    _check_points(points)
    reason = _check_reason(reason)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("the expiry must be in the future", field="expires_at")
    async with db.transaction() as conn:
        if not await conn.fetchval("SELECT 1 FROM merchants WHERE merchant_id = $1", merchant_id):
            raise InvalidInput(f"no merchant {merchant_id}", field="merchant_id")
        if not await conn.fetchval("SELECT 1 FROM members WHERE member_id = $1", member_id):
            raise InvalidInput(f"no member {member_id}", field="member_id")
        return await _insert(
            conn,
            kind="credit",
            merchant_id=merchant_id,
            member_id=member_id,
            transaction_id=None,
            points=points,
            expires_at=expires_at,
            reason=reason,
            proposer=proposer,
            now=now,
        )


async def propose_reversal(
    db: Database,
    *,
    transaction_id: str,
    points: int,
    reason: str,
    proposer: User,
    now: datetime,
) -> Adjustment:
    _check_operator(proposer)
    _check_points(points)
    reason = _check_reason(reason)
    async with db.transaction() as conn:
        original = await conn.fetchrow(
            "SELECT * FROM transactions WHERE transaction_id = $1", transaction_id
        )
        if original is None:
            raise InvalidInput(f"no transaction {transaction_id}", field="transaction_id")
        if original["kind"] not in REVERSIBLE_KINDS:
            raise InvalidInput(
                f"a {original['kind']} cannot be reversed; only issuances and redemptions",
                field="transaction_id",
            )
        if points > original["points"]:
            raise InvalidInput(
                f"the transaction moved {original['points']} points; cannot reverse {points}",
                field="points",
            )
        return await _insert(
            conn,
            kind="reversal",
            merchant_id=original["merchant_id"],
            member_id=original["member_id"],
            transaction_id=transaction_id,
            points=points,
            expires_at=None,
            reason=reason,
            proposer=proposer,
            now=now,
        )


async def _insert(
    conn: asyncpg.Connection, *, proposer: User, now: datetime, **fields: Any
) -> Adjustment:
    row = await conn.fetchrow(
        """INSERT INTO adjustments (adjustment_id, kind, merchant_id, member_id, transaction_id,
                                    points, expires_at, reason, status, proposed_by, proposed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10) RETURNING *""",
        new_id("adj"),
        fields["kind"],
        fields["merchant_id"],
        fields["member_id"],
        fields["transaction_id"],
        fields["points"],
        fields["expires_at"],
        fields["reason"],
        proposer.user_id,
        now,
    )
    adjustment = _adjustment(row)
    await audit.append(
        conn,
        actor=proposer.username,
        action="adjustment.propose",
        target=adjustment.adjustment_id,
        at=now,
        details=_details(adjustment),
    )
    return adjustment


def _details(adjustment: Adjustment) -> dict[str, str | int | None]:
    return {
        "kind": adjustment.kind,
        "merchant_id": adjustment.merchant_id,
        "member_id": adjustment.member_id,
        "transaction_id": adjustment.transaction_id,
        "points": adjustment.points,
        "reason": adjustment.reason,
    }


async def _pending_for_update(
    conn: asyncpg.Connection, adjustment_id: str, decider: User
) -> Adjustment:
    _check_operator(decider)
    row = await conn.fetchrow(
        "SELECT * FROM adjustments WHERE adjustment_id = $1 FOR UPDATE", adjustment_id
    )
    if row is None:
        raise AdjustmentNotFound(f"no adjustment {adjustment_id}")
    adjustment = _adjustment(row)
    if adjustment.status != "pending":
        raise AdjustmentDecided(f"adjustment {adjustment_id} is already {adjustment.status}")
    if adjustment.proposed_by == decider.user_id:
        raise FourEyesViolation(
            "you proposed this adjustment; a different operator must approve or reject it"
        )
    return adjustment


async def approve(db: Database, clock: Clock, *, adjustment_id: str, approver: User) -> Adjustment:
    """Post the adjustment through the ledger and mark it posted, in one transaction.

    A ledger refusal (limit exceeded, points already reversed, merchant suspended) rolls it all
    back and leaves the adjustment pending; the refusal itself is audited.
    """
    now = clock.now()
    try:
        async with db.transaction() as conn:
            adjustment = await _pending_for_update(conn, adjustment_id, approver)
            ledger = Ledger(bound(conn), clock)
            key = f"console-{adjustment.adjustment_id}"
            if adjustment.kind == "credit":
                outcome = await ledger.issue(
                    merchant_id=adjustment.merchant_id,
                    idempotency_key=key,
                    member_id=adjustment.member_id,
                    points=adjustment.points,
                    reference=ledger_reference(adjustment),
                    expires_at=adjustment.expires_at,
                )
            else:
                if adjustment.transaction_id is None:  # the table's CHECK makes this impossible
                    raise AssertionError("a reversal adjustment names its transaction")
                outcome = await ledger.reverse(
                    merchant_id=adjustment.merchant_id,
                    idempotency_key=key,
                    transaction_id=adjustment.transaction_id,
                    reference=ledger_reference(adjustment),
                    points=adjustment.points,
                )
            posted = outcome.body["transaction_id"]
            row = await conn.fetchrow(
                """UPDATE adjustments SET status = 'posted', decided_by = $2, decided_at = $3,
                          posted_transaction_id = $4
                   WHERE adjustment_id = $1 RETURNING *""",
                adjustment_id,
                approver.user_id,
                now,
                posted,
            )
            await audit.append(
                conn,
                actor=approver.username,
                action="adjustment.approve",
                target=adjustment_id,
                at=now,
                details={**_details(adjustment), "posted_transaction_id": posted},
            )
            return _adjustment(row)
    except (FourEyesViolation, AdjustmentDecided, AdjustmentNotFound, InvalidInput):
        raise
    except DomainError as refusal:
        async with db.transaction() as conn:
            await audit.append(
                conn,
                actor=approver.username,
                action="adjustment.approve_refused",
                target=adjustment_id,
                at=now,
                details={"code": refusal.code, "detail": refusal.detail},
            )
        raise


async def reject(db: Database, *, adjustment_id: str, decider: User, now: datetime) -> Adjustment:
    async with db.transaction() as conn:
        await _pending_for_update(conn, adjustment_id, decider)
        row = await conn.fetchrow(
            """UPDATE adjustments SET status = 'rejected', decided_by = $2, decided_at = $3
               WHERE adjustment_id = $1 RETURNING *""",
            adjustment_id,
            decider.user_id,
            now,
        )
        await audit.append(
            conn, actor=decider.username, action="adjustment.reject", target=adjustment_id, at=now
        )
    return _adjustment(row)


async def page(
    db: Database, *, status: str | None, before: tuple[datetime, str] | None, limit: int
) -> list[dict[str, Any]]:
    """Newest first (keyset on proposed_at, id), with the proposer's and decider's names."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT a.*, p.username AS proposer, d.username AS decider
               FROM adjustments a JOIN admin_users p ON p.user_id = a.proposed_by
               LEFT JOIN admin_users d ON d.user_id = a.decided_by
               WHERE ($1::text IS NULL OR a.status = $1)
                 AND ($2::timestamptz IS NULL OR (a.proposed_at, a.adjustment_id) < ($2, $3))
               ORDER BY a.proposed_at DESC, a.adjustment_id DESC LIMIT $4""",
            status,
            before[0] if before else None,
            before[1] if before else None,
            limit,
        )
    return [dict(row) for row in rows]
