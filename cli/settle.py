"""`alliance settle`: close finished periods, print each run's summary, write payment files."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.ledger import print_break
from cli.runtime import console, err_console, open_database, refuse_unsafe_database, run
from core.clock import SystemClock
from core.config import get_settings
from core.database import Database
from core.errors import ValidationFailed
from settlement import service
from settlement.payments import format_amount
from settlement.runs import ReconciliationFailed, RunResult

PHASES = {
    "claim": "Claiming obligations",
    "merkle": "Hashing transactions",
    "publish": "Writing statements",
    "reconcile": "Reconciling",
}


def settle(
    period: str = typer.Option(None, "--period", help="Settle one business date, YYYY-MM-DD."),
    cutoff: str = typer.Option(
        None, "--cutoff", help="Close an ad-hoc period ending at this RFC 3339 instant."
    ),
    out: Path = typer.Option(
        None, help="Where payment files go (default: <data dir>/settlement/<run id>/)."
    ),
) -> None:
    """Settle every finished period not yet settled (or one period), then write payment files.

    Each period is one run: it claims every unsettled obligation committed before its cut-off,
    nets them, signs the Merkle root of its transactions, reconciles, and only then publishes.
    A break publishes nothing and exits 1 with the rows behind it.
    """
    if period is not None and cutoff is not None:
        raise typer.BadParameter("give --period or --cutoff, not both")
    started = time.monotonic()
    refuse_unsafe_database()
    results = run(_settle(period, cutoff, out))
    if not results:
        console.print("Nothing to settle: every finished period is settled.")
        return
    table = Table(title="Settlement runs")
    for column in ("period", "kind", "merchants", "obligations", "gross", "fees", "transactions"):
        table.add_column(column, justify="left" if column in ("period", "kind") else "right")
    table.add_column("status")
    for result in results:
        r = result.run
        table.add_row(
            f"{r.period_date} (to {r.period_end:%Y-%m-%d %H:%M}Z)",
            r.kind,
            f"{result.merchants:,}",
            f"{r.obligations:,}",
            _money(r.gross_total, r.minor_units, r.currency),
            _money(r.fee_total, r.minor_units, r.currency),
            f"{r.transactions:,}",
            "already settled" if result.replayed else "published",
        )
    console.print(table)
    console.print(f"{len(results)} run(s) in {time.monotonic() - started:.1f} s.")


def _money(minor: int, minor_units: int, currency: str) -> str:
    return f"{format_amount(minor, minor_units)} {currency}"


async def _settle(period: str | None, cutoff: str | None, out: Path | None) -> list[RunResult]:
    clock = SystemClock()
    async with open_database() as db:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("Settling", total=None)

            def report(phase: str, done: int, total: int | None) -> None:
                progress.update(
                    task, description=PHASES.get(phase, phase), completed=done, total=total
                )

            try:
                if period is not None:
                    results = [await service.settle_date(db, clock, _date(period), progress=report)]
                elif cutoff is not None:
                    results = [
                        await service.settle_cutoff(db, clock, _instant(cutoff), progress=report)
                    ]
                else:
                    results = await service.settle_due(db, clock, progress=report)
            except ReconciliationFailed as failure:
                for item in failure.breaks:
                    print_break(item)
                err_console.print(f"[bold red]error[/] ({failure.code}): {failure.detail}")
                raise typer.Exit(code=1) from None
        for result in results:
            await _write_files(db, result, out)
        return results


async def _write_files(db: Database, result: RunResult, out: Path | None) -> None:
    """Payment files are derived from the stored run, so writing them again gives the same bytes."""
    folder = (out or get_settings().data_dir / "settlement") / result.run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in ("csv", "pain001"):
        try:
            content, name, _ = await service.payment_file(db, result.run.run_id, kind)
        except ValidationFailed:
            continue  # no merchant to pay: the CSV (collections only) is all there is
        (folder / name).write_bytes(content)
        written.append(name)
    if written:
        console.print(f"Payment files for {result.run.run_id}: {folder} ({', '.join(written)})")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"--period {text!r} is not a date (YYYY-MM-DD)") from None


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"--cutoff {text!r} is not an RFC 3339 instant") from None
    if instant.tzinfo is None:
        raise typer.BadParameter("--cutoff needs a time zone (e.g. 2026-06-01T16:00:00Z)")
    return instant
