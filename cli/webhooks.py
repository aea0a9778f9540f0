"""`alliance webhooks`: send the due webhooks now, see how recent ones went, look at one event's
attempts, and send failed ones again (ADR 0022)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.runtime import cli_actor, console, err_console, open_database, run
from console import audit
from core.clock import Clock, SystemClock
from settlement.webhooks import delivery, limits, outbox
from settlement.webhooks.delivery import DeliveryReport
from settlement.webhooks.outbox import DeliveryRow, Requeued

webhooks_app = typer.Typer(
    help=(
        "Webhooks to merchants (statement.published): deliver the due ones, list recent ones, "
        "show one event's attempts, retry failed ones."
    ),
    no_args_is_help=True,
)

clock: Clock = SystemClock()
"""The commands' clock; tests put a FixedClock here."""

RETRY_ACTION = "webhook.retry"
"""The audit log's action for an event an operator put back (one entry per event)."""


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
            f"{attempt.attempt}/{attempt.last_attempt}",
            escape(_result(attempt.status_code, attempt.error)),
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
            "attempts and will not be sent again unless retried (`alliance webhooks retry "
            "--failed`, once the merchant's endpoint works); the merchants can still read their "
            "statements at GET /v1/statements (see `alliance webhooks list --status failed`)."
        )
        raise typer.Exit(code=1)


async def _deliver(limit: int) -> DeliveryReport:
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
            escape(_result(row.last_status_code, row.last_error)) if row.attempts else "—",
            _when(row.next_attempt_at) if row.status == "pending" else "—",
        )
    console.print(table)


async def _recent(limit: int, status: str | None, merchant: str | None) -> list[DeliveryRow]:
    async with open_database() as db, db.connection() as conn:
        return await outbox.recent(conn, limit=limit, status=status, merchant_id=merchant)


@webhooks_app.command(epilog="Example: alliance webhooks show evt_3f0c9a…")
def show(
    event_id: str = typer.Argument(help="The event's id (evt_…), as `list` shows it."),
) -> None:
    """One webhook event and every attempt at it: when, how long, where, what came back.

    Exits 1 if there is no event with that id.
    """
    found = run(_show(event_id))
    if found is None:
        err_console.print(f"[bold red]error[/]: there is no webhook event {escape(event_id)!r}.")
        raise typer.Exit(code=1)
    row, attempts = found
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for name, value in (
        ("event", row.event_id),
        ("type", row.event_type),
        ("merchant", row.merchant_id),
        ("statement", row.statement_id or "—"),
        ("created", _when(row.created_at)),
        ("status", row.status),
        ("attempts", _attempts(row)),
        ("next attempt", _when(row.next_attempt_at) if row.status == "pending" else "—"),
        ("finished", _when(row.finished_at)),
        (
            "retried",
            f"{row.retries} time(s), last at {_when(row.retried_at)}" if row.retries else "never",
        ),
        (
            "last result",
            _result(row.last_status_code, row.last_error, 200) if row.attempts else "—",
        ),
    ):
        facts.add_row(name, escape(value))
    console.print(facts)
    if not attempts:
        console.print("No attempts yet.")
        return
    table = Table(title=f"Attempts at {row.event_id}")
    for column in ("#", "started", "duration", "url", "result", "response"):
        table.add_column(column, justify="right" if column in ("#", "duration") else "left")
    for attempt in attempts:
        table.add_row(
            str(attempt["attempt"]),
            _when(attempt["started_at"]),
            f"{attempt['duration_ms']} ms",
            escape(attempt["url"] or "—"),
            escape(_result(attempt["status_code"], attempt["error"], limits.ERROR_CHARS)),
            escape(_one_line(attempt["response_excerpt"]) or "—"),
        )
    console.print(table)


async def _show(event_id: str) -> tuple[DeliveryRow, list[asyncpg.Record]] | None:
    async with open_database() as db, db.connection() as conn:
        row = await outbox.find(conn, event_id)
        if row is None:
            return None
        return row, await outbox.attempts_of(conn, event_id)


