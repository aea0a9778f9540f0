"""One unit of work for a console action: the domain service's change and its audit entry commit
together, or neither does.

The domain services (merchants.service, exchange.service.Ledger) each open their own transaction
on the `Database` they are given. The console hands them a `Database` bound to the connection of
its own open transaction, so their transaction becomes a savepoint inside it; the audit entry is
appended after the service returns, before the one commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from core.database import Database


class _OneConnection:
    """The part of asyncpg's pool that `Database` uses, always lending the same connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def acquire(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        @contextlib.asynccontextmanager
        async def lend() -> AsyncIterator[asyncpg.Connection]:
            yield self._conn

        return lend()

    async def close(self) -> None:  # the connection belongs to the caller's pool
        return None


def bound(conn: asyncpg.Connection) -> Database:
    """A `Database` whose transactions are savepoints in `conn`'s open transaction."""
    pool: Any = _OneConnection(conn)
    return Database(pool)
