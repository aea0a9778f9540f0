"""A settlement run: claim, net, hash, sign, check, publish — in one database transaction.

The run holds a session advisory lock (one run at a time everywhere), then opens a REPEATABLE
READ transaction whose snapshot is the run's: every figure it computes comes from that one
snapshot, and the snapshot is stored so that the claim can be recomputed forever after. The run
row, statements and lines commit together or not at all: a run killed at any point leaves nothing,
and the next run starts over and finishes. A period already settled returns its stored run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime

import asyncpg

from core.clock import Clock
from core.database import Database
from core.errors import DomainError, ValidationFailed
from core.ids import new_id
from exchange import exchange_keys
from exchange.reconcile import Break, verify as verify_ledger
from merchants import repository as merchant_repository
from settlement import merkle, netting, repository
from settlement.repository import Claim, RunRow
from settlement.signing import root_message
from settlement.webhooks import outbox as webhook_outbox

Progress = Callable[[str, int, int | None], None]


def quiet(phase: str, done: int, total: int | None) -> None:
    """The default progress callback: say nothing."""


class RunInProgress(DomainError):
    code = "settlement_in_progress"


class PeriodClosed(DomainError):
    code = "period_closed"


class ReconciliationFailed(DomainError):
    """A break: the run published nothing."""

    code = "reconciliation_failed"

    def __init__(self, detail: str, breaks: list[Break]) -> None:
        super().__init__(detail)
        self.breaks = breaks


@dataclass(frozen=True, slots=True)
class Period:
    """What to close: everything created before `end`, named by business date `period_date`."""

    end: datetime
    period_date: date
    kind: str  # "daily" or "adhoc"


@dataclass(frozen=True, slots=True)
class RunResult:
    run: RunRow
    merchants: int
    replayed: bool  # True when the period was already settled and its stored run is returned


async def settle(
    db: Database, clock: Clock, period: Period, *, progress: Progress = quiet
) -> RunResult:
    """Settle one period, or return it as it was settled."""
    now = clock.now()
    if period.end > now:
        raise ValidationFailed(
            "a cut-off must not be in the future", fields={"cutoff": period.end.isoformat()}
        )
    key = await exchange_keys.signing_key(db, now)
    async with db.connection() as conn:
        if not await repository.try_lock_runs(conn):
            raise RunInProgress("another settlement run holds the lock; try again when it ends")
        try:
            async with conn.transaction(isolation="repeatable_read"):
                existing = await repository.run_ending_at(conn, period.end)
                if existing is not None:
                    count = len(await repository.statements_of_run(conn, existing.run_id))
                    return RunResult(existing, count, replayed=True)
                previous = await repository.last_run(conn)
                if previous is not None and previous.period_end > period.end:
                    raise PeriodClosed(
                        f"the period ending {period.end.isoformat()} is inside a settled one "
                        f"(settled through {previous.period_end.isoformat()})"
                    )
                settings = await merchant_repository.settings_at(conn, period.end)
                if settings is None:
                    raise ValidationFailed("the alliance has no settings at this cut-off")
                # The first period runs from the alliance's start: it claims everything before
                # its end, and a statement's period is two RFC 3339 instants (PROTOCOL.md).
                start = previous.period_end if previous else await repository.alliance_start(conn)
                if start is None or start >= period.end:
                    raise ValidationFailed(
                        "a cut-off must be after the alliance's start",
                        fields={"cutoff": period.end.isoformat()},
                    )
                snapshot, xmin = await repository.snapshot(conn)
                claim = repository.claim_after(previous, end=period.end, snapshot=snapshot)
                # The ledger's reconciliation needs nothing the run computes and reads a snapshot
                # of its own on another connection, so it runs while the run claims, hashes and
                # writes; the run commits only once it has found no break.
                reconciliation = asyncio.create_task(verify_ledger(db))
                try:
                    figures, roots, top_root, alliance = await _compute(conn, claim, progress)
                    unsigned = RunRow(
                        run_id=new_id("run"),
                        period_date=period.period_date,
                        kind=period.kind,
                        period_start=start,
                        period_end=period.end,
                        snapshot=snapshot,
                        snapshot_xmin=xmin,
                        currency=settings.currency,
                        minor_units=settings.minor_units,
                        obligations=figures.obligations,
                        transactions=sum(count for _, count in roots.values()) + alliance[1],
                        gross_total=figures.gross_total,
                        fee_total=figures.fee_total,
                        fee_residue=figures.fee_residue,
                        merkle_root=top_root,
                        alliance_root=alliance[0],
                        alliance_transactions=alliance[1],
                        root_signature=b"",
                        signing_key_id=key.key_id,
                        created_at=now,
                    )
                    run = replace(
                        unsigned, root_signature=key.private_key.sign(root_message(unsigned))
                    )
                    progress("publish", 0, len(figures.merchants))
                    await repository.insert_run(conn, run)
                    statement_ids = {m.merchant_id: new_id("stm") for m in figures.merchants}
                    await repository.insert_statements(
                        conn, run.run_id, figures, statement_ids, roots
                    )
                    # The run's webhooks, in its transaction: sent only if it commits (ADR 0022).
                    await webhook_outbox.enqueue_statements_published(conn, run.run_id, now)
                    progress("publish", len(figures.merchants), len(figures.merchants))
                    await _check_before_publishing(conn, run, claim, reconciliation, progress)
                    return RunResult(run, len(figures.merchants), replayed=False)
                finally:
                    await _stopped(reconciliation)
        finally:
            await repository.unlock_runs(conn)


async def _compute(
    conn: asyncpg.Connection, claim: Claim, progress: Progress
) -> tuple[netting.Netting, dict[str, tuple[bytes, int]], bytes, tuple[bytes, int]]:
    """Netting figures, per-merchant subtree roots, the top root, and the alliance's subtree."""
    progress("claim", 0, None)
    schedule = await repository.fee_rate_schedule(conn)
    pairs = await repository.claimed_pairs(conn, claim, schedule) if schedule else []
    activity = await repository.claimed_activity(conn, claim)
    total = sum(a.transactions for a in activity.values())
    activity.pop(merkle.ALLIANCE_BUCKET, None)  # the alliance has no statement
    figures = netting.net(pairs, activity)
    progress("claim", figures.obligations, figures.obligations)

    progress("merkle", 0, total)
    subtrees: dict[str, merkle.StreamingRoot] = {}
    done = 0
    async for rows in repository.claimed_leaf_batches(conn, claim):
        merkle.extend_subtrees(subtrees, rows)
        done += len(rows)
        progress("merkle", done, total)
    progress("merkle", done, total)
    assert done == total, "the leaves are the claimed transactions"

    roots = {m.merchant_id: merkle.subtree(subtrees, m.merchant_id) for m in figures.merchants}
    assert set(subtrees) - {merkle.ALLIANCE_BUCKET} <= set(roots), "every bucket has a statement"
    alliance = merkle.subtree(subtrees, merkle.ALLIANCE_BUCKET)
    top = merkle.top_root(
        [(merchant_id, count, root) for merchant_id, (root, count) in sorted(roots.items())],
        alliance,
    )
    return figures, roots, top, alliance


