"""Errors the framework raises before a route runs are problems too, and never a 5xx."""

from __future__ import annotations

from tests.api.conftest import signed_headers


async def test_body_that_is_not_utf8_is_a_validation_error(client, clock, partner):
    body = b"\xff\xfe{"
    headers = signed_headers(
        partner,
        clock,
        method="POST",
        path="/v1/members",
        body=body,
        headers={"idempotency-key": "not-utf8"},
    )
    response = await client.post("/v1/members", content=body, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"


async def test_expiry_beyond_what_utc_can_hold_is_a_validation_error(client, clock, partner):
    from tests.api.conftest import call

    for extreme in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"):
        response = await call(
            client,
            partner,
            clock,
            "POST",
            "/v1/issuances",
            json_body={"member_id": "mbr_x", "points": 1, "reference": "r", "expires_at": extreme},
        )
        assert response.status_code == 422, response.text
        assert response.json()["fields"] == {"expires_at": "out of range"}


async def test_batch_operation_with_an_extreme_expiry_is_a_problem_in_place(client, clock, partner):
    from tests.api.conftest import call

    operation = {
        "op": "issue",
        "idempotency_key": "extreme-expiry",
        "member_id": "mbr_x",
        "points": 1,
        "reference": "r",
        "expires_at": "0001-01-01T00:00:00+05:00",
    }
    response = await call(
        client, partner, clock, "POST", "/v1/batches", json_body={"operations": [operation]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["code"] == "validation_error"
