"""The console in real Chromium (Debian's, through Playwright) against the whole app on a real
server: what an operator does every day, and what a viewer and a forged request cannot do."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, expect

from console.users import Role
from core.database import Database
from exchange.service import Ledger
from merchants import service as merchants
from tests.console.conftest import PASSWORD, LiveServer, make_user
from tests.factories import CREATED_AT, issue, make_merchant, redeem, unique

T = TypeVar("T")


def on_server(live: LiveServer, work: Callable[[Database, Ledger], Awaitable[T]]) -> T:
    """Run `work` with a database of its own (set-up and checks, outside the browser)."""

    async def main() -> T:
        database = await Database.connect(live.database_url, min_size=1, max_size=2)
        try:
            return await work(database, Ledger(database, live.clock))
        finally:
            await database.close()

    # Playwright's sync API runs an event loop on this thread, so the work gets a thread (and a
    # loop) of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=120)


def user(live: LiveServer, role: Role) -> str:
    async def work(db: Database, _: Ledger) -> str:
        return (await make_user(db, role, now=live.clock.now()))[0].username

    return on_server(live, work)


def sign_in(page: Page, live: LiveServer, username: str) -> None:
    page.goto(f"{live.url}/console/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_text("Points issued and redeemed per day")).to_be_visible()


@pytest.fixture(scope="module")
def shop(live_server: LiveServer) -> dict[str, Any]:
    """Two merchants with bank accounts, a member known by a card number, a cross-merchant
    redemption."""

    async def work(db: Database, ledger: Ledger) -> dict[str, Any]:
        issuer_name, acceptor_name = unique("Browser Tea"), unique("Browser Books")
        issuer = await make_merchant(db, name=issuer_name)
        acceptor = await make_merchant(db, name=acceptor_name)
        for merchant_id, iban in (
            (issuer, "DE89370400440532013000"),
            (acceptor, "GB82WEST12345698765432"),
        ):
            await merchants.set_bank_account(
                db, merchant_id, "Shop account", iban, None, CREATED_AT
            )
        ref = unique("card")
        member = (await ledger.register_member(external_ref=ref)).member_id
        await issue(ledger, issuer, member, 900)
        redemption = await redeem(ledger, acceptor, member, 300)
        return {
            "issuer": issuer,
            "acceptor": acceptor,
            "ref": ref,
            "member": member,
            "issuer_name": issuer_name,
            "acceptor_name": acceptor_name,
            "redemption": redemption["transaction_id"],
        }

    return on_server(live_server, work)


def _pem() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_an_operator_onboards_a_merchant_adds_a_key_finds_a_member_and_opens_a_transaction(
    page: Page, live_server: LiveServer, shop: dict[str, Any]
):
    sign_in(page, live_server, user(live_server, Role.OPERATOR))

    page.get_by_role("link", name="Merchants").click()
    name = unique("Browser Cinema")
    form = page.get_by_test_id("create-merchant")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Liability limit").fill("250000.00")
    form.get_by_role("button", name="Create merchant").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.get_by_test_id("limit")).to_have_text("250,000.00 CNY")

    page.get_by_label("Ed25519 public key").fill(_pem())
    page.get_by_label("Key id").fill(unique("till-1"))
    page.get_by_role("button", name="Add key").click()
    keys = page.get_by_test_id("keys")
    expect(keys.get_by_text("usable")).to_be_visible()
    expect(page.locator(".alert-success")).to_contain_text("added")

    page.get_by_role("link", name="Members").click()
    page.get_by_label("External reference").fill(shop["ref"])
    page.get_by_role("button", name="Find member").click()
    expect(page.get_by_test_id("available")).to_have_text("600")
    expect(page.get_by_test_id("refs")).to_contain_text(shop["ref"])
    expect(page.get_by_test_id("lots")).to_contain_text(shop["issuer_name"])

    page.get_by_test_id("transactions").get_by_role("link", name=shop["redemption"]).click()
    expect(page.get_by_test_id("transaction-id")).to_have_text(shop["redemption"])
    expect(page.get_by_test_id("postings")).to_contain_text(f"issuer:{shop['issuer']}")
    obligations = page.get_by_test_id("obligations")
    expect(obligations).to_contain_text("3.00 CNY")  # 300 points at 1 fen
    expect(obligations).to_contain_text("2.85 CNY")  # less the 5% alliance fee


def test_an_operator_runs_a_settlement_and_downloads_its_files(
    page: Page, live_server: LiveServer, shop: dict[str, Any]
):
    username = user(live_server, Role.OPERATOR)
    # The day the shop traded is over: its period can be settled.
    live_server.clock.advance(timedelta(days=1))
    sign_in(page, live_server, username)
    page.get_by_role("link", name="Settlement").click()
    expect(page.get_by_test_id("due-periods").locator("[data-period]")).not_to_have_count(0)
    start = page.get_by_test_id("start-run")
    start.get_by_role("checkbox").check()
    start.get_by_role("button", name="Run settlement").click()
    # The run is a background job: the page follows it, reloading itself, until it ends.
    job = page.get_by_test_id("settlement-job")
    expect(job).to_have_attribute("data-job-state", "settled", timeout=30_000)
    job.get_by_role("link", name=re.compile("^run_")).last.click()
    expect(page.get_by_role("heading", name=re.compile("Run run_"))).to_be_visible()
    statements = page.get_by_test_id("statements")
    expect(statements).to_contain_text(shop["acceptor_name"])
    expect(page.get_by_test_id("matrix")).to_contain_text("3.00 CNY")  # gross receivable
    expect(statements).to_contain_text("2.85 CNY")  # the acceptor's net: gross less the fee

    with page.expect_download() as csv_download:
        page.get_by_test_id("download-csv").click()
    csv_file = csv_download.value
    assert csv_file.suggested_filename.endswith("-payments.csv")
    content = Path(csv_file.path()).read_text(encoding="utf-8")
    assert shop["acceptor"] in content or shop["acceptor_name"] in content

    with page.expect_download() as xml_download:
        page.get_by_test_id("download-pain001").click()
    xml_file = xml_download.value
    assert xml_file.suggested_filename.endswith("-pain001.xml")
    xml = Path(xml_file.path()).read_text(encoding="utf-8")
    assert xml.startswith("<?xml")
    assert "pain.001" in xml


def _post_form(page: Page, path: str, fields: dict[str, str]) -> int:
    """POST a form from the page's own origin with its cookies (as a forged form would be)."""
    status: int = page.evaluate(
        """async ([path, fields]) => {
            const body = new URLSearchParams(fields);
            const response = await fetch(path, {method: "POST", body, redirect: "manual"});
            return response.type === "opaqueredirect" ? 303 : response.status;
        }""",
        [path, fields],
    )
    return status


