"""A connection lost while in use is a transient failure (a retry with the same key is safe),
never a 500: found by killing PostgreSQL under load (tests/api/test_postgres_kill.py)."""

from __future__ import annotations

import asyncpg
import pytest

from core.database import ConnectionLost, Database
from exchange.api.errors import failure_response, is_transient


async def test_a_connection_closed_under_a_transaction_is_connection_lost(
    database_url: str,
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        with pytest.raises(ConnectionLost) as lost:
            async with db.connection() as conn, conn.transaction():
                conn.terminate()  # what a killed server leaves the client with
        assert isinstance(lost.value.__cause__, asyncpg.InterfaceError)
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT 1") == 1, "the pool serves on"
    finally:
        await db.close()


async def test_other_interface_errors_are_not_disguised(database_url: str) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        with pytest.raises(asyncpg.InterfaceError):
            async with db.connection() as conn:
                await conn.execute("SELECT $1::int", 1, 2)  # a bug: too many arguments
    finally:
        await db.close()


def lost_mid_transaction() -> asyncpg.InterfaceError:
    error = asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the connection is closed")
    error.__context__ = asyncpg.ConnectionDoesNotExistError("connection was closed")
    return error


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConnectionLost("the database connection was lost"), 503),
        (lost_mid_transaction(), 503),
        (asyncpg.InterfaceError("cannot call Connection.execute(): bad arguments"), 500),
        (RuntimeError("a bug"), 500),
    ],
)
def test_lost_connections_are_answered_503_and_bugs_500(error: Exception, status: int) -> None:
    assert is_transient(error) is (status == 503)
    response = failure_response(error, request_id="r1")
    assert response.status_code == status
    assert ("retry-after" in response.headers) is (status == 503)
