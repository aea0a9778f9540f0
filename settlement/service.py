"""Settlement's services: what the CLI, the API, the console and the scheduler call."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any, Literal

from core.clock import Clock
from core.database import Database
from core.errors import NotFound, ValidationFailed
from exchange import exchange_keys
from exchange.queries import decode_cursor, encode_cursor
from exchange.reconcile import Break
from merchants import repository as merchant_repository, service as merchants
from settlement import merkle, payments, periods, repository
from settlement.repository import RunRow
from settlement.runs import Period, Progress, RunResult, quiet, settle
from settlement.signing import signature_valid
from settlement.views import run_view, statement_view


async def _calendar(db: Database, instant: datetime) -> tuple[str, Any]:
    async with db.connection() as conn:
        settings = await merchant_repository.settings_at(conn, instant)
    if settings is None:
        raise ValidationFailed("the alliance has no settings yet")
    return settings.timezone, settings.cutoff


async def due_periods(db: Database, clock: Clock) -> list[Period]:
    """Every finished business date not yet settled, oldest first."""
    now = clock.now()
    async with db.connection() as conn:
        last = await repository.last_run(conn)
        since = last.period_end if last else await repository.first_activity(conn)
    if since is None:
        return []
    timezone, cutoff = await _calendar(db, now)
    return [
        Period(periods.period_end(day, timezone, cutoff), day, "daily")
        for day in periods.finished_dates(since=since, now=now, timezone=timezone, cutoff=cutoff)
    ]


async def settle_due(db: Database, clock: Clock, *, progress: Progress = quiet) -> list[RunResult]:
    """`alliance settle`: each finished period not yet settled, each in its own run."""
    return [
        await settle(db, clock, period, progress=progress)
        for period in await due_periods(db, clock)
    ]


async def settle_date(
    db: Database, clock: Clock, day: date, *, progress: Progress = quiet
) -> RunResult:
    """`alliance settle --period D`."""
    timezone, cutoff = await _calendar(db, clock.now())
    end = periods.period_end(day, timezone, cutoff)
    return await settle(db, clock, Period(end, day, "daily"), progress=progress)


async def settle_cutoff(
    db: Database, clock: Clock, cutoff_at: datetime, *, progress: Progress = quiet
) -> RunResult:
    """`alliance settle --cutoff INSTANT`: an ad-hoc period ending at that instant."""
    if cutoff_at.tzinfo is None:
        raise ValidationFailed("the cut-off needs a time zone", fields={"cutoff": "naive"})
    timezone, cutoff = await _calendar(db, cutoff_at)
    day = periods.closing_date(cutoff_at, timezone, cutoff)
    kind = "daily" if periods.period_end(day, timezone, cutoff) == cutoff_at else "adhoc"
    return await settle(db, clock, Period(cutoff_at, day, kind), progress=progress)


# --- reading runs and statements -------------------------------------------------------------


async def list_runs(db: Database, *, limit: int = 100) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await repository.runs(conn, limit=limit)
    return [run_view(row) for row in rows]


async def run_detail(db: Database, run_id: str) -> dict[str, Any]:
    """A run, its statements and its netting matrix (creditor x debtor receivables)."""
    async with db.connection() as conn:
        run = await repository.run_by_id(conn, run_id)
        if run is None:
            raise NotFound("no such run")
        rows = await repository.statements_of_run(conn, run_id)
        lines = await repository.lines_of(conn, [row["statement_id"] for row in rows])
        names = await repository.merchant_names(conn, [row["merchant_id"] for row in rows])
    statements = [statement_view(row, lines[row["statement_id"]]) for row in rows]
    matrix = [
        {
            "creditor_id": statement["merchant_id"],
            "debtor_id": line["counterparty_id"],
            "receivable": line["receivable"],
            "fees": line["fees"],
        }
        for statement in statements
        for line in statement["lines"]
        if line["receivable"] != 0 or line["fees"] != 0
    ]
    return {**run_view(run), "statements": statements, "matrix": matrix, "names": names}


async def run_settlement(
    db: Database, clock: Clock, *, cutoff: datetime | None = None, progress: Progress = quiet
) -> dict[str, Any]:
    """For the console: settle up to `cutoff` (ad hoc), or every due period when None."""
    if cutoff is not None:
        result = await settle_cutoff(db, clock, cutoff, progress=progress)
        return {"runs": [run_view(result.run)], "replayed": result.replayed}
    results = await settle_due(db, clock, progress=progress)
    return {"runs": [run_view(r.run) for r in results], "replayed": False}


async def statements_page(
    db: Database,
    merchant_id: str,
    *,
    period: date | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    after = decode_cursor(cursor) if cursor else None
    async with db.connection() as conn:
        rows = await repository.statements_page(
            conn, merchant_id, period=period, limit=limit + 1, after=after
        )
        page, more = rows[:limit], len(rows) > limit
        lines = await repository.lines_of(conn, [row["statement_id"] for row in page])
    last = page[-1] if page else None
    return {
        "data": [statement_view(row, lines[row["statement_id"]]) for row in page],
        "next_cursor": (
            encode_cursor(last["period_end"], last["statement_id"]) if more and last else None
        ),
    }


async def statement(db: Database, merchant_id: str, statement_id: str) -> dict[str, Any]:
    async with db.connection() as conn:
        row = await repository.statement_of_merchant(conn, merchant_id, statement_id)
        if row is None:
            raise NotFound("no such statement")
        lines = await repository.lines_of(conn, [statement_id])
    return statement_view(row, lines[statement_id])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def inclusion_proof(db: Database, merchant_id: str, transaction_id: str) -> dict[str, Any]:
    """How a merchant proves one of its transactions is in a signed settlement root."""
    async with db.transaction() as conn:
        txn = await repository.transaction_for_proof(conn, merchant_id, transaction_id)
        if txn is None:
            raise NotFound("no such transaction")
        run = await repository.claiming_run(conn, txn["created_at"], txn["xact"])
        if run is None:
            raise NotFound("this transaction has not been settled yet")
        previous = await repository.last_run(conn, before=run.period_end)
        claim = repository.claim_of(run, previous)
        leaves: list[bytes] = []
        index = -1
        async for _, leaf, leaf_txn in repository.claimed_leaves(
            conn, claim, merchant_id=merchant_id
        ):
            if leaf_txn == transaction_id:
                index = len(leaves)
            leaves.append(leaf)
        top = await repository.top_leaves(conn, run.run_id)
        own = await repository.statement_for_run(conn, run.run_id, merchant_id)
    assert index >= 0, "a claimed transaction is in its merchant's subtree"
    assert own is not None, "a merchant with a claimed transaction has a statement"
    merchant_index = [m for m, _, _ in top].index(merchant_id)
    top_hashes = merkle.top_leaves(top, (run.alliance_root, run.alliance_transactions))
    return {
        "transaction_id": transaction_id,
        "run_id": run.run_id,
        "statement_id": own["statement_id"],
        "leaf_hash": _b64(bytes(txn["leaf"])),
        "leaf_index": index,
        "merchant_leaves": len(leaves),
        "merchant_path": [_b64(h) for h in merkle.audit_path(leaves, index)],
        "merchant_root": _b64(merkle.root(leaves)),
        "merchant_transactions": len(leaves),
        "top_index": merchant_index,
        "top_leaves": len(top_hashes),
        "top_path": [_b64(h) for h in merkle.audit_path(top_hashes, merchant_index)],
        "root": _b64(run.merkle_root),
        "root_signature": _b64(run.root_signature),
        "key_id": run.signing_key_id,
        "period_start": run.period_start.isoformat() if run.period_start else None,
        "period_end": run.period_end.isoformat(),
        "run_transactions": run.transactions,
    }


# --- payment files ---------------------------------------------------------------------------


async def payment_file(
    db: Database, run_id: str, kind: Literal["csv", "pain001"]
) -> tuple[bytes, str, str]:
    """(content, file name, media type) of a run's payment instructions."""

    async with db.connection() as conn:
        run = await repository.run_by_id(conn, run_id)
        if run is None:
            raise NotFound("no such run")
        rows = await repository.statements_of_run(conn, run_id)
        names = await repository.merchant_names(conn, [row["merchant_id"] for row in rows])
    accounts = await merchants.bank_accounts(db, [row["merchant_id"] for row in rows])
    transfers = [
        transfer
        for row in rows
        if (
            transfer := payments.transfer_for_net(
                row["merchant_id"],
                names[row["merchant_id"]],
                row["net"],
                accounts.get(row["merchant_id"]),
            )
        )
    ]
    if kind == "csv":
        content = payments.payment_csv(
            run_id=run.run_id,
            period_start=run.period_start,
            period_end=run.period_end,
            currency=run.currency,
            minor_units=run.minor_units,
            transfers=transfers,
        )
        return content, f"{run.run_id}-payments.csv", "text/csv"
    # No net receiver means no credit transfer: payments.NoPayments, a ValidationFailed here.
    if not payments.payable_transfers(transfers):
        raise ValidationFailed("this run pays no merchant: there is no pain.001 to make")
    content = payments.pain001(
        run_id=run.run_id,
        execution_date=run.period_date,
        currency=run.currency,
        minor_units=run.minor_units,
        treasury=payments.Treasury.from_settings(),
        transfers=transfers,
        created_at=run.created_at,
    )
    return content, f"{run.run_id}-pain001.xml", "application/xml"


