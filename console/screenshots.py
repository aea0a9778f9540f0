"""`make screenshots`: a PNG of every console page, from the demo alliance, in docs/screenshots/.

Runs the whole app (server.main) on a free local port against the configured database (the one
`make run` seeds), signs in with Debian's Chromium through Playwright, and saves each page.
To have something on every page it makes, idempotently: two screenshot users (an admin and an
operator; their passwords are reset to random ones on every run), one pending adjustment, and,
if no settlement run exists yet, settles the demo's finished days (what `alliance settle` does).
A development tool: Playwright is a dev dependency, and nothing in the console imports this.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import threading
from pathlib import Path
from typing import Any

from core.clock import SystemClock
from core.config import get_settings
from core.database import Database, resolve_database_url

OUT = Path("docs/screenshots")
CHROMIUM = "/usr/bin/chromium"
ADMIN = "screenshots-admin"
OPERATOR = "screenshots-operator"
VIEWPORT = {"width": 1440, "height": 900}


async def _prepare(db: Database) -> dict[str, str]:
    """Users and a little activity for the pages; returns the passwords."""
    from console import adjustments, users
    from console.errors import UserNotFound
    from console.users import Role
    from settlement import service as settlement

    now = SystemClock().now()
    passwords = {}
    for username, role in ((ADMIN, Role.ADMIN), (OPERATOR, Role.OPERATOR)):
        password = secrets.token_urlsafe(16)
        passwords[username] = password
        try:
            await users.get_user(db, username)
        except UserNotFound:
            await users.create_user(
                db, username=username, password=password, role=role, actor="screenshots", now=now
            )
        else:
            await users.set_password(
                db, username=username, password=password, actor="screenshots", now=now
            )
    operator = await users.get_user(db, OPERATOR)
    async with db.connection() as conn:
        pending = await conn.fetchval("SELECT count(*) FROM adjustments WHERE status = 'pending'")
        member = await conn.fetchval(
            "SELECT member_id FROM member_refs WHERE external_ref = 'card-000007'"
        )
        merchant = await conn.fetchval("SELECT merchant_id FROM merchants ORDER BY name LIMIT 1")
        runs = await conn.fetchval("SELECT count(*) FROM settlement_runs")
    if not pending and member and merchant:
        await adjustments.propose_credit(
            db,
            merchant_id=merchant,
            member_id=member,
            points=200,
            reason="Goodwill: delayed order, ticket #4711",
            expires_at=None,
            proposer=operator,
            now=now,
        )
    if not runs:
        await settlement.run_settlement(db, SystemClock())
    return passwords


def _serve(url_holder: dict[str, Any], ready: threading.Event, stop: threading.Event) -> None:
    import uvicorn

    from server.main import create_app

    async def main() -> None:
        settings = get_settings()
        database = await Database.connect(resolve_database_url(settings), min_size=1, max_size=4)
        app = create_app(database=database)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="none")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        url_holder["url"] = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.should_exit = True
        await task
        await database.close()

    asyncio.run(main())


def _shoot(base: str, passwords: dict[str, str], db_pages: dict[str, str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]

        def shot(name: str, path: str | None = None, *, full: bool = True) -> None:
            if path is not None:
                page.goto(base + path)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(400)  # charts animate in
            target = OUT / f"{name}.png"
            page.screenshot(path=str(target), full_page=full)
            written.append(target)

        page.goto(base + "/console/login")
        shot("01-sign-in", full=False)
        page.fill("#username", OPERATOR)
        page.fill("#password", passwords[OPERATOR])
        page.click("button[type=submit]")
        page.wait_for_url(base + "/console/")
        shot("02-dashboard")
        shot("03-merchants", "/console/merchants")
        shot("04-merchant", f"/console/merchants/{db_pages['merchant']}")
        shot("05-member-search", "/console/members")
        shot("06-member", f"/console/members/{db_pages['member']}?ref=card-000007")
        shot("07-ledger", "/console/ledger")
        shot("08-transaction", f"/console/ledger/transactions/{db_pages['transaction']}")
        shot("09-settlement", "/console/settlement")
        if db_pages.get("run"):
            shot("10-settlement-run", f"/console/settlement/runs/{db_pages['run']}")
        shot("11-adjustments", "/console/adjustments")
        shot("12-audit-log", "/console/audit")
        page.goto(base + "/console/account")
        shot("13-account")
        page.context.clear_cookies()
        page.goto(base + "/console/login")
        page.fill("#username", ADMIN)
        page.fill("#password", passwords[ADMIN])
        page.click("button[type=submit]")
        page.wait_for_url(base + "/console/")
        shot("14-admin-users", "/console/users")
        browser.close()
    return written


async def _pages(db: Database) -> dict[str, str]:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            """SELECT t.transaction_id FROM transactions t JOIN obligations o
                 ON o.member_id = t.member_id AND o.transaction_id = t.transaction_id
               WHERE t.kind = 'redemption' ORDER BY t.created_at DESC LIMIT 1"""
        )
        merchant = await conn.fetchval("SELECT merchant_id FROM merchants ORDER BY name LIMIT 1")
        member = await conn.fetchval(
            "SELECT member_id FROM member_refs WHERE external_ref = 'card-000007'"
        )
        run = await conn.fetchval(
            "SELECT run_id FROM settlement_runs ORDER BY period_end DESC LIMIT 1"
        )
    pages = {
        "transaction": row["transaction_id"] if row else "",
        "merchant": merchant or "",
        "member": member or "",
    }
    if run:
        pages["run"] = run
    return pages


def main() -> int:
    async def prepare() -> tuple[dict[str, str], dict[str, str]]:
        database = await Database.connect(resolve_database_url(get_settings()), max_size=4)
        try:
            return await _prepare(database), await _pages(database)
        finally:
            await database.close()

    passwords, pages = asyncio.run(prepare())
    holder: dict[str, Any] = {}
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_serve, args=(holder, ready, stop), daemon=True)
    thread.start()
    if not ready.wait(60):
        print("the server did not start", file=sys.stderr)  # noqa: T201
        return 1
    try:
        written = _shoot(holder["url"], passwords, pages)
    finally:
        stop.set()
        thread.join(15)
    for path in written:
        print(path)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
