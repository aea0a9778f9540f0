"""`alliance keys`: the exchange's own signing keys (responses, webhooks)."""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table

from cli.runtime import console, open_database, run
from core.clock import SystemClock
from exchange import exchange_keys
from exchange.exchange_keys import ExchangeKey

keys_app = typer.Typer(
    help="The exchange's Ed25519 signing keys, published at GET /v1/exchange-keys.",
    no_args_is_help=True,
)


@keys_app.command(epilog="Example: alliance keys rotate --overlap-days 7")
def rotate(
    overlap_days: int = typer.Option(
        7, min=0, help="Days the old keys stay published (and valid) after the new one signs."
    ),
) -> None:
    """Add a new signing key; the keys in use now retire after the overlap."""
    new, retiring = run(_rotate(timedelta(days=overlap_days)))
    console.print(f"New signing key {new.key_id}.")
    for key_id in retiring:
        console.print(f"  {key_id} stays published for {overlap_days} days, then retires.")


async def _rotate(overlap: timedelta) -> tuple[ExchangeKey, list[str]]:
    async with open_database() as db:
        return await exchange_keys.rotate(db, SystemClock().now(), overlap=overlap)


@keys_app.command("list", epilog="Example: alliance keys list")
def list_() -> None:
    """The published keys, newest (the signing one) first."""
    keys = run(_published())
    table = Table(title="Exchange signing keys")
    for column in ("key id", "created", "retires", "role"):
        table.add_column(column)
    for index, key in enumerate(keys):
        table.add_row(
            key.key_id,
            key.created_at.isoformat(timespec="seconds"),
            key.retires_at.isoformat(timespec="seconds") if key.retires_at else "—",
            "signing" if index == 0 else "published",
        )
    console.print(table)


async def _published() -> list[ExchangeKey]:
    async with open_database() as db:
        now = SystemClock().now()
        await exchange_keys.signing_key(db, now)
        return await exchange_keys.published_keys(db, now)
