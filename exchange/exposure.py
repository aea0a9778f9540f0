"""Liability limits without a hot row: escrowed headroom spread over slots.

An issuer's exposure is the value of its outstanding unexpired alliance points plus its unsettled
net payables; an issuance that would take it past its limit is refused. Checking that exactly
would serialise every issuance of a merchant on one row. Instead each merchant's remaining
headroom (limit - exposure) is escrowed over EXPOSURE_SLOTS rows; an issuance draws from any one
slot that can cover it (skipping slots other tills hold), so a busy issuer's tills rarely meet.

Invariant: the sum of a merchant's slot headroom never exceeds limit - exposure. Events that lower
exposure (redemptions at the issuer, expiry, reversals of issuances, settlement) leave slots
alone (headroom is understated, which is safe, and reclaimed at the next rebalance); events that
can raise exposure besides issuance debit a slot in the same transaction: a redemption reversal
(lots given back to their issuers, receivables cut for the acceptor) and, by rounding alone, a
redemption of an issuer's points elsewhere at a fractional point value; a change of limit or of
alliance settings zeroes the slots; and slots are only valid until the next effective-dated
settings change. When no slot can cover an issuance, the rebalance locks
all slots (waiting for in-flight issuances to commit), recomputes exposure exactly from the lots
and obligations, and re-escrows what is left. Exact under any concurrency, at READ COMMITTED.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from core.limits import EXPOSURE_SLOTS
from exchange import repository
from exchange.errors import LiabilityLimitExceeded
from exchange.ledger import ObligationDraft
from exchange.rounding import exposure_value, value_rounded_down
from merchants import repository as merchant_repository
from merchants.models import ALLIANCE_POINT, AllianceSettings


@dataclass(frozen=True, slots=True)
class Exposure:
    merchant_id: str
    outstanding_points: int
    outstanding_value: int
    net_payable: int
    liability_limit: int

    @property
    def total(self) -> int:
        return self.outstanding_value + self.net_payable

    @property
    def headroom(self) -> int:
        return self.liability_limit - self.total


async def measure(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    liability_limit: int,
    settings: AllianceSettings,
    now: datetime,
) -> Exposure:
    """Exposure computed from the books (not the escrow)."""
    outstanding_points: int = await conn.fetchval(
        """SELECT coalesce(sum(remaining_points), 0)::bigint FROM lots
           WHERE issuer_id = $1 AND currency = $2 AND remaining_points > 0
             AND (expires_at IS NULL OR expires_at > $3)""",
        merchant_id,
        ALLIANCE_POINT,
        now,
    )
    net_payable: int = await conn.fetchval(
        f"""WITH unsettled AS (
                SELECT debtor_id, creditor_id, gross_value, fee FROM obligations
                WHERE (debtor_id = $1 OR creditor_id = $1)
                  AND ($2::timestamptz IS NULL OR created_at >= $2)
                UNION ALL
                SELECT debtor_id, creditor_id, gross_value, fee FROM obligations
                WHERE (debtor_id = $1 OR creditor_id = $1) AND {repository.UNSETTLED_LATE})
            SELECT greatest(
                   coalesce(sum(gross_value) FILTER (WHERE debtor_id = $1), 0)
                 - coalesce(sum(gross_value - fee) FILTER (WHERE creditor_id = $1), 0), 0)::bigint
            FROM unsettled""",
        merchant_id,
        *await repository.settled_through(conn),
    )
    return Exposure(
        merchant_id=merchant_id,
        outstanding_points=int(outstanding_points),
        outstanding_value=exposure_value(int(outstanding_points), settings.point_value),
        net_payable=int(net_payable),
        liability_limit=liability_limit,
    )


async def reserve(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    value: int,
    settings: AllianceSettings,
    now: datetime,
) -> None:
    """Draw `value` of headroom for an issuance, or refuse it with LiabilityLimitExceeded."""
    if await _draw_from_free_slot(conn, merchant_id, value, now):
        return
    if await _draw_from_busy_slot(conn, merchant_id, value, now):
        return
    await _rebalance(conn, merchant_id=merchant_id, value=value, settings=settings, now=now)


def rise_on_consumption(obligation: ObligationDraft, point_value: Decimal) -> int:
    """How much a redemption elsewhere can raise the issuer's exposure: by rounding alone.

    Its outstanding value falls by at least floor(points x value) (outstanding is valued rounded
    up, in total), while its payables rise by the obligation's gross (rounded half-to-even).
    """
    return max(0, obligation.gross_value - value_rounded_down(obligation.points, point_value))


def rise_on_restoration(points: int, cancelled_gross: int, point_value: Decimal) -> int:
    """How much giving `points` back to an issuer's lots (a reversal) can raise its exposure."""
    return max(0, exposure_value(points, point_value) - cancelled_gross)


