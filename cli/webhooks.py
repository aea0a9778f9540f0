"""`alliance webhooks`: send the due webhooks now, and see how recent ones went (ADR 0022)."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.runtime import console, err_console, open_database, run
from core.clock import SystemClock
from settlement.webhooks import delivery, limits, outbox
from settlement.webhooks.delivery import DeliveryReport
from settlement.webhooks.outbox import DeliveryRow

webhooks_app = typer.Typer(
    help="Webhooks to merchants (statement.published): deliver the due ones, list recent ones.",
    no_args_is_help=True,
)


@webhooks_app.command(epilog="Example: alliance webhooks deliver")
def deliver(
    limit: int = typer.Option(
        limits.MAX_PER_RUN, min=1, help="Attempt at most this many webhooks, then stop."
    ),
) -> None:
    """Send every webhook due now (new events, and retries whose wait is over), once each.

    A 2xx answer delivers it; any other answer or error schedules a retry with a growing wait,
    and after the maximum attempts the webhook is given up (failed). The scheduler does the same
    every minute; running both at once sends nothing twice. Exits 1 if any webhook was given up.
    """
    report = run(_deliver(limit))
    if not report.attempts:
        console.print("Nothing to deliver: no webhook is due.")
        return
    table = Table(title="Webhook attempts")
    for column in ("event", "merchant", "attempt", "result", "outcome", "next attempt"):
        table.add_column(column, justify="right" if column == "attempt" else "left")
    for attempt in report.attempts:
        table.add_row(
            attempt.event_id,
            attempt.merchant_id,
            f"{attempt.attempt}/{limits.MAX_ATTEMPTS}",
            _result(attempt.status_code, attempt.error),
            attempt.outcome,
            _when(attempt.next_attempt_at),
        )
    console.print(table)
    console.print(
        f"{report.delivered} delivered, {report.retrying} to retry, {report.failed} given up."
    )
    if report.failed:
        err_console.print(
            f"[bold red]error[/]: {report.failed} webhook(s) failed {limits.MAX_ATTEMPTS} "
            "attempts and will not be sent again; the merchants can still read their statements "
            "at GET /v1/statements (see `alliance webhooks list --status failed`)."
        )
        raise typer.Exit(code=1)


async def _deliver(limit: int) -> DeliveryReport:
    clock = SystemClock()
    async with open_database() as db:
        due = min(await delivery.due_count(db, clock.now()), limit)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("Delivering webhooks", total=due or None)

            def report(done: int) -> None:
                progress.update(task, completed=done, total=max(due, done) or None)

            return await delivery.deliver_due(db, clock, max_events=limit, progress=report)


@webhooks_app.command("list", epilog="Example: alliance webhooks list --status failed")
def list_(
    limit: int = typer.Option(limits.LIST_DEFAULT, min=1, max=1000, help="How many to show."),
    status: str = typer.Option(None, help="Only pending, delivered or failed ones."),
    merchant: str = typer.Option(None, help="Only this merchant's (a merchant id)."),
) -> None:
    """Recent webhooks, newest first, with their status and their last attempt's result."""
    if status is not None and status not in outbox.STATUSES:
        raise typer.BadParameter(
            f"--status must be one of {', '.join(outbox.STATUSES)}, not {status!r}"
        )
    rows = run(_recent(limit, status, merchant))
    if not rows:
        console.print("No webhooks" + (f" {status}" if status else "") + " yet.")
        return
    table = Table(title="Webhooks, newest first")
    for column in ("event", "type", "merchant", "created", "status", "attempts", "last result"):
        table.add_column(column, justify="right" if column == "attempts" else "left")
    table.add_column("next attempt")
    for row in rows:
        table.add_row(
            row.event_id,
            row.event_type,
            row.merchant_id,
            _when(row.created_at),
            row.status,
            str(row.attempts),
            _result(row.last_status_code, row.last_error) if row.attempts else "—",
            _when(row.next_attempt_at) if row.status == "pending" else "—",
        )
    console.print(table)


async def _recent(limit: int, status: str | None, merchant: str | None) -> list[DeliveryRow]:
    async with open_database() as db, db.connection() as conn:
        return await outbox.recent(conn, limit=limit, status=status, merchant_id=merchant)


def _result(status_code: int | None, error: str | None) -> str:
    if status_code is not None:
        return f"HTTP {status_code}"
    return (error or "—")[:60]


def _when(instant: datetime | None) -> str:
    return instant.isoformat(timespec="seconds") if instant else "—"
