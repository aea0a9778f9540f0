"""Bulk issuance: a run of a batch's issuances written set-based, in one database transaction.

Issued one by one, the 1,000 issuances of a full batch are 1,000 transactions of a dozen round
trips each. Here a run of issuances of alliance points costs about a dozen statements whatever
its length: each statement carries the whole run as arrays. The rules stay those of
`earn.issue`: every issuance is a lot of the acting merchant with its two postings, within the
merchant's liability limit, idempotent by its own key, its effect and its record committed
together; and the results are what issuing them one after another would return, `balance_after`
included. What the run cannot settle alone (a key another request holds, a liability limit in
the way) raises `NotBulkable` before anything is written: the caller rolls back and issues
those operations one by one, which refuses exactly the ones that do not fit. An issuance refused
for its member (not found) is recorded under its key with the run, as `Ledger.issue` records a
refusal (ADR 0013); a key that ran before replays its result or its refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.errors import DomainError, NotFound
from core.ids import new_id
from core.limits import BATCH_OPERATIONS_MAX
from exchange import exposure, idempotency, repository, writer
from exchange.context import Context, check_points, check_reference
from exchange.earn import issuance_postings, lot_expiry
from exchange.errors import LiabilityLimitExceeded
from exchange.rounding import exposure_value
from exchange.views import transaction_view
from merchants.models import ALLIANCE_POINT


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """One issuance of alliance points, as a batch operation asks for it."""

    idempotency_key: str
    member_id: str
    points: int
    reference: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    body: dict[str, Any]
    replayed: bool


Result = Issued | DomainError
"""Per request, in order: its transaction (new or replayed), or why it was refused."""


class NotBulkable(Exception):
    """The run must be issued one by one; nothing of it may be kept (roll back)."""


@dataclass(slots=True)
class _Pending:
    index: int
    request: IssueRequest
    fingerprint: bytes
    expires_at: datetime | None
    transaction_id: str = ""


async def issue_run(
    conn: asyncpg.Connection,
    ctx: Context,
    requests: Sequence[IssueRequest],
    fingerprint: Callable[[IssueRequest], bytes],
) -> list[Result]:
    """Issue `requests` (distinct keys) in the caller's transaction; one result per request."""
    assert len(requests) <= BATCH_OPERATIONS_MAX
    keys = [request.idempotency_key for request in requests]
    assert len(set(keys)) == len(keys), "a run's keys are distinct; a repeat starts a new run"
    merchant_id = ctx.merchant.merchant_id
    if not await idempotency.try_lock_all(conn, merchant_id=merchant_id, keys=keys):
        raise NotBulkable("a key is held by a request in flight")
    stored = await idempotency.stored_results(conn, merchant_id=merchant_id, keys=keys, now=ctx.now)
    results: list[Result | None] = [None] * len(requests)
    pending: list[_Pending] = []
    for index, request in enumerate(requests):
        try:
            idempotency.validate_key(request.idempotency_key)
            request_fingerprint = fingerprint(request)
            if request.idempotency_key in stored:
                body = idempotency.replay(stored[request.idempotency_key], request_fingerprint)
                results[index] = Issued(body, replayed=True)
                continue
            check_points(request.points)
            check_reference(request.reference)
            expires_at = lot_expiry(ctx, request.expires_at)
        except DomainError as error:
            results[index] = error
            continue
        pending.append(_Pending(index, request, request_fingerprint, expires_at))
    if pending:
        written = await _write(conn, ctx, pending)
        for index, result in written.items():
            results[index] = result
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