async def _stopped(task: asyncio.Task[list[Break]]) -> None:
    """The reconciliation is over: cancelled if the run failed before it was needed."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task  # its result or error was taken already, or the run's own error wins


async def _check_before_publishing(
    conn: asyncpg.Connection,
    run: RunRow,
    claim: Claim,
    reconciliation: asyncio.Task[list[Break]],
    progress: Progress,
) -> None:
    """Settlement's own checks in the run's snapshot, then the ledger's reconciliation."""
    progress("reconcile", 0, None)
    breaks: list[Break] = []
    disagreements = await repository.statement_totals_against_claims(conn, run, claim)
    if disagreements:
        breaks.append(
            Break(
                check="statements_match_claims",
                description="each statement's totals equal its merchant's claimed obligations",
                count=len(disagreements),
                rows=[dict(row) for row in disagreements],
            )
        )
    unbalanced = [
        row for row in await repository.unbalanced_runs(conn) if row["run_id"] == run.run_id
    ]
    if unbalanced:
        breaks.append(
            Break(
                check="nets_sum_to_zero",
                description="nets plus fees are zero, and statements equal their lines",
                count=len(unbalanced),
                rows=[dict(row) for row in unbalanced],
            )
        )
    breaks += await reconciliation
    progress("reconcile", 1, 1)
    if breaks:
        raise ReconciliationFailed(
            f"reconciliation found {len(breaks)} break(s); nothing was published", breaks
        )
