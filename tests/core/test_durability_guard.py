"""RELIABILITY.md D7: the exchange refuses to start unless fsync, synchronous_commit and
full_page_writes are on and default_transaction_isolation is READ COMMITTED (ADR 0023).

On real PostgreSQL: the test server passes; databases made unsafe with `ALTER DATABASE … SET` (or a
session's `SET`) are refused, by the guard and by the app's startup. fsync and full_page_writes can
only be changed server-wide, and the test server is shared, so those are judged by the pure
function, and fed to the app's startup through a stand-in reader.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from core import durability
from core.config import get_settings
from core.database import Database
from core.durability import (
    REQUIREMENTS,
    Setting,
    UnsafeDatabaseSettings,
    check,
    ensure_durable,
    read_settings,
    unsafe_settings,
)
from server.main import create_app
from tests.api.test_two_servers import alliance_command, free_port
from tests.conftest import PROJECT_ROOT, temporary_database

SERVE_TIMEOUT_S = 120
"""How long `alliance serve` may take to refuse (a busy 2-core machine starts it slowly)."""

STARTED = "Application startup complete"
"""What uvicorn logs once the app's startup has passed and it serves."""

SAFE = {
    "fsync": Setting("on", "default"),
    "full_page_writes": Setting("on", "default"),
    "synchronous_commit": Setting("on", "default"),
    "default_transaction_isolation": Setting("read committed", "default"),
}


def names(unsafe: list[durability.UnsafeSetting]) -> list[str]:
    return [item.name for item in unsafe]


async def connections_to(conn: asyncpg.Connection, database: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    return count


@pytest.fixture
async def unsafe_database_url() -> AsyncIterator[str]:
    """A fresh, empty database whose sessions get synchronous_commit = off and SERIALIZABLE."""
    async with temporary_database() as url:
        admin = await asyncpg.connect(url)
        try:
            name = await admin.fetchval("SELECT current_database()")
            await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
            await admin.execute(
                f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'serializable'"
            )
        finally:
            await admin.close()
        yield url


# The test server (CI: the machine's PostgreSQL; locally: the embedded pgserver) is safe.


async def test_the_test_server_passes(db: Database) -> None:
    async with db.connection() as conn:
        settings = await read_settings(conn)
        assert set(settings) == {requirement.name for requirement in REQUIREMENTS}
        assert await check(conn) == []
        await ensure_durable(conn)


# What is refused, on real sessions.


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("on", True),
        ("remote_apply", True),
        ("remote_write", False),
        ("local", False),
        ("off", False),
    ],
)
async def test_synchronous_commit_accepts_on_and_remote_apply_only(
    db: Database, value: str, safe: bool
) -> None:
    async with db.connection() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL synchronous_commit = {value}")
        unsafe = await check(conn)
    assert names(unsafe) == ([] if safe else ["synchronous_commit"])
    if not safe:
        assert unsafe[0].value == value
        assert unsafe[0].required == "on"


@pytest.mark.parametrize(
    ("level", "safe"),
    [
        ("read committed", True),
        ("repeatable read", False),
        ("serializable", False),
        ("read uncommitted", False),
    ],
)
async def test_the_default_isolation_must_be_read_committed(
    db: Database, level: str, safe: bool
) -> None:
    async with db.connection() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL default_transaction_isolation = '{level}'")
        unsafe = await check(conn)
    assert names(unsafe) == ([] if safe else ["default_transaction_isolation"])