async def _write(
    conn: asyncpg.Connection, ctx: Context, pending: list[_Pending]
) -> dict[int, Result]:
    """Lock the members, reserve the run's liability, write lots, postings, transactions and
    idempotency records; the result of each pending request by its index."""
    members = sorted({item.request.member_id for item in pending})
    await repository.open_member_accounts(conn, members, ALLIANCE_POINT)
    locked = await repository.lock_member_accounts(conn, members, ALLIANCE_POINT)
    results: dict[int, Result] = {}
    refusals: list[tuple[str, bytes, DomainError]] = []
    for item in pending:
        if item.request.member_id not in locked:
            refusal = NotFound("no such member", fields={"member_id": "not found"})
            results[item.index] = refusal
            refusals.append((item.request.idempotency_key, item.fingerprint, refusal))
    issuing = [item for item in pending if item.request.member_id in locked]
    if not issuing:
        # Refused as `earn.issue` refuses it, and recorded as `Ledger.issue` records it.
        await idempotency.record_all(
            conn, merchant_id=ctx.merchant.merchant_id, results=refusals, now=ctx.now
        )
        return results
    await _reserve(conn, ctx, issuing)
    available = await repository.available_before_clamp(
        conn, sorted({item.request.member_id for item in issuing}), ALLIANCE_POINT, ctx.now
    )
    merchant_id = ctx.merchant.merchant_id
    for item in issuing:
        item.transaction_id = new_id("txn")
    lot_ids = await repository.insert_lots(
        conn,
        [
            repository.NewLot(
                item.request.member_id, item.transaction_id, item.request.points, item.expires_at
            )
            for item in issuing
        ],
        currency=ALLIANCE_POINT,
        issuer_id=merchant_id,
        issued_at=ctx.now,
    )
    await repository.insert_postings_of(
        conn,
        [
            (item.request.member_id, item.transaction_id, number, posting)
            for item in issuing
            for number, posting in enumerate(
                issuance_postings(
                    ctx,
                    item.request.member_id,
                    ALLIANCE_POINT,
                    item.request.points,
                    lot_ids[item.transaction_id],
                )
            )
        ],
    )
    deltas: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for item in issuing:
        member_id = item.request.member_id
        deltas[member_id] = deltas.get(member_id, 0) + item.request.points
        # As if issued one after another: each sees the points of the run's earlier issuances.
        available[member_id] += item.request.points
        rows.append(_transaction_row(ctx, item, balance_after=max(available[member_id], 0)))
    await repository.add_posted_points_of(conn, deltas, ALLIANCE_POINT)
    await repository.insert_issuances(conn, rows)
    bodies = [transaction_view(row) for row in rows]
    await idempotency.record_all(
        conn,
        merchant_id=merchant_id,
        results=[
            *(
                (item.request.idempotency_key, item.fingerprint, body)
                for item, body in zip(issuing, bodies, strict=True)
            ),
            *refusals,
        ],
        now=ctx.now,
    )
    for item, body in zip(issuing, bodies, strict=True):
        results[item.index] = Issued(body, replayed=False)
    return results


async def _reserve(conn: asyncpg.Connection, ctx: Context, issuing: list[_Pending]) -> None:
    """Draw the run's headroom at once: the sum of what each issuance would draw alone."""
    value = sum(exposure_value(item.request.points, ctx.settings.point_value) for item in issuing)
    try:
        await exposure.reserve(
            conn,
            merchant_id=ctx.merchant.merchant_id,
            value=value,
            settings=ctx.settings,
            now=ctx.now,
        )
    except LiabilityLimitExceeded:
        # Some of the run may still fit: one by one, each is admitted or refused on its own.
        raise NotBulkable("the run as a whole passes the liability limit") from None


def _transaction_row(ctx: Context, item: _Pending, *, balance_after: int) -> dict[str, Any]:
    draft = writer.Draft(
        kind="issuance",
        member_id=item.request.member_id,
        currency=ALLIANCE_POINT,
        merchant_id=ctx.merchant.merchant_id,
        points=item.request.points,
        reference=item.request.reference,
        transaction_id=item.transaction_id,
    )
    return {**writer.transaction_row(draft, now=ctx.now), "balance_after": balance_after}
