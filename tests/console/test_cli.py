"""`alliance admin …`: users from the command line, the demo admin, the audit check."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner, Result

from cli.app import app
from core.config import get_settings


@pytest.fixture
def alliance(fresh_database_url, monkeypatch, tmp_path):
    """`alliance …` against a fresh database (in a thread: the CLI runs its own event loop)."""
    monkeypatch.setenv("DATABASE_URL", fresh_database_url)
    monkeypatch.setenv("ALLIANCE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()

    async def invoke(*args: str, stdin: str | None = None) -> Result:
        return await asyncio.to_thread(runner.invoke, app, list(args), input=stdin)

    yield invoke
    get_settings.cache_clear()


async def test_create_user_list_and_verify_the_audit_chain(alliance):
    created = await alliance(
        "admin",
        "create-user",
        "alice",
        "--role",
        "operator",
        "--totp",
        "--password-stdin",
        stdin="a good long password\n",
    )
    assert created.exit_code == 0, created.output
    assert "Created alice (operator)" in created.output
    assert "otpauth://totp/" in created.output
    listed = await alliance("admin", "list-users")
    assert "alice" in listed.output
    assert "operator" in listed.output
    short = await alliance("admin", "create-user", "bob", "--password-stdin", stdin="short\n")
    assert short.exit_code == 1
    assert "12 to 1024 characters" in short.output
    verified = await alliance("admin", "verify-audit")
    assert verified.exit_code == 0, verified.output
    assert "verifies: 1 entries" in verified.output


async def test_demo_user_is_created_once_and_its_password_printed_again(alliance, tmp_path):
    first = await alliance("admin", "demo-user")
    assert first.exit_code == 0, first.output
    assert "/console" in first.output
    password = (tmp_path / "console-admin-password").read_text().strip()
    assert password in first.output
    assert (tmp_path / "console-admin-password").stat().st_mode & 0o077 == 0
    again = await alliance("admin", "demo-user")
    assert again.exit_code == 0
    assert password in again.output
    listed = await alliance("admin", "list-users")
    assert listed.output.count("admin") >= 1
    assert "Created the demo admin" not in again.output
