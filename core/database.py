"""The one PostgreSQL: an embedded server when no `DATABASE_URL` is given, asyncpg pools over it."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg

from core.config import Settings
from core.limits import BATCH_WORK_POOL_SIZE, STATEMENT_TIMEOUT_S

EMBEDDED_DATABASE = "alliance"


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) a real PostgreSQL from `pgserver` in `data_dir/postgres`.

    The server outlives this process on purpose: the next `alliance` command reuses it.
    """
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir, which warns on machines without XDG.
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only the embedded default needs it

    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return f"postgresql://postgres@/{EMBEDDED_DATABASE}?host={pgdata}"


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return embedded_database_url(settings.data_dir)


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes plain `postgresql://`; SQLAlchemy-style driver suffixes are dropped."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def sqlalchemy_url(url: str) -> str:
    return "postgresql+asyncpg://" + asyncpg_dsn(url).partition("://")[2]


def describe(url: str) -> str:
    """The URL without credentials, for printing."""
    parsed = urlparse(url)
    host = parsed.hostname or parse_qs(parsed.query).get("host", ["local socket"])[0]
    return f"{host}{':' + str(parsed.port) if parsed.port else ''}{parsed.path}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog"
    )
    await conn.execute("SET TIME ZONE 'UTC'")


def _json_dumps(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _json_loads(text: str) -> Any:
    import json

    return json.loads(text)


class ConnectionLost(ConnectionError):
    """The server went away while a connection was in use: whatever was in flight may or may not
    have committed, so the caller answers as for any lost connection (retry with the same key)."""


def _is_closed(conn: asyncpg.Connection) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # a pool's proxy whose connection was taken back
        return True


class Database:
    """An asyncpg pool and the unit-of-work helper every service uses."""

    def __init__(self, pool: asyncpg.Pool, *, url: str | None = None) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 20,
        statement_timeout_s: float | None = STATEMENT_TIMEOUT_S,
    ) -> Database:
        """A pool whose statements wait at most `statement_timeout_s` (None: no bound, for
        batch work whose statements span a whole period)."""
        pool = await asyncpg.create_pool(
            asyncpg_dsn(url),
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            command_timeout=statement_timeout_s,
        )
        return cls(pool, url=url)

    @contextlib.asynccontextmanager
    async def for_batch_work(self) -> AsyncIterator[Database]:
        """The same database through a small pool of its own with no statement bound, for
        batch work a request starts (the console's settlement run): the server's pool bounds
        every statement, and a run's statements span whole periods (STATEMENT_TIMEOUT_S)."""
        assert self.url is not None, "only a pool opened by Database.connect knows its URL"
        batch = await Database.connect(
            self.url, min_size=1, max_size=BATCH_WORK_POOL_SIZE, statement_timeout_s=None
        )
        try:
            yield batch
        finally:
            await batch.close()

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One READ COMMITTED transaction; it commits on exit, rolls back on any exception."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the pool. If the server goes away while it is in use, asyncpg may
        say so only as "the underlying connection is closed" (an InterfaceError, e.g. from a
        transaction's exit); that becomes `ConnectionLost`, which callers treat as transient."""
        async with self.pool.acquire() as conn:
            try:
                yield conn
            except asyncpg.InterfaceError as error:
                if _is_closed(conn):
                    raise ConnectionLost("the database connection was lost") from error
                raise
