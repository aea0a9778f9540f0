"""CSRF: a POST without the token is refused; so is a token from another browser."""

from __future__ import annotations

import re

import httpx

from console.users import Role
from tests.console.conftest import csrf_of, make_user, sign_in, token_for
from tests.factories import unique


async def _merchant_named(db, name: str) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM merchants WHERE name = $1", name)
    return count


async def test_post_without_csrf_token_is_refused_and_changes_nothing(as_operator, db):
    name = unique("No token shop")
    response = await as_operator.post(
        "/console/merchants/create", data={"name": name, "liability_limit": "1000"}
    )
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert await _merchant_named(db, name) == 0


async def test_post_with_a_wrong_csrf_token_is_refused(as_operator, db):
    name = unique("Wrong token shop")
    response = await as_operator.post(
        "/console/merchants/create",
        data={"name": name, "liability_limit": "1000", "csrftoken": "forged.value"},
    )
    assert response.status_code == 403
    assert await _merchant_named(db, name) == 0


async def test_a_token_pair_from_another_browser_is_refused(app, as_operator, db):
    """Double submit alone would accept an attacker's own valid cookie+token pair planted in the
    victim's browser; binding the token to the session refuses it."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as attacker:
        login = await attacker.get("/console/login")
        their_token = csrf_of(login.text)
        their_cookie = attacker.cookies["starlette_admin_csrftoken"]
    as_operator.cookies.set("starlette_admin_csrftoken", their_cookie)
    name = unique("Planted token shop")
    response = await as_operator.post(
        "/console/merchants/create",
        data={"name": name, "liability_limit": "1000", "csrftoken": their_token},
    )
    assert response.status_code == 403
    assert await _merchant_named(db, name) == 0


async def test_post_with_the_sessions_token_is_accepted(as_operator, db):
    name = unique("Good token shop")
    response = await as_operator.post(
        "/console/merchants/create",
        data={"name": name, "liability_limit": "1000", "csrftoken": await token_for(as_operator)},
    )
    assert response.status_code == 303
    assert await _merchant_named(db, name) == 1


async def test_the_form_token_is_the_one_stored_with_the_session(web, db):
    user, _ = await make_user(db, Role.VIEWER)
    await sign_in(web, user.username)
    page = await web.get("/console/")
    from itsdangerous import URLSafeSerializer
    from starlette_admin.security.csrf import _CSRF_SALT

    from tests.console.conftest import SECRET

    token = URLSafeSerializer(SECRET, salt=_CSRF_SALT).loads(csrf_of(page.text))
    async with db.connection() as conn:
        stored = await conn.fetchval(
            "SELECT csrf_token FROM admin_sessions WHERE user_id = $1 AND revoked_at IS NULL",
            user.user_id,
        )
    assert token == stored
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
