"""`alliance`: the operator's command line."""

from __future__ import annotations

import typer

from cli import ledger, settle
from cli.admin import admin_app
from cli.alliance_settings import settings_app
from cli.keys import keys_app
from cli.merchant import merchant_app
from cli.runtime import console, database_url, open_database, refuse_unsafe_database, where
from cli.webhooks import webhooks_app
from core.config import get_settings

app = typer.Typer(
    name="alliance",
    help="Operate an alliance points exchange: database, merchants, ledger jobs, the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(merchant_app, name="merchant")
app.add_typer(settings_app, name="settings")
app.add_typer(keys_app, name="keys")
app.add_typer(admin_app, name="admin")
app.add_typer(webhooks_app, name="webhooks")
app.command(epilog="Example: alliance expire")(ledger.expire)
app.command(epilog="Example: alliance verify")(ledger.verify)
app.command(epilog="Example: alliance demo")(ledger.demo)
app.command(
    epilog="Examples: alliance settle | alliance settle --period 2026-06-01 | "
    "alliance settle --cutoff 2026-06-01T08:00:00Z"
)(settle.settle)


@app.command(
    epilog="Example: DATABASE_URL=postgresql://postgres@127.0.0.1:5432/alliance alliance migrate"
)
def migrate() -> None:
    """Apply the database migrations (to the embedded PostgreSQL unless DATABASE_URL is set)."""
    from core.migrations import upgrade_to_head

    url = database_url()
    upgrade_to_head(url)
    console.print(f"Database at {where()} is at the latest schema.")


@app.command(epilog="Example: alliance serve --port 8000 --workers 2")
def serve(
    host: str = typer.Option(None, help="Interface to listen on (default ALLIANCE_HOST)."),
    port: int = typer.Option(None, help="Port (default ALLIANCE_PORT, 8000)."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
) -> None:
    """Run the exchange's HTTP server."""
    import uvicorn

    settings = get_settings()
    console.print(f"Database: {where()}")
    refuse_unsafe_database()
    uvicorn.run(
        "server.main:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level="info",
        # Every request is logged once, by exchange.api.observability, with its request id,
        # route and duration; uvicorn's own access line would say the same again.
        access_log=False,
    )


@app.command(epilog="Example: alliance scheduler   (a service in docker-compose.yml)")
def scheduler() -> None:
    """Run settlement (hourly at :05, settling every finished period), expiry (hourly at :20) and
    webhook delivery (every minute) until stopped. Several schedulers may run: each tick goes to
    one, a period is never settled twice and a webhook never sent twice at once (docs/settlement.md,
    ADR 0009, ADR 0022)."""
    import asyncio

    from core.clock import SystemClock
    from settlement import scheduler as nightly

    async def serve() -> None:
        async with open_database() as db:
            await nightly.run(db, SystemClock(), database_url())

    refuse_unsafe_database()
    console.print(
        f"Scheduler on {where()}: settle '{nightly.SETTLE_CRON}', "
        f"expire '{nightly.EXPIRE_CRON}', webhooks '{nightly.WEBHOOKS_CRON}' (UTC cron)."
    )
    asyncio.run(serve())


def main() -> None:
    app()
