"""The console on the real database: in-process through httpx (fast tests), and a real server
on a thread for the browser tests (one server and one Chromium for the whole session)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from console import users
from console.users import Role, User
from core.clock import FixedClock
from core.database import Database
from server.main import create_app
from tests.factories import unique
from tests.log_scan import register_secret

SECRET = "console-test-secret-" + "x" * 32
PASSWORD = "correct horse battery staple"
register_secret(SECRET)
register_secret(PASSWORD)
CHROMIUM = Path("/usr/bin/chromium")
_CSRF_FIELD = re.compile(r'name="csrftoken" value="([^"]+)"')


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running on the main
    thread from its first use to the end of the session, and pytest-asyncio cannot run a test
    while one is."""
    browser = [item for item in items if "page" in getattr(item, "fixturenames", ())]
    if browser:
        others = [item for item in items if item not in browser]
        items[:] = others + browser


@pytest.fixture(autouse=True)
def _console_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # The console reads its cookie-signing key from the environment before the data dir.
    monkeypatch.setenv("ALLIANCE_CONSOLE_SECRET", SECRET)


async def make_user(
    db: Database, role: Role, *, with_totp: bool = False, now: datetime | None = None
) -> tuple[User, str | None]:
    return await users.create_user(
        db,
        username=unique(role.value).lower().replace("_", "-")[:40],
        password=PASSWORD,
        role=role,
        actor="test",
        now=now or datetime(2026, 6, 1, tzinfo=UTC),
        with_totp=with_totp,
    )


@pytest.fixture
async def app(db: Database, clock: FixedClock) -> AsyncIterator[object]:
    application = create_app(database=db, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def web(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
        yield client


def csrf_of(html: str) -> str:
    found = _CSRF_FIELD.search(html)
    assert found, "the page has a form with a CSRF token"
    return unescape(found.group(1))


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    """Submit the login form as a browser does (GET it for the CSRF token, then POST)."""
    page = await client.get("/console/login")
    return await client.post(
        "/console/login",
        data={"username": username, "password": password, "csrftoken": csrf_of(page.text)},
    )


async def token_for(client: httpx.AsyncClient, path: str = "/console/merchants") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text[:500]
    return csrf_of(page.text)


@pytest.fixture
async def operator(db: Database) -> User:
    return (await make_user(db, Role.OPERATOR))[0]


@pytest.fixture
async def as_operator(web: httpx.AsyncClient, operator: User) -> httpx.AsyncClient:
    response = await sign_in(web, operator.username)
    assert response.status_code == 303, response.text[:500]
    return web


# --- a real server for the browser ---------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    clock: FixedClock
    database_url: str


BROWSER_START = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)


def _in_thread(coroutine: Any) -> Any:
    """Run a coroutine on a thread of its own: Playwright's loop may be running on this one."""
    result: dict[str, Any] = {}

    def run() -> None:
        result["value"] = asyncio.run(coroutine)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return result.get("value")


@pytest.fixture(scope="session")
def browser_database_url() -> Iterator[str]:
    """The browser's alliance has a database of its own: starting a settlement run settles every
    finished period of the database, and the shared one holds years of every suite's history."""
    import uuid

    import asyncpg

    from core.migrations import upgrade_to_head_async
    from merchants import repository as merchant_repository
    from tests.conftest import _server_url, _with_database
    from tests.factories import DEFAULT_SETTINGS

    server_url = _server_url()
    name = f"alliance_browser_{uuid.uuid4().hex[:12]}"
    url = _with_database(server_url, name)

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(server_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def create() -> None:
        await admin(f'CREATE DATABASE "{name}"')
        await upgrade_to_head_async(url)
        database = await Database.connect(url, min_size=1, max_size=1)
        try:
            async with database.transaction() as conn:
                await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
        finally:
            await database.close()

    _in_thread(create())
    yield url
    _in_thread(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def live_server(browser_database_url: str) -> Iterator[LiveServer]:
    """The whole app (server.main) under uvicorn on a thread with its own event loop and pool."""
    database_url = browser_database_url
    import uvicorn

    clock = FixedClock(BROWSER_START)
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        database = await Database.connect(database_url, min_size=1, max_size=4)
        application = create_app(database=database, clock=clock)
        config = uvicorn.Config(
            application, host="127.0.0.1", port=0, log_level="warning", ws="none", http="h11"
        )
        server = uvicorn.Server(config)
        holder["server"] = server
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        holder["url"] = f"http://127.0.0.1:{port}"
        ready.set()
        await task
        await database.close()

    def run() -> None:
        asyncio.run(serve())

    thread = threading.Thread(target=run, daemon=True)
    import os

    previous = os.environ.get("ALLIANCE_CONSOLE_SECRET")
    os.environ["ALLIANCE_CONSOLE_SECRET"] = SECRET
    thread.start()
    assert ready.wait(30), "the console server starts"
    try:
        yield LiveServer(str(holder["url"]), clock, database_url)
    finally:
        server = holder["server"]
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)
        if previous is None:
            os.environ.pop("ALLIANCE_CONSOLE_SECRET", None)
        else:
            os.environ["ALLIANCE_CONSOLE_SECRET"] = previous


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, object]) -> dict[str, object]:
    # Debian's chromium, never a downloaded one (`playwright install` is not used).
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}


@pytest.fixture(scope="session")
def base_url() -> str | None:
    # Replaces pytest-base-url's fixture (a session fixture on a class instance, which pytest 9
    # deprecates, and warnings are errors here); the browser tests use live_server.url.
    return None