# --- verification ----------------------------------------------------------------------------


async def verify(db: Database, *, progress: Progress = quiet) -> list[Break]:
    """Recompute every run: its claims against its statements, its Merkle root, its signature.

    Claims are disjoint by construction (each row's claiming run is the first that sees it), so
    statements matching claims means every settled obligation is in exactly one statement."""
    breaks: list[Break] = []
    async with db.transaction() as conn:
        all_runs = await repository.runs_in_order(conn)
    previous: RunRow | None = None
    for number, run in enumerate(all_runs, start=1):
        progress("verify", number - 1, len(all_runs))
        breaks += await _verify_run(db, run, previous)
        previous = run
    progress("verify", len(all_runs), len(all_runs))
    async with db.connection() as conn:
        unbalanced = await repository.unbalanced_runs(conn)
    if unbalanced:
        breaks.append(
            Break(
                "nets_sum_to_zero",
                "nets plus fees are zero, and statements equal their lines",
                len(unbalanced),
                [dict(row) for row in unbalanced],
            )
        )
    return breaks


async def _verify_run(db: Database, run: RunRow, previous: RunRow | None) -> list[Break]:
    claim = repository.claim_of(run, previous)
    breaks: list[Break] = []
    async with db.transaction() as conn:
        disagreements = await repository.statement_totals_against_claims(conn, run, claim)
        subtrees: dict[str, merkle.StreamingRoot] = {}
        async for rows in repository.claimed_leaf_batches(conn, claim):
            merkle.extend_subtrees(subtrees, rows)
        top = await repository.top_leaves(conn, run.run_id)
    if disagreements:
        breaks.append(
            Break(
                "statements_match_claims",
                f"run {run.run_id}: statements equal the obligations it claims",
                len(disagreements),
                [dict(row) for row in disagreements],
            )
        )
    recomputed: list[tuple[str, int, bytes]] = []
    for merchant_id, _, _ in top:
        subtree_root, size = merkle.subtree(subtrees, merchant_id)
        recomputed.append((merchant_id, size, subtree_root))
    alliance = merkle.subtree(subtrees, merkle.ALLIANCE_BUCKET)
    root = merkle.top_root(recomputed, alliance)
    stray = set(subtrees) - {m for m, _, _ in top} - {merkle.ALLIANCE_BUCKET}
    if root != run.merkle_root or recomputed != top or stray:
        breaks.append(
            Break(
                "merkle_root",
                f"run {run.run_id}: the root recomputed from the ledger equals the signed root",
                1,
                [{"run_id": run.run_id, "stored": run.merkle_root.hex(), "recomputed": root.hex()}],
            )
        )
    public = await exchange_keys.public_key_of(db, run.signing_key_id)
    if public is None or not signature_valid(run, public):
        breaks.append(
            Break(
                "root_signature",
                f"run {run.run_id}: the exchange's signature over the root verifies",
                1,
                [{"run_id": run.run_id, "key_id": run.signing_key_id}],
            )
        )
    return breaks