async def debit(conn: asyncpg.Connection, debits: Mapping[str, int], now: datetime) -> None:
    """Lower escrowed headroom where something other than issuance raised exposure.

    From one free slot that covers the rise; when none does, the merchant's whole escrow is
    forfeited (every slot to 0, locked in slot order) and its next issuance rebalances exactly.
    Taking the rise from a slot that cannot cover it would leave the other slots' headroom
    drawable while the sum is already spent. Merchants go in id order, so two transactions
    debiting the same merchants lock their slots in the same order.
    """
    for merchant_id in sorted(debits):
        value = debits[merchant_id]
        if value <= 0:
            continue
        if not await _draw_from_free_slot(conn, merchant_id, value, now):
            await merchant_repository.reset_exposure_slots(conn, merchant_id)


async def _draw_from_free_slot(
    conn: asyncpg.Connection, merchant_id: str, value: int, now: datetime
) -> bool:
    """Draw from a slot no other till holds, in a savepoint rolled back if none could cover it.

    FOR UPDATE locks a row before re-checking it against a version committed after this
    statement's snapshot; a row that then fails `headroom >= value` is skipped but stays locked.
    Holding such a stray lock while queueing for a busy slot or for the rebalance would deadlock
    with a rebalance waiting on it, so a miss gives every lock it took back.
    """
    savepoint = conn.transaction()
    await savepoint.start()
    drawn = await conn.fetchval(
        """UPDATE exposure_slots SET headroom = headroom - $2
           WHERE merchant_id = $1 AND slot = (
               SELECT slot FROM exposure_slots
               WHERE merchant_id = $1 AND headroom >= $2
                 AND (valid_until IS NULL OR valid_until > $3)
               ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING slot""",
        merchant_id,
        value,
        now,
    )
    if drawn is None:
        await savepoint.rollback()
        return False
    await savepoint.commit()
    return True


async def _draw_from_busy_slot(
    conn: asyncpg.Connection, merchant_id: str, value: int, now: datetime
) -> bool:
    """Every slot that could cover it is held by another till: queue behind one of them.

    In a savepoint: if, once free, the slot no longer covers the issuance, PostgreSQL keeps the
    row locked; rolling the savepoint back releases it before this transaction goes on to
    rebalance (which waits for every slot, so holding one would deadlock with another rebalance).
    """
    slot = await conn.fetchval(
        """SELECT slot FROM exposure_slots
           WHERE merchant_id = $1 AND headroom >= $2 AND (valid_until IS NULL OR valid_until > $3)
           ORDER BY random() LIMIT 1""",
        merchant_id,
        value,
        now,
    )
    if slot is None:
        return False
    savepoint = conn.transaction()
    await savepoint.start()
    drawn = await conn.fetchval(
        """UPDATE exposure_slots SET headroom = headroom - $3
           WHERE merchant_id = $1 AND slot = $2 AND headroom >= $3
             AND (valid_until IS NULL OR valid_until > $4)
           RETURNING slot""",
        merchant_id,
        slot,
        value,
        now,
    )
    if drawn is None:
        await savepoint.rollback()
        return False
    await savepoint.commit()
    return True


async def _rebalance(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    value: int,
    settings: AllianceSettings,
    now: datetime,
) -> None:
    merchant = await merchant_repository.get_merchant_for_update(conn, merchant_id)
    if merchant is None:
        raise LiabilityLimitExceeded("unknown issuer")
    await conn.execute(
        """INSERT INTO exposure_slots (merchant_id, slot, headroom)
           SELECT $1, slot, 0 FROM generate_series(0, $2 - 1) AS slot
           ON CONFLICT DO NOTHING""",
        merchant_id,
        EXPOSURE_SLOTS,
    )
    # Waits for every in-flight issuance holding a slot; the next statement sees their lots.
    await conn.execute(
        "SELECT 1 FROM exposure_slots WHERE merchant_id = $1 ORDER BY slot FOR UPDATE",
        merchant_id,
    )
    exposure = await measure(
        conn,
        merchant_id=merchant_id,
        liability_limit=merchant.liability_limit,
        settings=settings,
        now=now,
    )
    left = exposure.headroom - value
    if left < 0:
        raise LiabilityLimitExceeded(
            "this issuance would take the issuer past its liability limit",
            exposure=exposure.total,
            limit=exposure.liability_limit,
            requested_value=value,
        )
    await _escrow(conn, merchant_id, left, now)


async def _escrow(conn: asyncpg.Connection, merchant_id: str, headroom: int, now: datetime) -> None:
    valid_until = await merchant_repository.next_settings_change_after(conn, now)
    share, extra = divmod(headroom, EXPOSURE_SLOTS)
    await conn.execute(
        """UPDATE exposure_slots SET headroom = $2::bigint + CASE WHEN slot < $3 THEN 1 ELSE 0 END,
                                     valid_until = $4
           WHERE merchant_id = $1""",
        merchant_id,
        share,
        extra,
        valid_until,
    )
