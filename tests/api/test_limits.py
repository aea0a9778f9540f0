"""RELIABILITY A4, list limits: `limit` is 1 to 100 and a cursor is only what the exchange handed
out; anything else is a 422 validation_error naming the parameter, never a 500 or a silent page.
(The body limit and the rate limit are in test_error_codes.py.)
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from core.limits import PAGE_SIZE_MAX
from tests.api.conftest import AUTHORITY, call
from tests.api.test_error_codes import assert_problem, funded_member, names_field


@pytest.fixture
async def client(app):
    """As tests/api/conftest.py's, but a server error comes back as the 500 a partner would see
    instead of being raised into the test."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{AUTHORITY}") as client:
        yield client


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/v1/transactions", "/v1/statements"])
@pytest.mark.parametrize(
    "limit", [str(PAGE_SIZE_MAX + 1), "0", "-1", "1000000", "ten", "1.5", "", "1e2"]
)
async def test_limit_outside_1_to_100_is_a_validation_error(client, clock, partner, path, limit):
    response = await call(client, partner, clock, "GET", path, params={"limit": limit})
    problem = assert_problem(response, 422, "validation_error")
    assert names_field(problem, "limit"), problem


@pytest.mark.parametrize("limit", ["1", str(PAGE_SIZE_MAX)])
async def test_limit_at_its_bounds_is_served(client, clock, partner, limit):
    await funded_member(client, partner, clock, 10)
    response = await call(
        client, partner, clock, "GET", "/v1/transactions", params={"limit": limit}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1


BAD_CURSORS = [
    pytest.param("not-a-cursor", id="garbage"),
    pytest.param("!!!!", id="not_base64"),
    pytest.param("x" * 513, id="too_long"),
    pytest.param(cursor_of({"a": 1}), id="an_object"),
    pytest.param(cursor_of([1, 2]), id="numbers"),
    pytest.param(cursor_of(["yesterday", "txn_1"]), id="not_a_time"),
    pytest.param(cursor_of([None, None]), id="nulls"),
    pytest.param(cursor_of(["2026-06-01T12:00:00+00:00"]), id="one_element"),
    pytest.param(cursor_of(["2026-06-01T12:00:00+00:00", "txn_1", "x"]), id="three_elements"),
    pytest.param(cursor_of(["2026-06-01T12:00:00+00:00", "txn\u0000"]), id="nul_in_id"),
    pytest.param(cursor_of(["0001-01-01T00:00:00+14:00", "txn_1"]), id="time_out_of_range"),
    pytest.param(base64.urlsafe_b64encode(b"\xff\xfe").decode(), id="not_utf8"),
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_bad_cursor_is_a_validation_error(client, clock, partner, cursor):
    await funded_member(client, partner, clock, 10)
    response = await call(
        client, partner, clock, "GET", "/v1/transactions", params={"cursor": cursor}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert names_field(problem, "cursor"), problem


async def test_cursor_from_the_exchange_is_served(client, clock, partner):
    member, _ = await funded_member(client, partner, clock, 10)
    await funded_member(client, partner, clock, 10)
    first = await call(client, partner, clock, "GET", "/v1/transactions", params={"limit": "1"})
    cursor = first.json()["next_cursor"]
    assert cursor
    second = await call(
        client, partner, clock, "GET", "/v1/transactions", params={"limit": "1", "cursor": cursor}
    )
    assert second.status_code == 200, second.text
    assert second.json()["data"][0]["transaction_id"] != first.json()["data"][0]["transaction_id"]


@pytest.mark.parametrize(
    "member_id", [pytest.param("", id="empty"), pytest.param("m" * 65, id="too_long")]
)
async def test_bad_member_filter_is_a_validation_error(client, clock, partner, member_id):
    response = await call(
        client, partner, clock, "GET", "/v1/transactions", params={"member_id": member_id}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert names_field(problem, "member_id"), problem


async def test_member_filter_with_a_nul_is_not_a_server_error(client, clock, partner):
    response = await call(
        client, partner, clock, "GET", "/v1/transactions", params={"member_id": "mbr\u0000"}
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert_problem(response, 422, "validation_error")
    else:
        assert response.json() == {"data": [], "next_cursor": None}


@pytest.mark.parametrize("path", ["/v1/transactions/txn%00", "/v1/members/mbr%00/balance"])
async def test_id_with_a_nul_is_not_a_server_error(client, clock, partner, path):
    response = await call(client, partner, clock, "GET", path)
    assert response.status_code in (404, 422), response.text
    assert_problem(response, response.status_code, response.json()["code"])


@pytest.mark.parametrize("period", ["2026-13-01", "yesterday", "2026-6-1"])
async def test_bad_statement_period_is_a_validation_error(client, clock, partner, period):
    response = await call(
        client, partner, clock, "GET", "/v1/statements", params={"period": period}
    )
    problem = assert_problem(response, 422, "validation_error")
    assert names_field(problem, "period"), problem
