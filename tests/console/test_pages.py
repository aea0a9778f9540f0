"""The pages, in-process: merchants, members, the ledger explorer, CSV, and no external assets."""

from __future__ import annotations

import base64
import csv
import io
import re
from datetime import timedelta

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from console.limits import PAGE_SIZE
from merchants import service as merchants
from tests.console.conftest import sign_in, token_for
from tests.factories import issue, make_member, make_merchant, redeem, unique


def _public_key_b64() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


async def _audited(db, action: str, target: str) -> bool:
    async with db.connection() as conn:
        return bool(
            await conn.fetchval(
                "SELECT 1 FROM audit_log WHERE action = $1 AND target = $2", action, target
            )
        )


async def test_an_operator_onboards_a_merchant_adds_and_revokes_a_key_and_suspends_it(
    as_operator: httpx.AsyncClient, db
):
    name = unique("Tea house")
    created = await as_operator.post(
        "/console/merchants/create",
        data={
            "name": name,
            "liability_limit": "12,345.67",
            "csrftoken": await token_for(as_operator),
        },
    )
    assert created.status_code == 303
    merchant_id = created.headers["location"].rsplit("/", 1)[1]
    merchant = await merchants.get_merchant(db, merchant_id)
    assert merchant.name == name
    assert merchant.liability_limit == 1_234_567  # exact minor units, never a float
    assert await _audited(db, "merchant.create", merchant_id)

    page_path = f"/console/merchants/{merchant_id}"
    added = await as_operator.post(
        f"{page_path}/keys",
        data={
            "public_key": _public_key_b64(),
            "key_id": f"{merchant_id}-k1",
            "csrftoken": await token_for(as_operator, page_path),
        },
    )
    assert added.status_code == 303
    page = await as_operator.get(page_path)
    assert f"{merchant_id}-k1" in page.text
    assert "usable" in page.text

    revoked = await as_operator.post(
        f"{page_path}/keys/{merchant_id}-k1/revoke",
        data={"csrftoken": await token_for(as_operator, page_path)},
    )
    assert revoked.status_code == 303
    [key] = await merchants.list_keys(db, merchant_id)
    assert key.revoked_at is not None

    limited = await as_operator.post(
        f"{page_path}/limit",
        data={"liability_limit": "500", "csrftoken": await token_for(as_operator, page_path)},
    )
    assert limited.status_code == 303
    suspended = await as_operator.post(
        f"{page_path}/status",
        data={"action": "suspend", "csrftoken": await token_for(as_operator, page_path)},
    )
    assert suspended.status_code == 303
    merchant = await merchants.get_merchant(db, merchant_id)
    assert merchant.status.value == "suspended"
    assert merchant.liability_limit == 50_000
    for action in ("merchant.key_add", "merchant.key_revoke", "merchant.limit", "merchant.suspend"):
        assert await _audited(db, action, merchant_id), action


async def test_a_refused_change_is_shown_and_changes_nothing(as_operator: httpx.AsyncClient, db):
    merchant_id = await make_merchant(db)
    page_path = f"/console/merchants/{merchant_id}"
    response = await as_operator.post(
        f"{page_path}/keys",
        data={"public_key": "not a key", "csrftoken": await token_for(as_operator, page_path)},
    )
    assert response.status_code == 303
    page = await as_operator.get(page_path)
    assert "alert" in page.text
    assert await merchants.list_keys(db, merchant_id) == []


async def test_closing_needs_the_id_typed(as_operator: httpx.AsyncClient, db):
    merchant_id = await make_merchant(db)
    page_path = f"/console/merchants/{merchant_id}"
    await as_operator.post(
        f"{page_path}/status",
        data={
            "action": "close",
            "confirm": "yes",
            "csrftoken": await token_for(as_operator, page_path),
        },
    )
    assert (await merchants.get_merchant(db, merchant_id)).status.value == "active"


