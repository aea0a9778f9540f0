"""What every command needs: a database (embedded or `DATABASE_URL`), migrated, and a clock."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

from core.config import get_settings
from core.database import Database, describe, resolve_database_url
from core.durability import UnsafeDatabaseSettings, ensure_durable
from core.errors import DomainError

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


def cli_actor() -> str:
    """Who the audit log names for a CLI action: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return "cli"


def database_url() -> str:
    return resolve_database_url(get_settings())


@contextlib.asynccontextmanager
async def open_database() -> AsyncIterator[Database]:
    settings = get_settings()
    # Operator commands are batch work (core.limits.STATEMENT_TIMEOUT_S): no per-statement bound.
    database = await Database.connect(
        database_url(),
        min_size=1,
        max_size=settings.pool_max_size,
        statement_timeout_s=None,
    )
    try:
        yield database
    finally:
        await database.close()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; an expected refusal becomes a clear message and exit 1."""
    try:
        return asyncio.run(coroutine)
    except DomainError as error:
        err_console.print(f"[bold red]error[/] ({error.code}): {error.detail}")
        raise typer.Exit(code=1) from None
    except OSError as error:
        err_console.print(f"[bold red]error[/]: cannot reach the database: {error}")
        raise typer.Exit(code=2) from None


async def _check_durable() -> None:
    async with open_database() as db, db.connection() as conn:
        await ensure_durable(conn)


def refuse_unsafe_database() -> None:
    """Exit 1, before anything starts, unless the database keeps what it commits and runs at the
    isolation level the code expects (core.durability, ADR 0023). The server's own startup checks
    too, but a refusal there under several workers would leave uvicorn exiting 0."""
    try:
        run(_check_durable())
    except UnsafeDatabaseSettings as error:
        err_console.print("[bold red]error[/]: the database is not safe to serve from:")
        err_console.print(str(error), markup=False, highlight=False)
        raise typer.Exit(code=1) from None


def where() -> str:
    return describe(database_url())