@webhooks_app.command(
    epilog=(
        "Examples: alliance webhooks retry evt_3f0c9a… evt_81d2e4…  |  "
        "alliance webhooks retry --failed --merchant mer_tea_house"
    )
)
def retry(
    event_ids: list[str] | None = typer.Argument(
        None, metavar="EVENT_ID", help="Failed events to send again (their evt_… ids)."
    ),
    failed: bool = typer.Option(
        False, "--failed", help="Every failed event instead (only --merchant's, when given)."
    ),
    merchant: str = typer.Option(None, help="With --failed: only this merchant's (a merchant id)."),
) -> None:
    """Send failed webhooks again: back to pending, due now, with a fresh budget of attempts.

    Each gets the full number of attempts and backoff again; its earlier attempts are kept (see
    `alliance webhooks show`) and the new ones continue their numbering. The scheduler sends them
    within a minute, `alliance webhooks deliver` at once. Only failed events change: a pending
    or delivered one named here is left as it is, with a message. Each event put back is recorded
    in the audit log (webhook.retry, by cli:<user>). Exits 1, changing nothing, if an id names no
    event.
    """
    if failed and event_ids:
        raise typer.BadParameter("give event ids or --failed, not both")
    if not failed and not event_ids:
        raise typer.BadParameter("give the failed events' ids, or --failed for all of them")
    if merchant is not None and not failed:
        raise typer.BadParameter("--merchant goes with --failed", param_hint="--merchant")
    result = run(_retry(None if failed else event_ids, merchant))
    if result.unknown:
        err_console.print(
            "[bold red]error[/]: there is no webhook event "
            + ", ".join(repr(escape(event_id)) for event_id in result.unknown)
            + "; nothing was requeued."
        )
        raise typer.Exit(code=1)
    for row in result.refused:
        err_console.print(
            f"[bold yellow]refused[/]: {row.event_id} is {row.status}, not failed; only a failed "
            "webhook can be retried, so it is left as it is."
        )
    if result.requeued:
        table = Table(title="Requeued webhooks, due now")
        for column in ("event", "merchant", "attempts so far", "next attempts"):
            table.add_column(column, justify="left" if column in ("event", "merchant") else "right")
        for row in result.requeued:
            table.add_row(
                row.event_id,
                row.merchant_id,
                str(row.attempts),
                f"{row.attempts + 1}–{row.last_attempt}",
            )
        console.print(table)
    scope = f" of {merchant}" if merchant is not None else ""
    if failed and not result.requeued:
        console.print(f"No failed webhooks{scope}: 0 requeued.")
        return
    console.print(
        f"{len(result.requeued)} requeued{scope}"
        + (
            f", each with {limits.MAX_ATTEMPTS} more attempts; the scheduler sends them within a "
            "minute, `alliance webhooks deliver` now."
            if result.requeued
            else "."
        )
    )


async def _retry(event_ids: list[str] | None, merchant: str | None) -> Requeued:
    now = clock.now()
    actor = cli_actor()
    async with open_database() as db, db.transaction() as conn:
        result = await outbox.requeue_failed(
            conn, now=now, event_ids=event_ids, merchant_id=merchant
        )
        # In the same transaction: the audit entries commit with the change, or neither does.
        for row in result.requeued:
            await audit.append(
                conn,
                actor=actor,
                action=RETRY_ACTION,
                target=row.event_id,
                at=now,
                details={
                    "merchant_id": row.merchant_id,
                    "attempts": row.attempts,
                    "retries": row.retries,
                },
            )
    return result


def _attempts(row: DeliveryRow) -> str:
    if row.status == "pending":
        return f"{row.attempts} (given up after attempt {row.last_attempt})"
    return f"{row.attempts} (given up)" if row.status == "failed" else str(row.attempts)


def _result(status_code: int | None, error: str | None, width: int = 60) -> str:
    if status_code is not None:
        return f"HTTP {status_code}"
    return _one_line(error)[:width] or "—"


def _one_line(text: str | None) -> str:
    """A receiver's answer or an error on one line (its whitespace runs collapsed)."""
    return " ".join((text or "").split())


def _when(instant: datetime | None) -> str:
    return instant.isoformat(timespec="seconds") if instant else "—"
