"""The HTTP service starts on the configured database and reports its health."""

from __future__ import annotations

import httpx
import pytest

from core.config import get_settings
from server.main import create_app


@pytest.fixture
async def client(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://exchange") as client:
            yield client
    get_settings.cache_clear()


async def test_healthz_answers_ok(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_the_index_page_points_the_way_and_says_nothing_about_the_ledger(client, db, ledger):
    """Unauthenticated: no counts of merchants, members or points (DOMAIN: a merchant sees only
    its own data; the console's operators see the alliance's)."""
    from tests.factories import issue, make_member, make_merchant

    await issue(ledger, await make_merchant(db), await make_member(ledger), 75)
    response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {
        "service": "alliance points exchange",
        "api": "/v1/",
        "exchange_keys": "/v1/exchange-keys",
        "openapi": "/openapi.json",
        "console": "/console/",
    }
