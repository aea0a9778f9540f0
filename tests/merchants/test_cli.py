"""`alliance merchant …` and `alliance settings …` end to end on the test database.

The commands call asyncio.run themselves, so they run on a worker thread: these tests already run
inside the session's event loop.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

import cli.merchant
from cli.alliance_settings import settings_app
from cli.merchant import merchant_app
from core.clock import FixedClock
from core.config import get_settings
from core.database import Database
from merchants import service
from merchants.models import MerchantStatus
from tests.merchants.conftest import raw_public_key, unique


@pytest.fixture(autouse=True)
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")  # rich reads it: keep table cells on one line
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def invoke(app: typer.Typer, *args: str) -> Result:
    return await asyncio.to_thread(lambda: CliRunner().invoke(app, list(args)))


async def create(name: str | None = None) -> str:
    merchant_id = unique("mer_cli")
    result = await invoke(
        merchant_app, "create", name or unique("Cli Shop"), "--limit", "700", "--id", merchant_id
    )
    assert result.exit_code == 0, result.output
    return merchant_id


async def test_create_prints_the_new_merchant(db: Database) -> None:
    merchant_id = unique("mer_cli")
    result = await invoke(
        merchant_app,
        *("create", "Tea [House]", "--limit", "5000000", "--id", merchant_id),
        *("--webhook-url", "https://tea.example/hooks"),
    )
    assert result.exit_code == 0, result.output
    assert f"Created merchant {merchant_id} (Tea [House])" in result.output
    merchant = await service.get_merchant(db, merchant_id)
    assert (merchant.liability_limit, merchant.webhook_url) == (
        5_000_000,
        "https://tea.example/hooks",
    )


async def test_add_key_from_base64_then_revoke_it(db: Database) -> None:
    merchant_id = await create()
    raw = raw_public_key()
    added = await invoke(
        merchant_app,
        *("add-key", merchant_id, "--public-key", base64.b64encode(raw).decode()),
        *("--key-id", f"{merchant_id}-k1", "--not-after", "2099-01-01T00:00:00Z"),
    )
    assert added.exit_code == 0, added.output
    assert f"Added key {merchant_id}-k1" in added.output
    assert "until 2099-01-01T00:00:00+00:00" in added.output

    revoked = await invoke(merchant_app, "revoke-key", merchant_id, f"{merchant_id}-k1")
    assert revoked.exit_code == 0, revoked.output
    found = await service.find_key(db, f"{merchant_id}-k1")
    assert found is not None
    assert found[1].public_key == raw
    assert found[1].revoked_at is not None


async def test_add_key_from_pem_file(db: Database, tmp_path: Path) -> None:
    merchant_id = await create()
    public = Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "shop.pub.pem"
    pem.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = await invoke(merchant_app, "add-key", merchant_id, "--public-key-file", str(pem))
    assert result.exit_code == 0, result.output
    keys = await service.list_keys(db, merchant_id)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert [key.public_key for key in keys] == [raw]


async def test_add_key_rejects_garbage_as_a_usage_error() -> None:
    merchant_id = await create()
    result = await invoke(merchant_app, "add-key", merchant_id, "--public-key", "not-a-key!")
    assert result.exit_code == 2
    assert "not base64" in result.output


async def test_add_key_needs_exactly_one_key_source() -> None:
    merchant_id = await create()
    result = await invoke(merchant_app, "add-key", merchant_id)
    assert result.exit_code == 2
    assert "exactly one" in result.output


async def test_add_key_rejects_a_time_without_offset() -> None:
    merchant_id = await create()
    key = base64.b64encode(raw_public_key()).decode()
    result = await invoke(
        merchant_app,
        *("add-key", merchant_id, "--public-key", key, "--not-before", "2027-01-01T00:00:00"),
    )
    assert result.exit_code == 2
    assert "RFC 3339" in result.output


async def test_status_commands_and_final_close(db: Database) -> None:
    merchant_id = await create()
    for command, status in [
        ("suspend", "suspended"),
        ("reactivate", "active"),
        ("close", "closed"),
    ]:
        result = await invoke(merchant_app, command, merchant_id)
        assert result.exit_code == 0, result.output
        assert f"Merchant {merchant_id} is now {status}." in result.output
    refused = await invoke(merchant_app, "reactivate", merchant_id)
    assert refused.exit_code == 1
    assert "merchant_closed" in refused.output
    assert (await service.get_merchant(db, merchant_id)).status is MerchantStatus.CLOSED


async def test_unknown_merchant_exits_1_with_not_found() -> None:
    result = await invoke(merchant_app, "suspend", "mer_nobody_at_all")
    assert result.exit_code == 1
    assert "not_found" in result.output


async def test_set_limit(db: Database) -> None:
    merchant_id = await create()
    result = await invoke(merchant_app, "set-limit", merchant_id, "1234")
    assert result.exit_code == 0, result.output
    assert "liability limit is now 1234 minor units" in result.output
    assert (await service.get_merchant(db, merchant_id)).liability_limit == 1234


async def test_list_shows_status_limit_and_keys() -> None:
    merchant_id = await create()
    key = base64.b64encode(raw_public_key()).decode()
    assert (await invoke(merchant_app, "add-key", merchant_id, "--public-key", key)).exit_code == 0
    result = await invoke(merchant_app, "list")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if merchant_id in line)
    assert "active" in line
    assert "700" in line
    assert "1/1" in line


@pytest.mark.parametrize(
    ("app", "args"),
    [
        (merchant_app, ["create"]),
        (merchant_app, ["add-key"]),
        (merchant_app, ["revoke-key"]),
        (merchant_app, ["suspend"]),
        (merchant_app, ["reactivate"]),
        (merchant_app, ["close"]),
        (merchant_app, ["set-limit"]),
        (merchant_app, ["list"]),
        (settings_app, ["show"]),
        (settings_app, ["set"]),
        (settings_app, ["currency", "add"]),
        (settings_app, ["currency", "list"]),
        (settings_app, ["rate", "set"]),
        (settings_app, ["rate", "list"]),
    ],
)
def test_every_command_help_shows_an_example(app: typer.Typer, args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0
    assert "Example: alliance " in result.output


@pytest.fixture
def cli_clock(monkeypatch: pytest.MonkeyPatch) -> FixedClock:
    # Settings tests live in their own years (2031+), so the commands' clock is set there.
    clock = FixedClock(datetime(2040, 1, 1, tzinfo=UTC))
    monkeypatch.setattr(cli.merchant, "clock", clock)
    return clock


SETTINGS_ARGS = (
    *("--currency", "CNY", "--timezone", "Asia/Shanghai", "--cutoff", "00:00"),
    *("--point-value", "1", "--fee-rate", "0.05", "--points-lifetime-days", "365"),
    *("--hold-lifetime-seconds", "900"),
)


async def test_settings_set_then_change_one_option_and_show(cli_clock: FixedClock) -> None:
    first = await invoke(settings_app, "set", *SETTINGS_ARGS)
    assert first.exit_code == 0, first.output
    assert "Settings in force from 2040-01-01T00:00:00+00:00" in first.output
    assert "alliance fee: 5%" in first.output

    changed = await invoke(
        settings_app,
        *("set", "--fee-rate", "0.1", "--points-lifetime-days", "never"),
        *("--effective-from", "2040-02-01T00:00:00Z"),
    )
    assert changed.exit_code == 0, changed.output
    assert "alliance fee: 10%" in changed.output
    assert "points lifetime: never expire" in changed.output
    assert "timezone: Asia/Shanghai" in changed.output  # kept from the version in force

    shown = await invoke(settings_app, "show")
    assert shown.exit_code == 0, shown.output
    assert "2040-01-01T00:00:00+00:00" in shown.output
    assert "2040-02-01T00:00:00+00:00" in shown.output
    assert "365 days" in shown.output


async def test_settings_set_refuses_the_past(cli_clock: FixedClock) -> None:
    cli_clock.set(datetime(2041, 1, 1, tzinfo=UTC))
    assert (await invoke(settings_app, "set", *SETTINGS_ARGS)).exit_code == 0
    result = await invoke(
        settings_app, "set", "--fee-rate", "0.2", "--effective-from", "2040-12-31T00:00:00Z"
    )
    assert result.exit_code == 1
    assert "never retroactive" in result.output


async def test_settings_set_rejects_a_bad_decimal(cli_clock: FixedClock) -> None:
    result = await invoke(settings_app, "set", "--point-value", "one")
    assert result.exit_code == 2
    assert "not a decimal" in result.output


async def test_currency_add_and_rate_set(cli_clock: FixedClock) -> None:
    cli_clock.set(datetime(2042, 1, 1, tzinfo=UTC))
    owner = await create()
    code = "C" + owner[-8:].upper().replace("-", "0")
    added = await invoke(
        settings_app, "currency", "add", code, "--name", "Cli points", "--owner", owner
    )
    assert added.exit_code == 0, added.output
    assert f"Added currency {code}" in added.output
    rate = await invoke(settings_app, "rate", "set", code, "AP", "0.25")
    assert rate.exit_code == 0, rate.output
    assert f"1 {code} converts to 0.25 AP from 2042-01-01T00:00:00+00:00" in rate.output
    listed = await invoke(settings_app, "rate", "list")
    assert code in listed.output


async def audit_of(db: Database, merchant_id: str) -> list[tuple[str, str, dict[str, object]]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT action, actor, details FROM audit_log WHERE target = $1 ORDER BY seq",
            merchant_id,
        )
    return [(row["action"], row["actor"], dict(row["details"])) for row in rows]


async def test_every_change_a_command_makes_is_in_the_audit_chain(db: Database) -> None:
    """RELIABILITY.md S5: every key event, and every other change to a merchant, is audited
    from the command line as from the console, with the same action names."""
    merchant_id = await create("Audited Shop " + unique("x"))
    raw = raw_public_key()
    key_id = f"{merchant_id}-k1"
    steps = [
        ("add-key", merchant_id, "--public-key", base64.b64encode(raw).decode(), "--key-id")
        + (key_id,),
        ("revoke-key", merchant_id, key_id),
        ("set-limit", merchant_id, "900"),
        ("suspend", merchant_id),
        ("reactivate", merchant_id),
        ("close", merchant_id),
    ]
    for step in steps:
        result = await invoke(merchant_app, *step)
        assert result.exit_code == 0, result.output
    entries = await audit_of(db, merchant_id)
    assert [action for action, _, _ in entries] == [
        "merchant.create",
        "merchant.key_add",
        "merchant.key_revoke",
        "merchant.limit",
        "merchant.suspend",
        "merchant.reactivate",
        "merchant.close",
    ]
    assert all(actor.startswith("cli") for _, actor, _ in entries)
    details = [detail for _, _, detail in entries]
    assert details[1]["key_id"] == key_id
    assert details[1]["thumbprint"]
    assert details[2] == {"key_id": key_id}
    assert details[3] == {"from": 700, "to": 900}
    assert [d["status"] for d in details[4:]] == ["suspended", "active", "closed"]


async def test_a_refused_command_writes_no_audit_entry(db: Database) -> None:
    merchant_id = await create()
    refused = await invoke(merchant_app, "revoke-key", merchant_id, "no-such-key")
    assert refused.exit_code == 1, refused.output
    assert [action for action, _, _ in await audit_of(db, merchant_id)] == ["merchant.create"]
