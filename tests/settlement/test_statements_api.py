"""Statements and inclusion proofs through the signed API: own only, paged, filtered by period,
and a proof a merchant can check with nothing but the exchange's published key."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from server.main import create_app
from settlement import merkle
from tests.api.conftest import AUTHORITY, call, make_partner
from tests.factories import issue, make_member, redeem
from tests.settlement.conftest import MORNING

DAY_ONE_CLOSES = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
async def client(alliance_db, day_clock):
    app = create_app(database=alliance_db, clock=day_clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as c:
            yield c


@pytest.fixture
async def settled(alliance_db, alliance_ledger, day_clock):
    from settlement import service

    tea, books = await make_partner(alliance_db), await make_partner(alliance_db)
    ann = await make_member(alliance_ledger)
    issued = await issue(alliance_ledger, tea.merchant_id, ann, 300)
    await redeem(alliance_ledger, books.merchant_id, ann, 120)  # Tea owes Books 120, fee 6
    day_clock.set(DAY_ONE_CLOSES + timedelta(minutes=1))
    await service.settle_due(alliance_db, day_clock)
    return {"tea": tea, "books": books, "ann": ann, "issued": issued}


async def test_a_merchant_reads_its_own_statement(client, day_clock, settled):
    tea, books = settled["tea"], settled["books"]
    response = await call(client, books, day_clock, "GET", "/v1/statements")
    assert response.status_code == 200, response.text
    [statement] = response.json()["data"]
    assert statement["merchant_id"] == books.merchant_id
    assert (statement["receivable"], statement["payable"], statement["fees"]) == (120, 0, 6)
    assert statement["net"] == 114
    assert statement["direction"] == "receive"
    assert statement["period"]["end"] == "2026-06-01T16:00:00.000000Z"
    assert statement["lines"][0]["counterparty_id"] == tea.merchant_id

    one = await call(client, books, day_clock, "GET", f"/v1/statements/{statement['statement_id']}")
    assert one.status_code == 200
    assert one.json() == statement


async def test_another_merchants_statement_is_not_found(client, day_clock, settled):
    tea, books = settled["tea"], settled["books"]
    [theirs] = (await call(client, tea, day_clock, "GET", "/v1/statements")).json()["data"]
    response = await call(
        client, books, day_clock, "GET", f"/v1/statements/{theirs['statement_id']}"
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert theirs["statement_id"] not in response.text


@pytest.mark.parametrize(("period", "count"), [("2026-06-01", 1), ("2026-06-02", 0)])
async def test_statements_filter_by_period(client, day_clock, settled, period, count):
    response = await call(
        client, settled["books"], day_clock, "GET", "/v1/statements", params={"period": period}
    )
    assert response.status_code == 200
    assert len(response.json()["data"]) == count


@pytest.mark.parametrize("period", ["2026-02-30", "June 1", "2026-6-1"])
async def test_a_malformed_period_is_a_validation_error(client, day_clock, settled, period):
    response = await call(
        client, settled["books"], day_clock, "GET", "/v1/statements", params={"period": period}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_statements_page_newest_first(alliance_db, alliance_ledger, client, day_clock):
    from settlement import service

    tea, books = await make_partner(alliance_db), await make_partner(alliance_db)
    ann = await make_member(alliance_ledger)
    for day in range(3):
        day_clock.set(MORNING + timedelta(days=day))
        await issue(alliance_ledger, tea.merchant_id, ann, 10)
        await redeem(alliance_ledger, books.merchant_id, ann, 10)
    day_clock.set(DAY_ONE_CLOSES + timedelta(days=2, minutes=1))
    assert len(await service.settle_due(alliance_db, day_clock)) == 3

    seen, cursor = [], None
    while True:
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = (await call(client, books, day_clock, "GET", "/v1/statements", params=params)).json()
        seen += [s["period"]["date"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["2026-06-03", "2026-06-02", "2026-06-01"]


async def test_an_inclusion_proof_checks_out_against_the_published_key(client, day_clock, settled):
    tea = settled["tea"]
    transaction_id = settled["issued"]["transaction_id"]
    proof = (
        await call(client, tea, day_clock, "GET", f"/v1/transactions/{transaction_id}/proof")
    ).json()
    txn = (await call(client, tea, day_clock, "GET", f"/v1/transactions/{transaction_id}")).json()
    keys = (await client.get("/v1/exchange-keys")).json()["keys"]

    # The leaf, from the transaction as the API shows it.
    leaf = merkle.leaf_hash(
        merkle.transaction_leaf_data(
            transaction_id=txn["transaction_id"],
            kind=txn["kind"],
            merchant_id=txn["merchant_id"],
            member_id=txn["member_id"],
            currency=txn.get("currency", "AP"),
            points=txn["points"],
            created_at=datetime.fromisoformat(txn["created_at"].replace("Z", "+00:00")),
            settlement_value=txn["settlement_value"],
            balance_after=txn["balance_after"],
            reverses=txn["reverses"],
        )
    )
    assert leaf == b64(proof["leaf_hash"])
    merchant_root = merkle.root_from_path(
        leaf,
        proof["leaf_index"],
        proof["merchant_leaves"],
        [b64(h) for h in proof["merchant_path"]],
    )
    assert merchant_root == b64(proof["merchant_root"])
    top_leaf = merkle.leaf_hash(
        merkle.merchant_leaf_data(tea.merchant_id, proof["merchant_transactions"], merchant_root)
    )
    root = merkle.root_from_path(
        top_leaf, proof["top_index"], proof["top_leaves"], [b64(h) for h in proof["top_path"]]
    )
    assert root == b64(proof["root"])
    message = "|".join(
        (
            "alliance-settlement-root-v1",
            proof["run_id"],
            proof["period_start"] or "",
            proof["period_end"],
            str(proof["run_transactions"]),
            root.hex(),
        )
    ).encode()
    [key] = [k for k in keys if k["kid"] == proof["key_id"]]
    Ed25519PublicKey.from_public_bytes(b64url(key["x"])).verify(
        b64(proof["root_signature"]), message
    )


async def test_a_proof_is_refused_for_another_merchants_or_an_unsettled_transaction(
    alliance_ledger, client, day_clock, settled
):
    tea, books = settled["tea"], settled["books"]
    transaction_id = settled["issued"]["transaction_id"]
    theirs = await call(client, books, day_clock, "GET", f"/v1/transactions/{transaction_id}/proof")
    assert theirs.status_code == 404
    fresh = await issue(alliance_ledger, tea.merchant_id, settled["ann"], 5)
    unsettled = await call(
        client, tea, day_clock, "GET", f"/v1/transactions/{fresh['transaction_id']}/proof"
    )
    assert unsettled.status_code == 404
    assert unsettled.json()["code"] == "not_found"
