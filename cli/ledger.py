"""Ledger commands: expire, verify, demo."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.runtime import console, err_console, open_database, refuse_unsafe_database, run
from core.clock import SystemClock
from core.config import get_settings
from exchange import demo as demo_seed, nonces
from exchange.expiry import ExpiryReport
from exchange.reconcile import Break, Check, verify as verify_books
from exchange.service import Ledger
from settlement import service as settlement_service


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def expire() -> None:
    """Write off every lot past its expiry (breakage), close lapsed holds, prune old keys."""
    refuse_unsafe_database()
    report = run(_expire())
    table = Table(title="Breakage by issuer")
    for column in ("issuer", "currency", "points written off"):
        table.add_column(column, justify="right" if column.startswith("points") else "left")
    for (issuer, currency), points in sorted(report.breakage_by_issuer.items()):
        table.add_row(issuer, currency, f"{points:,}")
    if report.breakage_by_issuer:
        console.print(table)
    console.print(
        f"Expired {report.lots:,} lots ({report.points:,} points) of {report.members:,} members; "
        f"{report.holds_lapsed:,} lapsed holds closed."
    )


async def _expire() -> ExpiryReport:
    async with open_database() as db:
        with _progress() as progress:
            task = progress.add_task("Writing off expired lots", total=None)

            def advance(members: int, points: int) -> None:
                progress.update(task, completed=members, description=f"{points:,} points")

            ledger = Ledger(db, SystemClock())
            report = await ledger.expire(on_progress=advance)
        pruned = await ledger.prune_idempotency_records()
        console.print(f"Pruned {pruned:,} idempotency records past their 7-day retention.")
        forgotten = await nonces.prune(db, ledger.clock.now())
        console.print(f"Pruned {forgotten:,} request nonces past their signatures' window.")
        return report


def verify() -> None:
    """Reconcile the ledger and every settlement run (claims, Merkle roots, signatures); print
    each break with the rows behind it; exit 1 on any."""
    breaks = run(_verify())
    if not breaks:
        console.print("[bold green]The books balance[/]: every reconciliation check passed.")
        return
    for item in breaks:
        print_break(item)
    err_console.print(f"[bold red]{len(breaks)} check(s) failed.[/]")
    raise typer.Exit(code=1)


async def _verify() -> list[Break]:
    async with open_database() as db:
        from exchange.reconcile import CHECKS

        with _progress() as progress:
            task = progress.add_task("Reconciling", total=len(CHECKS))

            def advance(check: Check) -> None:
                progress.update(task, advance=1, description=check.name)

            breaks = await verify_books(db, on_check=advance)
            runs = progress.add_task("Settlement runs", total=None)

            def advance_runs(phase: str, done: int, total: int | None) -> None:
                progress.update(runs, completed=done, total=total)

            return breaks + await settlement_service.verify(db, progress=advance_runs)


def print_break(item: Break) -> None:
    table = Table(title=f"BREAK {item.check}: {item.description} ({item.count} rows)")
    columns = list(item.rows[0]) if item.rows else []
    for column in columns:
        table.add_column(column)
    for row in item.rows:
        table.add_row(*(str(row[column]) for column in columns))
    err_console.print(table)


def demo(
    data_dir: Path = typer.Option(None, help="Where demo private keys go (default: data dir)."),
) -> None:
    """Seed a demo alliance (tea house, bookshop, cinema, 300 members, a week of history).

    Does nothing if the demo alliance is already there.
    """
    report = run(_demo(data_dir or get_settings().data_dir))
    if report.already_seeded:
        console.print("The demo alliance is already seeded; nothing to do.")
        return
    console.print(
        f"Seeded {len(report.merchants)} merchants, {report.members} members, "
        f"{report.operations:,} operations ({report.refused:,} refused, as in a real week)."
    )
    for name, merchant_id in report.merchants.items():
        console.print(f"  {name:<10} {merchant_id}")
    console.print("Demo merchants' private keys (to sign requests):")
    for path in report.key_files:
        console.print(f"  {path}")


async def _demo(data_dir: Path) -> demo_seed.DemoReport:
    async with open_database() as db:
        with _progress() as progress:
            hours = demo_seed.HISTORY_DAYS * 24
            task = progress.add_task("Simulating a week of tills", total=hours)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return await demo_seed.seed(db, SystemClock(), data_dir=data_dir, on_progress=advance)