async def test_merchant_search_matches_name(as_operator: httpx.AsyncClient, db):
    name = unique("Findable Cinema")
    merchant_id = await make_merchant(db, name=name)
    page = await as_operator.get("/console/merchants", params={"q": name[:20].lower()})
    assert merchant_id in page.text
    assert "No merchants" not in page.text


async def test_find_a_member_by_reference_and_see_lots_with_issuer_and_history(
    as_operator: httpx.AsyncClient, db, ledger
):
    issuer, acceptor = await make_merchant(db, name=unique("Issuer")), await make_merchant(db)
    ref = unique("card")
    member_id = (await ledger.register_member(external_ref=ref)).member_id
    issued = await issue(ledger, issuer, member_id, 700)
    await redeem(ledger, acceptor, member_id, 200)

    found = await as_operator.get("/console/members", params={"q": ref})
    assert found.status_code == 303
    page = await as_operator.get(found.headers["location"])
    assert page.status_code == 200
    assert 'data-testid="available">500<' in page.text
    assert issued["transaction_id"] in page.text
    lots = page.text.split('data-testid="lots"')[1].split("</table>")[0]
    assert "Issuer" in lots
    assert ">700<" in lots
    assert ">500<" in lots

    # The page lists every external reference of the member, not only the one searched for.
    # (The ledger API enrols one per member; the schema allows more, e.g. a linked phone hash.)
    phone = unique("phone-sha256")
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO member_refs (external_ref, member_id) VALUES ($1, $2)", phone, member_id
        )
    by_phone = await as_operator.get("/console/members", params={"q": phone})
    assert by_phone.status_code == 303
    page = await as_operator.get(by_phone.headers["location"])
    refs = page.text.split('data-testid="refs"')[1].split("</div>")[0]
    assert ref in refs
    assert phone in refs

    missing = await as_operator.get("/console/members", params={"q": unique("nobody")})
    assert missing.status_code == 200
    assert 'data-testid="no-member"' in missing.text


async def test_the_ledger_explorer_filters_and_pages_by_keyset(
    as_operator: httpx.AsyncClient, db, ledger
):
    merchant_id = await make_merchant(db)
    member_id = await make_member(ledger)
    ids = [
        str((await issue(ledger, merchant_id, member_id, n + 1))["transaction_id"])
        for n in range(PAGE_SIZE + 5)
    ]
    first = await as_operator.get("/console/ledger", params={"member": member_id})
    seen_first = set(re.findall(r"txn_[0-9A-Z]{26}", first.text))
    assert len(seen_first) == PAGE_SIZE
    next_link = re.search(r'data-testid="next-page" href="\?([^"]+)"', first.text)
    assert next_link
    second = await as_operator.get("/console/ledger?" + next_link.group(1).replace("&amp;", "&"))
    seen_second = set(re.findall(r"txn_[0-9A-Z]{26}", second.text))
    assert seen_first | seen_second == set(ids)
    assert not seen_first & seen_second
    assert 'data-testid="next-page"' not in second.text

    by_kind = await as_operator.get(
        "/console/ledger", params={"member": member_id, "kind": "redemption"}
    )
    assert "No transactions." in by_kind.text


async def test_the_ledger_explorer_filters_on_a_rare_kind_alone(
    web: httpx.AsyncClient, operator, db, ledger, clock
):
    # Later than any other test's ledger rows, so this reversal is the newest of its kind.
    clock.advance(timedelta(days=365 * 30))
    as_operator = web
    assert (await sign_in(web, operator.username)).status_code == 303
    merchant_id = await make_merchant(db)
    member_id = await make_member(ledger)
    issued = await issue(ledger, merchant_id, member_id, 40)
    reversal = await ledger.reverse(
        merchant_id=merchant_id,
        idempotency_key=unique("key"),
        transaction_id=issued["transaction_id"],
        reference="typo",
        points=15,
    )
    page = await as_operator.get("/console/ledger", params={"kind": "reversal"})
    assert page.status_code == 200
    listed = re.findall(r"txn_[0-9A-Z]{26}", page.text)
    assert listed[0] == reversal.body["transaction_id"]
    assert issued["transaction_id"] not in listed
    table = page.text.split('data-testid="transactions"')[1].split("</table>")[0]
    kinds = set(re.findall(r'data-kind="([a-z]+)"', table))
    assert kinds == {"reversal"}

    refused = await as_operator.get("/console/ledger", params={"kind": "reversal' OR '1'='1"})
    assert refused.status_code == 303
    assert (await as_operator.get(refused.headers["location"])).status_code == 200


