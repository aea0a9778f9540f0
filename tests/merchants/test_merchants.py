"""Merchant lifecycle and liability limits, on the real database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from core.clock import FixedClock
from core.config import get_settings
from core.database import Database
from merchants import service
from merchants.errors import DuplicateMerchant, InvalidField, MerchantClosed, MerchantNotFound
from merchants.models import MerchantStatus
from tests.merchants.conftest import MakeMerchant, unique


async def test_created_merchant_is_active_with_a_mer_id(db: Database, clock: FixedClock) -> None:
    name = unique("Tea House")
    merchant = await service.create_merchant(
        db,
        name=name,
        liability_limit=5_000_000,
        webhook_url="https://tea.example/hooks",
        now=clock.now(),
    )
    assert merchant.merchant_id.startswith("mer_")
    assert merchant.status is MerchantStatus.ACTIVE
    assert merchant.created_at == clock.now()
    assert await service.get_merchant(db, merchant.merchant_id) == merchant


async def test_caller_may_choose_the_merchant_id(make_merchant: MakeMerchant) -> None:
    chosen = unique("mer_chosen")
    assert (await make_merchant(merchant_id=chosen)).merchant_id == chosen


async def test_merchant_names_are_unique_regardless_of_case(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    first = await make_merchant()
    with pytest.raises(DuplicateMerchant) as caught:
        await service.create_merchant(
            db, name=first.name.upper(), liability_limit=1, now=clock.now()
        )
    assert caught.value.code == "validation_error"
    assert caught.value.extra["field"] == "name"


async def test_merchant_ids_are_unique(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    first = await make_merchant()
    with pytest.raises(DuplicateMerchant, match="already taken") as caught:
        await service.create_merchant(
            db,
            name=unique("Other"),
            liability_limit=1,
            merchant_id=first.merchant_id,
            now=clock.now(),
        )
    assert caught.value.extra["field"] == "merchant_id"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("liability_limit", {"liability_limit": -1}),
        ("liability_limit", {"liability_limit": 2**63}),
        ("name", {"name": "   "}),
        ("webhook_url", {"webhook_url": "http://tea.example/hooks"}),
        ("webhook_url", {"webhook_url": "ftp://tea.example"}),
        ("merchant_id", {"merchant_id": "has space"}),
    ],
)
async def test_malformed_merchant_is_refused(
    db: Database, clock: FixedClock, field: str, kwargs: dict[str, object]
) -> None:
    arguments: dict[str, object] = {"name": unique("Shop"), "liability_limit": 1, **kwargs}
    with pytest.raises(InvalidField) as caught:
        await service.create_merchant(db, now=clock.now(), **arguments)  # type: ignore[arg-type]
    assert caught.value.extra["field"] == field


# Where webhooks may go (ADR 0022, Reliability A5): refused at registration, in every disguise.
WEBHOOK_URLS_REFUSED = [
    # loopback, and "this host"
    ("https://127.0.0.1/hooks", "not a public address"),
    ("https://127.0.0.1:8443/hooks", "not a public address"),
    ("https://localhost/hooks", "is this machine"),
    ("https://LocalHost./hooks", "is this machine"),
    ("https://hooks.localhost/hooks", "is this machine"),
    ("https://0.0.0.0/hooks", "not a public address"),
    # private, link-local (cloud metadata), shared (CGNAT), multicast, broadcast
    ("https://10.1.2.3/hooks", "not a public address"),
    ("https://172.16.0.1/hooks", "not a public address"),
    ("https://172.31.255.254/hooks", "not a public address"),
    ("https://192.168.1.10/hooks", "not a public address"),
    ("https://169.254.169.254/latest/meta-data/", "not a public address"),
    ("https://100.64.0.1/hooks", "not a public address"),
    ("https://100.127.255.254/hooks", "not a public address"),
    ("https://224.0.0.1/hooks", "not a public address"),
    ("https://255.255.255.255/hooks", "not a public address"),
    # IPv6: loopback, unique local, link-local (scoped too), unspecified, IPv4 inside IPv6
    ("https://[::1]/hooks", "not a public address"),
    ("https://[fc00::1]/hooks", "not a public address"),
    ("https://[fe80::1]/hooks", "not a public address"),
    ("https://[fe80::1%25eth0]/hooks", "not a public address"),
    ("https://[::]/hooks", "not a public address"),
    ("https://[::ffff:127.0.0.1]/hooks", "not a public address"),
    ("https://[::ffff:7f00:1]/hooks", "not a public address"),
    ("https://[::ffff:169.254.169.254]/hooks", "not a public address"),
    ("https://[2002:7f00:1::]/hooks", "not a public address"),  # 6to4 of 127.0.0.1
    ("https://[64:ff9b::a9fe:a9fe]/hooks", "not a public address"),  # NAT64 of the metadata IP
    # IPv4 as inet_aton reads it: decimal, octal, hex, short forms
    ("https://2130706433/hooks", "(that is 127.0.0.1)"),
    ("https://0177.0.0.1/hooks", "(that is 127.0.0.1)"),
    ("https://0x7f000001/hooks", "(that is 127.0.0.1)"),
    ("https://0x7f.1/hooks", "(that is 127.0.0.1)"),
    ("https://127.1/hooks", "(that is 127.0.0.1)"),
    ("https://0/hooks", "(that is 0.0.0.0)"),
    ("https://012.0.0.1/hooks", "(that is 10.0.0.1)"),
    ("https://0xa9.0xfe.0xa9.0xfe/hooks", "(that is 169.254.169.254)"),
    ("https://2852039166/latest", "(that is 169.254.169.254)"),
    ("https://1.2.3.4.5/hooks", "neither a name nor an address"),
    ("https://shop.123/hooks", "neither a name nor an address"),
    # the scheme
    ("http://tea.example/hooks", "must be https://"),
    ("http://127.0.0.1:9000/hooks", "must be https://"),
    ("ftp://tea.example/hooks", "must be https://"),
    ("javascript:alert(1)", "must be https://"),
    # userinfo, fragments and characters parsers disagree about
    ("https://good@127.0.0.1/hooks", "user name or password"),
    ("https://tea.example@127.0.0.1/hooks", "user name or password"),
    ("https://user:secret@tea.example/hooks", "user name or password"),
    ("https://tea.example:443@169.254.169.254/", "user name or password"),
    ("https://tea.example#@127.0.0.1/hooks", "fragment"),
    ("https://tea.example/hooks#part", "fragment"),
    ("https://tea.example\\@127.0.0.1/hooks", "backslashes"),
    ("https://tea.example /hooks", "whitespace"),
    # no host, or one that is no public name
    ("https:///hooks", "no host"),
    ("https://intranet/hooks", "not a fully qualified domain name"),
    ("https://[::1/hooks", "malformed"),
]


@pytest.fixture
def private_targets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    """Turn ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS on or off (off to begin with)."""

    def turn(on: bool) -> None:
        monkeypatch.setenv("ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true" if on else "false")
        get_settings.cache_clear()

    turn(False)
    yield turn
    get_settings.cache_clear()


@pytest.mark.parametrize(("url", "reason"), WEBHOOK_URLS_REFUSED)
async def test_a_webhook_url_that_is_not_public_https_is_refused(
    db: Database,
    clock: FixedClock,
    private_targets: Callable[[bool], None],
    url: str,
    reason: str,
) -> None:
    name = unique("Shop")
    with pytest.raises(InvalidField) as caught:
        await service.create_merchant(
            db, name=name, liability_limit=1, webhook_url=url, now=clock.now()
        )
    assert caught.value.extra["field"] == "webhook_url"
    assert reason in caught.value.detail
    assert name not in {m.name for m in await service.list_merchants(db)}


def test_the_refusals_cover_reliability_a5() -> None:
    assert len(WEBHOOK_URLS_REFUSED) >= 25
    assert len({url for url, _ in WEBHOOK_URLS_REFUSED}) == len(WEBHOOK_URLS_REFUSED)


@pytest.mark.parametrize(
    "url",
    [
        "https://tea.example/hooks",
        "https://hooks.tea.example:8443/alliance?till=7",
        "https://93.184.215.14/hooks",
        "https://[2606:4700:4700::1111]/hooks",
        "https://tea.example./hooks",
    ],
)
async def test_a_public_https_webhook_url_is_accepted(
    make_merchant: MakeMerchant, private_targets: Callable[[bool], None], url: str
) -> None:
    assert (await make_merchant(webhook_url=url)).webhook_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hooks",
        "http://localhost:9000/hooks",
        "http://[::1]:9000/hooks",
        "https://10.1.2.3/hooks",
        "https://receiver.internal/hooks",
    ],
)
async def test_the_development_setting_allows_private_targets_and_http_on_loopback(
    make_merchant: MakeMerchant, private_targets: Callable[[bool], None], url: str
) -> None:
    private_targets(True)
    assert (await make_merchant(webhook_url=url)).webhook_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://tea.example/hooks",
        "http://10.1.2.3/hooks",
        "https://good@127.0.0.1/hooks",
        "https://tea.example/hooks#part",
    ],
)
async def test_the_development_setting_still_refuses_http_off_loopback_and_userinfo(
    db: Database, clock: FixedClock, private_targets: Callable[[bool], None], url: str
) -> None:
    private_targets(True)
    with pytest.raises(InvalidField) as caught:
        await service.create_merchant(
            db, name=unique("Shop"), liability_limit=1, webhook_url=url, now=clock.now()
        )
    assert caught.value.extra["field"] == "webhook_url"


async def test_unknown_merchant_is_not_found(db: Database, clock: FixedClock) -> None:
    with pytest.raises(MerchantNotFound) as caught:
        await service.suspend(db, "mer_nobody", clock.now())
    assert caught.value.code == "not_found"


async def test_suspended_merchant_can_be_reactivated(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    suspended = await service.suspend(db, merchant.merchant_id, clock.now())
    assert suspended.status is MerchantStatus.SUSPENDED
    assert (await service.get_merchant(db, merchant.merchant_id)).status is MerchantStatus.SUSPENDED
    reactivated = await service.reactivate(db, merchant.merchant_id, clock.now())
    assert reactivated.status is MerchantStatus.ACTIVE
    assert (await service.get_merchant(db, merchant.merchant_id)).status is MerchantStatus.ACTIVE


async def test_closed_merchant_cannot_be_reactivated(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    with pytest.raises(MerchantClosed) as caught:
        await service.reactivate(db, merchant.merchant_id, clock.now())
    assert caught.value.code == "merchant_closed"
    with pytest.raises(MerchantClosed):
        await service.suspend(db, merchant.merchant_id, clock.now())
    assert (await service.get_merchant(db, merchant.merchant_id)).status is MerchantStatus.CLOSED


async def test_closing_a_closed_merchant_changes_nothing(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    again = await service.close(db, merchant.merchant_id, clock.now())
    assert again.status is MerchantStatus.CLOSED


async def test_closed_merchant_limit_cannot_change(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    await service.close(db, merchant.merchant_id, clock.now())
    with pytest.raises(MerchantClosed):
        await service.set_liability_limit(db, merchant.merchant_id, 5, clock.now())


async def _slots(db: Database, merchant_id: str) -> list[int]:
    async with db.transaction() as conn:
        rows = await conn.fetch(
            "SELECT headroom FROM exposure_slots WHERE merchant_id = $1 ORDER BY slot",
            merchant_id,
        )
    return [row["headroom"] for row in rows]


async def _escrow(db: Database, merchant_id: str, headrooms: list[int]) -> None:
    """Stand in for the ledger, which escrows headroom into these rows on issuance."""
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO exposure_slots (merchant_id, slot, headroom) VALUES ($1, $2, $3)",
            [(merchant_id, slot, headroom) for slot, headroom in enumerate(headrooms)],
        )


async def test_liability_limit_change_resets_escrowed_headroom(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant(liability_limit=1_000)
    bystander = await make_merchant(liability_limit=1_000)
    await _escrow(db, merchant.merchant_id, [300, 200, 100])
    await _escrow(db, bystander.merchant_id, [400, 100])
    clock.advance(timedelta(minutes=1))

    changed = await service.set_liability_limit(db, merchant.merchant_id, 250, clock.now())

    assert changed.liability_limit == 250
    assert (await service.get_merchant(db, merchant.merchant_id)).liability_limit == 250
    assert await _slots(db, merchant.merchant_id) == [0, 0, 0]  # rows kept, headroom emptied
    assert await _slots(db, bystander.merchant_id) == [400, 100]


async def test_negative_liability_limit_is_refused(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    with pytest.raises(InvalidField):
        await service.set_liability_limit(db, merchant.merchant_id, -1, clock.now())


async def test_list_merchants_includes_new_merchants(
    db: Database, make_merchant: MakeMerchant
) -> None:
    made = {(await make_merchant()).merchant_id for _ in range(2)}
    listed = {merchant.merchant_id for merchant in await service.list_merchants(db)}
    assert made <= listed