async def test_a_database_altered_to_be_unsafe_is_refused_naming_each_setting(
    unsafe_database_url: str,
) -> None:
    conn = await asyncpg.connect(unsafe_database_url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        unsafe = await check(conn)
        with pytest.raises(UnsafeDatabaseSettings) as refused:
            await ensure_durable(conn)
    finally:
        await conn.close()

    assert names(unsafe) == ["synchronous_commit", "default_transaction_isolation"]
    assert [(item.value, item.source) for item in unsafe] == [
        ("off", "database"),
        ("serializable", "database"),
    ]
    message = str(refused.value)
    assert refused.value.unsafe == unsafe
    assert "synchronous_commit = 'off' (source: database); required: 'on'" in message
    assert f'ALTER DATABASE "{database}" RESET synchronous_commit;' in message
    assert "default_transaction_isolation = 'serializable'" in message
    assert "required: 'read committed'" in message
    assert f'ALTER DATABASE "{database}" RESET default_transaction_isolation;' in message


async def test_a_client_option_is_seen_and_its_fix_says_where(db: Database) -> None:
    """`pg_settings.source` tells where a value came from; the fix follows it (here: a client's
    options, as DATABASE_URL's `options=-c …` or PGOPTIONS would set it)."""
    assert db.url is not None
    conn = await asyncpg.connect(db.url, server_settings={"synchronous_commit": "local"})
    try:
        unsafe = await check(conn)
    finally:
        await conn.close()
    assert [(item.name, item.value, item.source) for item in unsafe] == [
        ("synchronous_commit", "local", "client")
    ]
    assert "PGOPTIONS" in unsafe[0].fix("alliance", "postgres")


# fsync and full_page_writes: server-wide only, never changed on the shared test server.


@pytest.mark.parametrize("name", ["fsync", "full_page_writes"])
def test_server_wide_settings_off_are_refused_with_the_server_wide_fix(name: str) -> None:
    settings = {**SAFE, name: Setting("off", "configuration file")}
    unsafe = unsafe_settings(settings)
    assert names(unsafe) == [name]
    message = str(UnsafeDatabaseSettings(unsafe, database="alliance", role="postgres"))
    assert f"{name} = 'off' (source: configuration file); required: 'on'" in message
    assert f"ALTER SYSTEM SET {name} = 'on';" in message
    assert "pg_reload_conf()" in message


def test_all_safe_settings_pass_and_every_unsafe_one_is_reported_in_order() -> None:
    assert unsafe_settings(SAFE) == []
    assert unsafe_settings({**SAFE, "synchronous_commit": Setting("ON")}) == []
    everything_off = {
        "fsync": Setting("off", "configuration file"),
        "full_page_writes": Setting("off", "configuration file"),
        "synchronous_commit": Setting("off", "user"),
        "default_transaction_isolation": Setting("repeatable read", "database user"),
    }
    unsafe = unsafe_settings(everything_off)
    assert names(unsafe) == [requirement.name for requirement in REQUIREMENTS]
    message = str(UnsafeDatabaseSettings(unsafe, database="alliance", role="exchange"))
    assert "has 4 unsafe settings" in message
    assert 'ALTER ROLE "exchange" RESET synchronous_commit;' in message
    assert (
        'ALTER ROLE "exchange" IN DATABASE "alliance" RESET default_transaction_isolation;'
        in message
    )


def test_a_setting_the_server_does_not_report_is_unsafe() -> None:
    settings = {name: setting for name, setting in SAFE.items() if name != "full_page_writes"}
    unsafe = unsafe_settings(settings)
    assert names(unsafe) == ["full_page_writes"]
    assert unsafe[0].value == durability.MISSING


# The app's startup calls the guard.


async def test_the_app_refuses_to_start_on_an_unsafe_database_and_closes_its_pool(
    unsafe_database_url: str, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    """What `alliance serve` does: the app opens its own pool from DATABASE_URL."""
    monkeypatch.setenv("DATABASE_URL", unsafe_database_url)
    get_settings.cache_clear()
    try:
        app = create_app()
        with pytest.raises(UnsafeDatabaseSettings, match="synchronous_commit"):
            async with app.router.lifespan_context(app):
                pytest.fail("the app started on a database with synchronous_commit = off")
    finally:
        get_settings.cache_clear()
    async with db.connection() as conn:
        database = unsafe_database_url.rsplit("/", 1)[1]
        assert await connections_to(conn, database) == 0, "the refused app left its pool open"


async def test_the_app_refuses_a_database_it_is_given(unsafe_database_url: str) -> None:
    database = await Database.connect(unsafe_database_url, min_size=1, max_size=2)
    try:
        app = create_app(database=database)
        with pytest.raises(UnsafeDatabaseSettings, match="default_transaction_isolation"):
            async with app.router.lifespan_context(app):
                pytest.fail("the app started on a SERIALIZABLE-by-default database")
    finally:
        await database.close()


@pytest.mark.parametrize("name", ["fsync", "full_page_writes"])
async def test_the_app_refuses_when_a_server_wide_setting_is_off(
    db: Database, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The startup reads through `read_settings`; a stand-in reports the server-wide setting off."""
    real = durability.read_settings

    async def reads_it_off(conn: asyncpg.Connection) -> dict[str, Setting]:
        return {**await real(conn), name: Setting("off", "configuration file")}

    monkeypatch.setattr(durability, "read_settings", reads_it_off)
    app = create_app(database=db)
    with pytest.raises(UnsafeDatabaseSettings, match=f"{name} = 'off'"):
        async with app.router.lifespan_context(app):
            pytest.fail(f"the app started with {name} = off")


async def test_the_app_starts_on_the_test_server(db: Database) -> None:
    app = create_app(database=db)
    async with app.router.lifespan_context(app):
        assert app.state.db is db


# `alliance serve`, a real process: refuses, says why, exits non-zero.


@pytest.mark.parametrize("workers", [1, 2])
async def test_alliance_serve_exits_non_zero_naming_the_unsafe_setting(
    unsafe_database_url: str, tmp_path: Path, workers: int
) -> None:
    """With several workers too: uvicorn's supervisor would exit 0 when its workers refuse, so
    `alliance serve` checks before it starts any."""
    env = {**os.environ, "DATABASE_URL": unsafe_database_url}
    command = [
        *alliance_command(), "serve", "--host", "127.0.0.1", "--port", str(free_port()),
        "--workers", str(workers),
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if STARTED in log.read_text(errors="replace"):
                break  # it serves: fail below, without waiting out the deadline
            await asyncio.sleep(0.2)
    finally:
        if process.poll() is None:
            process.terminate()
        returncode = await asyncio.to_thread(process.wait, SERVE_TIMEOUT_S)
    output = log.read_text(errors="replace")
    assert STARTED not in output, f"alliance serve started on an unsafe database:\n{output}"
    assert returncode == 1, output
    assert "Refusing to start" in output
    assert "synchronous_commit = 'off' (source: database)" in output


@pytest.mark.parametrize("command", [["settle"], ["expire"], ["scheduler"]])
async def test_the_commands_that_write_the_books_refuse_an_unsafe_database(
    unsafe_database_url: str, command: list[str]
) -> None:
    """A one-off settlement or expiry writes the ledger as the server does: the same guard, exit
    1, before it touches anything (the database is not even migrated)."""
    env = {**os.environ, "DATABASE_URL": unsafe_database_url}
    done = await asyncio.to_thread(
        subprocess.run,
        [*alliance_command(), *command],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "synchronous_commit = 'off' (source: database)" in output
    assert "Traceback" not in output
