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


async def test_summary_counts_what_the_ledger_holds(client, db, ledger):
    from tests.factories import issue, make_member, make_merchant

    before = (await client.get("/")).json()
    tea = await make_merchant(db)
    member = await make_member(ledger)
    await issue(ledger, tea, member, 75)
    after = (await client.get("/")).json()
    assert after["merchants"] == before["merchants"] + 1
    assert after["members"] == before["members"] + 1
    assert after["outstanding_points"] == before["outstanding_points"] + 75
