"""merchants.webhook_urls, the judge of where webhooks may go (ADR 0022), and changing a
merchant's webhook URL: `service.set_webhook_url` and `alliance merchant set-webhook-url`.
(Refusals at registration: test_merchants.py; at delivery: tests/webhooks/test_targets.py.)"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

import cli.merchant
from cli.merchant import merchant_app
from core.clock import FixedClock
from core.config import get_settings
from core.database import Database
from merchants import service, webhook_urls
from merchants.errors import InvalidField, MerchantClosed, MerchantNotFound
from merchants.webhook_urls import UnsafeWebhookUrl, WebhookTarget
from tests.merchants.conftest import MakeMerchant
from tests.merchants.test_cli import cli_database, create, invoke  # noqa: F401


def ip(text: str) -> webhook_urls.IPAddress:
    return ipaddress.ip_address(text)


@pytest.fixture(autouse=True)
def strict(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("10.0.0.1.", "10.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("8.8.8.8", "8.8.8.8"),
        ("tea.example", None),
        ("0x7f.example", None),
    ],
)
def test_ip_literals_are_read_as_libc_reads_them(host: str, address: str | None) -> None:
    assert webhook_urls.ip_literal(host) == (None if address is None else ip(address))


@pytest.mark.parametrize("host", ["256.0.0.1", "1.16777216", "4294967296", "08.0.0.1", "1.2.3.4.5"])
def test_a_numeric_host_that_is_no_address_is_refused(host: str) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        webhook_urls.ip_literal(host)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("100.64.0.1", False),
        ("100.127.255.255", False),
        ("169.254.169.254", False),
        ("192.0.2.1", False),
        ("198.18.0.1", False),
        ("240.0.0.1", False),
        ("239.255.255.250", False),
        ("::ffff:8.8.8.8", False),  # mapped: refused as such, whatever is inside
        ("2002:a00:1::", False),
        ("2002:808:808::", True),  # 6to4 of a public address
        ("64:ff9b::a00:1", False),
        ("fe80::1", False),
        ("ff02::1", False),
    ],
)
def test_only_global_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert webhook_urls.is_public(ip(address)) is public


def test_a_host_resolving_to_any_private_address_is_refused() -> None:
    target = webhook_urls.check_url("https://hooks.tea.example/x")
    assert target == WebhookTarget("https", "hooks.tea.example", 443, None)
    public = [ip("93.184.215.14"), ip("2606:4700:4700::1111")]
    assert webhook_urls.check_addresses(public, target) == public[0]
    for mixed in ([*public, ip("10.0.0.1")], [ip("127.0.0.1"), *public]):
        with pytest.raises(UnsafeWebhookUrl, match="resolves to"):
            webhook_urls.check_addresses(mixed, target)
    with pytest.raises(UnsafeWebhookUrl, match="no address"):
        webhook_urls.check_addresses([], target)
    assert webhook_urls.check_addresses([ip("10.0.0.1")], target, allow_private=True) == ip(
        "10.0.0.1"
    )


async def test_resolve_asks_the_system_resolver() -> None:
    addresses = await webhook_urls.resolve("localhost", 443)
    assert addresses
    assert all(address.is_loopback for address in addresses)


# Changing a merchant's webhook URL


async def test_set_webhook_url_checks_sets_and_clears(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    changed = await service.set_webhook_url(
        db, merchant.merchant_id, "https://tea.example/hooks", clock.now()
    )
    assert changed.webhook_url == "https://tea.example/hooks"
    with pytest.raises(InvalidField) as caught:
        await service.set_webhook_url(
            db, merchant.merchant_id, "https://169.254.169.254/latest", clock.now()
        )
    assert caught.value.extra["field"] == "webhook_url"
    stored = await service.get_merchant(db, merchant.merchant_id)
    assert stored.webhook_url == "https://tea.example/hooks"
    cleared = await service.set_webhook_url(db, merchant.merchant_id, None, clock.now())
    assert cleared.webhook_url is None
    assert (await service.get_merchant(db, merchant.merchant_id)).webhook_url is None


async def test_set_webhook_url_refuses_closed_and_unknown_merchants(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    with pytest.raises(MerchantClosed):
        await service.set_webhook_url(
            db, merchant.merchant_id, "https://tea.example/hooks", clock.now()
        )
    with pytest.raises(MerchantNotFound):
        await service.set_webhook_url(db, "mer_nobody", "https://tea.example/hooks", clock.now())


async def audit_of(db: Database, merchant_id: str) -> list[dict[str, object]]:
    """The merchant's audit entries after its creation (`merchant.create`, audited too)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT actor, action, details FROM audit_log
               WHERE target = $1 AND action <> 'merchant.create' ORDER BY seq""",
            merchant_id,
        )
    return [dict(row) for row in rows]


async def test_the_command_sets_and_clears_the_url_and_audits_each_change(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.merchant, "clock", FixedClock(cli.merchant.now()))
    merchant_id = await create()
    url = "https://tea.example/alliance/hooks?token=merchant-secret"

    result = await invoke(merchant_app, "set-webhook-url", merchant_id, url)

    assert result.exit_code == 0, result.output
    assert f"Merchant {merchant_id} webhooks go to {url}." in result.output
    assert (await service.get_merchant(db, merchant_id)).webhook_url == url
    cleared = await invoke(merchant_app, "set-webhook-url", merchant_id, "--clear")
    assert cleared.exit_code == 0, cleared.output
    assert f"Merchant {merchant_id} has no webhook URL now." in cleared.output
    assert (await service.get_merchant(db, merchant_id)).webhook_url is None
    entries = await audit_of(db, merchant_id)
    assert [(e["action"], str(e["actor"]).startswith("cli")) for e in entries] == [
        ("merchant.webhook_url", True),
        ("merchant.webhook_url", True),
    ]
    details = [str(e["details"]) for e in entries]
    assert "https://tea.example" in details[0]
    assert not any("merchant-secret" in d for d in details)  # the origin only


@pytest.mark.parametrize(
    "url",
    ["https://good@127.0.0.1/hooks", "http://127.0.0.1:8081/webhooks", "https://0x7f.1/hooks"],
)
async def test_the_command_refuses_a_url_that_is_not_public_and_changes_nothing(
    db: Database, url: str
) -> None:
    merchant_id = await create()

    result = await invoke(merchant_app, "set-webhook-url", merchant_id, url)

    assert result.exit_code == 1
    assert "the webhook URL" in result.output
    assert (await service.get_merchant(db, merchant_id)).webhook_url is None
    assert await audit_of(db, merchant_id) == []


async def test_the_command_takes_a_url_or_clear_not_both(db: Database) -> None:
    merchant_id = await create()
    both = await invoke(
        merchant_app, "set-webhook-url", merchant_id, "https://a.example", "--clear"
    )
    neither = await invoke(merchant_app, "set-webhook-url", merchant_id)
    assert (both.exit_code, neither.exit_code) == (2, 2)
    assert await audit_of(db, merchant_id) == []


async def test_the_command_allows_a_loopback_receiver_with_the_development_setting(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
    get_settings.cache_clear()
    merchant_id = await create()

    result = await invoke(
        merchant_app, "set-webhook-url", merchant_id, "http://127.0.0.1:8081/webhooks"
    )

    assert result.exit_code == 0, result.output
    merchant = await service.get_merchant(db, merchant_id)
    assert merchant.webhook_url == "http://127.0.0.1:8081/webhooks"
