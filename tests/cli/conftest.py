"""Run `alliance …` as an operator does, against a fresh database."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner, Result

from cli.app import app
from core.config import get_settings


@pytest.fixture
def alliance(fresh_database_url, monkeypatch):
    """Invoke `alliance …` against the fresh database (in a thread: it runs its own loop)."""
    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()

    async def invoke(*args: str) -> Result:
        return await asyncio.to_thread(runner.invoke, app, list(args))

    yield invoke
    get_settings.cache_clear()
