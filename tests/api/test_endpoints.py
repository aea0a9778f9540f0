"""Every endpoint of PROTOCOL.md, signed as a partner signs it, on the real ledger."""

from __future__ import annotations

from tests.api.conftest import call, make_partner
from tests.factories import unique


async def enrol(client, partner, clock, ref=None):
    response = await call(
        client,
        partner,
        clock,
        "POST",
        "/v1/members",
        json_body={"external_ref": ref or unique("card")},
    )
    assert response.status_code in (200, 201), response.text
    return response.json()["member_id"]


async def test_members_same_reference_is_the_same_member_at_every_merchant(db, client, clock):
    tea, books = await make_partner(db), await make_partner(db)
    reference = unique("card")
    first = await call(
        client, tea, clock, "POST", "/v1/members", json_body={"external_ref": reference}
    )
    second = await call(
        client, books, clock, "POST", "/v1/members", json_body={"external_ref": reference}
    )
    assert first.status_code == 201
    assert second.status_code == 200
    assert first.json()["member_id"] == second.json()["member_id"]


async def test_issue_redeem_and_balance_round_trip(db, client, clock):
    tea, books = await make_partner(db), await make_partner(db)
    member = await enrol(client, tea, clock)
    issued = await call(
        client,
        tea,
        clock,
        "POST",
        "/v1/issuances",
        json_body={"member_id": member, "points": 100, "reference": "r1"},
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["kind"] == "issuance"
    assert issued.json()["balance_after"] == 100

    redeemed = await call(
        client,
        books,
        clock,
        "POST",
        "/v1/redemptions",
        json_body={"member_id": member, "points": 40, "reference": "r2"},
    )
    assert redeemed.status_code == 201
    assert redeemed.json()["settlement_value"] == 38
    assert redeemed.json()["balance_after"] == 60

    balance = await call(client, books, clock, "GET", f"/v1/members/{member}/balance")
    assert balance.status_code == 200
    assert balance.json()["available"] == 60
    assert balance.json()["held"] == 0
    assert balance.json()["next_expiry"]["points"] == 60


async def test_hold_capture_void_and_reversal(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    await call(
        client,
        partner,
        clock,
        "POST",
        "/v1/issuances",
        json_body={"member_id": member, "points": 100, "reference": "r"},
    )
    hold = await call(
        client,
        partner,
        clock,
        "POST",
        "/v1/holds",
        json_body={"member_id": member, "points": 30, "reference": "h"},
    )
    assert hold.status_code == 201
    assert hold.json()["status"] == "active"
    capture = await call(
        client,
        partner,
        clock,
        "POST",
        f"/v1/holds/{hold.json()['hold_id']}/capture",
        json_body={"points": 20},
    )
    assert capture.status_code == 201
    assert capture.json()["kind"] == "redemption"
    assert capture.json()["balance_after"] == 80

    second = await call(
        client,
        partner,
        clock,
        "POST",
        "/v1/holds",
        json_body={"member_id": member, "points": 10, "reference": "h2"},
    )
    voided = await call(
        client, partner, clock, "POST", f"/v1/holds/{second.json()['hold_id']}/void", json_body={}
    )
    assert voided.status_code == 200
    assert voided.json()["status"] == "voided"

    reversal = await call(
        client,
        partner,
        clock,
        "POST",
        f"/v1/transactions/{capture.json()['transaction_id']}/reversals",
        json_body={"points": 5, "reference": "refund"},
    )
    assert reversal.status_code == 201
    assert reversal.json()["kind"] == "reversal"
    assert reversal.json()["reverses"] == capture.json()["transaction_id"]


async def test_transactions_list_is_newest_first_and_paginates(db, client, clock, partner):
    from datetime import timedelta

    member = await enrol(client, partner, clock)
    ids = []
    for number in range(5):
        clock.advance(timedelta(seconds=1))
        response = await call(
            client,
            partner,
            clock,
            "POST",
            "/v1/issuances",
            json_body={"member_id": member, "points": 10, "reference": f"r{number}"},
        )
        ids.append(response.json()["transaction_id"])
    first = await call(
        client,
        partner,
        clock,
        "GET",
        "/v1/transactions",
        params={"member_id": member, "limit": "3"},
    )
    assert first.status_code == 200
    page = first.json()
    assert [t["transaction_id"] for t in page["data"]] == ids[::-1][:3]
    second = await call(
        client,
        partner,
        clock,
        "GET",
        "/v1/transactions",
        params={"member_id": member, "limit": "3", "cursor": page["next_cursor"]},
    )
    assert [t["transaction_id"] for t in second.json()["data"]] == ids[::-1][3:]
    assert second.json()["next_cursor"] is None

    one = await call(client, partner, clock, "GET", f"/v1/transactions/{ids[0]}")
    assert one.status_code == 200
    assert one.json()["transaction_id"] == ids[0]


async def test_batch_applies_each_operation_on_its_own(db, client, clock, partner):
    member = await enrol(client, partner, clock)
    operations = [
        {
            "op": "issue",
            "idempotency_key": unique("k"),
            "member_id": member,
            "points": 50,
            "reference": "b1",
        },
        {
            "op": "redeem",
            "idempotency_key": unique("k"),
            "member_id": member,
            "points": 80,
            "reference": "b2",
        },
        {
            "op": "redeem",
            "idempotency_key": unique("k"),
            "member_id": member,
            "points": 20,
            "reference": "b3",
        },
        {"op": "teleport", "idempotency_key": unique("k")},
    ]
    response = await call(
        client, partner, clock, "POST", "/v1/batches", json_body={"operations": operations}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["kind"] == "issuance"
    assert results[1]["code"] == "insufficient_points"
    assert results[2]["balance_after"] == 30
    assert results[3]["code"] == "validation_error"


async def test_exchange_keys_are_a_jwk_set(client):
    response = await client.get("/v1/exchange-keys")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    assert {key["kty"] for key in keys} == {"OKP"}
    assert {key["crv"] for key in keys} == {"Ed25519"}
    assert "signature" not in response.headers


async def test_statements_list_is_empty_before_any_settlement(client, clock, partner):
    response = await call(client, partner, clock, "GET", "/v1/statements")
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}