def _count(live: LiveServer, sql: str, *args: Any) -> int:
    async def work(db: Database, _: Ledger) -> int:
        async with db.connection() as conn:
            found: int = await conn.fetchval(sql, *args)
        return found

    return on_server(live, work)


def test_a_viewer_cannot_start_a_settlement_run(page: Page, live_server: LiveServer):
    sign_in(page, live_server, user(live_server, Role.VIEWER))
    page.get_by_role("link", name="Settlement").click()
    expect(page.get_by_test_id("runs")).to_be_visible()
    expect(page.get_by_test_id("start-run")).to_have_count(0)

    # Forging the form does not help, even with the viewer's own valid CSRF token (from a page
    # a viewer has a form on): the server checks the role, not the page.
    page.goto(f"{live_server.url}/console/account")
    token = page.locator("input[name=csrftoken]").first.get_attribute("value") or ""
    assert token
    runs = _count(live_server, "SELECT count(*) FROM settlement_runs")
    forged = {"confirm": "yes", "csrftoken": token}
    assert _post_form(page, "/console/settlement/run", forged) == 403
    assert _count(live_server, "SELECT count(*) FROM settlement_runs") == runs
    # The token itself is good: a POST a viewer may make goes through with it.
    assert _post_form(page, "/console/audit/verify", {"csrftoken": token}) == 303


def test_a_request_without_the_csrf_token_is_refused(page: Page, live_server: LiveServer):
    sign_in(page, live_server, user(live_server, Role.OPERATOR))
    page.get_by_role("link", name="Merchants").click()
    name = unique("Forged shop")
    created = "SELECT count(*) FROM merchants WHERE name = $1"
    fields = {"name": name, "liability_limit": "1000"}
    assert _post_form(page, "/console/merchants/create", fields) == 403
    assert _post_form(page, "/console/merchants/create", {**fields, "csrftoken": "forged"}) == 403
    assert _count(live_server, created, name) == 0

    # The same request with the page's token is an operator's ordinary create.
    token = page.get_by_test_id("create-merchant").locator("input[name=csrftoken]")
    fields["csrftoken"] = token.get_attribute("value") or ""
    assert _post_form(page, "/console/merchants/create", fields) == 303
    assert _count(live_server, created, name) == 1
