"""Roles: viewers read, operators change, admins also manage users."""

from __future__ import annotations

import httpx
import pytest

from console.users import Role
from tests.console.conftest import make_user, sign_in, token_for
from tests.factories import make_merchant, unique


@pytest.fixture
async def as_viewer(web: httpx.AsyncClient, db) -> httpx.AsyncClient:
    user, _ = await make_user(db, Role.VIEWER)
    assert (await sign_in(web, user.username)).status_code == 303
    return web


@pytest.mark.parametrize(
    "path",
    [
        "/console/",
        "/console/merchants",
        "/console/members",
        "/console/ledger",
        "/console/settlement",
        "/console/adjustments",
        "/console/audit",
    ],
)
async def test_a_viewer_reads_every_ledger_page(as_viewer: httpx.AsyncClient, path: str):
    assert (await as_viewer.get(path)).status_code == 200


async def test_a_viewer_sees_no_change_forms(as_viewer: httpx.AsyncClient):
    merchants = await as_viewer.get("/console/merchants")
    assert "Onboard a merchant" not in merchants.text
    settlement = await as_viewer.get("/console/settlement")
    assert 'data-testid="start-run"' not in settlement.text


async def test_a_viewer_cannot_start_a_settlement_run(as_viewer: httpx.AsyncClient, db):
    async with db.connection() as conn:
        runs_before = await conn.fetchval("SELECT count(*) FROM settlement_runs")
    response = await as_viewer.post(
        "/console/settlement/run",
        data={"confirm": "yes", "csrftoken": await token_for(as_viewer, "/console/settlement")},
    )
    assert response.status_code == 403
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM settlement_runs") == runs_before


async def test_a_viewer_cannot_change_a_merchant(as_viewer: httpx.AsyncClient, db):
    merchant_id = await make_merchant(db)
    token = await token_for(as_viewer)
    for path, data in [
        ("/console/merchants/create", {"name": unique("x"), "liability_limit": "1"}),
        (f"/console/merchants/{merchant_id}/status", {"action": "suspend"}),
        (f"/console/merchants/{merchant_id}/limit", {"liability_limit": "1"}),
        ("/console/adjustments/credit", {"merchant_id": merchant_id}),
    ]:
        response = await as_viewer.post(path, data={**data, "csrftoken": token})
        assert response.status_code == 403, path
    async with db.connection() as conn:
        status = await conn.fetchval(
            "SELECT status FROM merchants WHERE merchant_id = $1", merchant_id
        )
    assert status == "active"


async def test_a_viewer_cannot_download_payment_files(as_viewer: httpx.AsyncClient):
    response = await as_viewer.get("/console/settlement/runs/run_x/files/csv")
    assert response.status_code == 403


async def test_only_admins_manage_users(as_operator: httpx.AsyncClient):
    assert (await as_operator.get("/console/users")).status_code == 403
    response = await as_operator.post(
        "/console/users/create",
        data={
            "username": "sneaky",
            "password": "x" * 20,
            "role": "admin",
            "csrftoken": await token_for(as_operator),
        },
    )
    assert response.status_code == 403


async def test_an_admin_adds_a_user_who_can_then_sign_in(web: httpx.AsyncClient, db, app):
    admin, _ = await make_user(db, Role.ADMIN)
    await sign_in(web, admin.username)
    username = unique("newop").replace("_", "-")
    response = await web.post(
        "/console/users/create",
        data={
            "username": username,
            "password": "a long enough password",
            "role": "operator",
            "csrftoken": await token_for(web, "/console/users"),
        },
    )
    assert response.status_code == 303
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as other:
        assert (await sign_in(other, username, "a long enough password")).status_code == 303
        assert (await other.get("/console/users")).status_code == 403