async def test_csv_export_has_every_matching_row_and_is_audited(
    as_operator: httpx.AsyncClient, db, ledger
):
    merchant_id = await make_merchant(db)
    member_id = await make_member(ledger)
    for points in (10, 20, 30):
        await ledger.issue(
            merchant_id=merchant_id,
            idempotency_key=unique("key"),
            member_id=member_id,
            points=points,
            reference=f"=cmd|{points}",
        )
    response = await as_operator.get("/console/ledger/export.csv", params={"member": member_id})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(int(row["points"]) for row in rows) == [10, 20, 30]
    assert {row["member_id"] for row in rows} == {member_id}
    # A reference that looks like a formula is quoted so a spreadsheet never runs it.
    assert all(row["reference"].startswith("'=") for row in rows)
    async with db.connection() as conn:
        details = await conn.fetchval(
            "SELECT details FROM audit_log WHERE action = 'ledger.export' ORDER BY seq DESC LIMIT 1"
        )
    assert details == {"member": member_id}


async def test_a_transaction_shows_its_postings_and_obligations(
    as_operator: httpx.AsyncClient, db, ledger
):
    issuer = await make_merchant(db, name=unique("Bookshop"))
    acceptor = await make_merchant(db, name=unique("Cinema"))
    member_id = await make_member(ledger)
    await issue(ledger, issuer, member_id, 400)
    redemption = await redeem(ledger, acceptor, member_id, 300)
    page = await as_operator.get(f"/console/ledger/transactions/{redemption['transaction_id']}")
    assert page.status_code == 200
    postings = page.text.split('data-testid="postings"')[1].split("</table>")[0]
    assert f"member:{member_id}" in postings
    assert f"issuer:{issuer}" in postings
    assert "-300" in postings
    assert "+300" in postings
    obligations = page.text.split('data-testid="obligations"')[1].split("</table>")[0]
    # 300 points at 1 fen: gross 3.00, fee 5% = 0.15, the acceptor is owed 2.85.
    assert "3.00 CNY" in obligations
    assert "0.15 CNY" in obligations
    assert "2.85 CNY" in obligations
    missing = await as_operator.get("/console/ledger/transactions/txn_nothing")
    assert missing.status_code == 404


async def test_the_dashboard_has_its_charts(as_operator: httpx.AsyncClient, db, ledger):
    merchant_id = await make_merchant(db)
    await issue(ledger, merchant_id, await make_member(ledger), 100)
    page = await as_operator.get("/console/")
    for title in (
        "Points issued and redeemed per day",
        "Outstanding liability by issuer",
        "Breakage per day",
        "Cross-merchant flow",
        "Exposure as a share of the liability limit",
    ):
        assert title in page.text, title
    assert page.text.count('class="apex-chart"') == 5
    assert "apexcharts.min.js" in page.text


async def test_every_asset_is_served_by_the_app(as_operator: httpx.AsyncClient):
    """No CDN: every script, stylesheet, image and font URL in the pages is the app's own."""
    for path in ("/console/", "/console/merchants", "/console/ledger", "/console/login"):
        page = await as_operator.get(path)
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        urls += re.findall(r"@import url\('([^']+)'\)", page.text)
        external = [u for u in urls if re.match(r"^(https?:)?//", u) and "console.test" not in u]
        assert external == [], (path, external)
        for asset in [u for u in urls if "/console/static/" in u][:5]:
            assert (await as_operator.get(asset)).status_code == 200, asset
