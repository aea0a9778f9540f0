"""Alliance settings, currencies and conversion rates: effective-dated, never retroactive.

Other tests share this database and rely on the default settings in force in 2026, so every
instant here is in 2031 or later, and each test keeps to its own year.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from core.database import Database
from merchants import service
from merchants.errors import (
    CurrencyNotFound,
    DuplicateCurrency,
    InvalidField,
    InvalidSettings,
    MerchantClosed,
)
from merchants.models import AllianceSettings
from tests.merchants.conftest import MakeMerchant


def at(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def settings(effective_from: datetime, **changes: object) -> AllianceSettings:
    base = AllianceSettings(
        effective_from=effective_from,
        currency="CNY",
        minor_units=2,
        timezone="Asia/Shanghai",
        cutoff=time(0, 0),
        point_value=Decimal("1"),
        fee_rate=Decimal("0.05"),
        points_lifetime_s=365 * 86_400,
        hold_lifetime_s=900,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def test_settings_take_effect_from_their_instant(db: Database) -> None:
    first = await service.set_alliance_settings(db, settings(at(2031)), at(2031))
    second = settings(at(2031, 7), point_value=Decimal("2.5"), fee_rate=Decimal("0.1"))
    await service.set_alliance_settings(db, second, at(2031, 2))

    assert (await service.current_settings(db, at(2031, 6, 30))).point_value == first.point_value
    in_force = await service.current_settings(db, at(2031, 7))
    assert (in_force.point_value, in_force.fee_rate) == (Decimal("2.5"), Decimal("0.1"))
    assert second in await service.upcoming_settings(db, at(2031, 6))


async def test_settings_change_cannot_be_retroactive(db: Database) -> None:
    await service.set_alliance_settings(db, settings(at(2032)), at(2032))
    with pytest.raises(InvalidSettings, match="never retroactive") as caught:
        await service.set_alliance_settings(
            db, settings(at(2032, 3), point_value=Decimal("9")), at(2032, 4)
        )
    assert caught.value.code == "validation_error"
    assert (await service.current_settings(db, at(2032, 5))).point_value == Decimal("1")


async def test_settings_may_take_effect_at_the_present_instant(db: Database) -> None:
    await service.set_alliance_settings(db, settings(at(2033)), at(2033))
    now = at(2033, 2) + timedelta(hours=5)
    await service.set_alliance_settings(db, settings(now, fee_rate=Decimal("0")), now)
    assert (await service.current_settings(db, now)).fee_rate == Decimal("0")


async def test_two_versions_cannot_share_an_instant(db: Database) -> None:
    await service.set_alliance_settings(db, settings(at(2034)), at(2034))
    with pytest.raises(InvalidSettings, match="already takes effect"):
        await service.set_alliance_settings(db, settings(at(2034)), at(2034))


async def test_no_settings_before_the_first_version(db: Database) -> None:
    with pytest.raises(InvalidSettings, match="no settings yet"):
        await service.current_settings(db, datetime(1990, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("timezone", {"timezone": "Mars/Olympus_Mons"}),
        ("timezone", {"timezone": "../etc/passwd"}),
        ("currency", {"currency": "yuan"}),
        ("minor_units", {"minor_units": 5}),
        ("point_value", {"point_value": Decimal("0")}),
        ("point_value", {"point_value": Decimal("-1")}),
        ("point_value", {"point_value": Decimal("NaN")}),
        ("point_value", {"point_value": Decimal("0.0000000000001")}),
        ("fee_rate", {"fee_rate": Decimal("1")}),
        ("fee_rate", {"fee_rate": Decimal("-0.01")}),
        ("points_lifetime_s", {"points_lifetime_s": 0}),
        ("hold_lifetime_s", {"hold_lifetime_s": 0}),
        ("cutoff", {"cutoff": time(0, 0, tzinfo=UTC)}),
    ],
)
async def test_invalid_settings_are_refused(
    db: Database, field: str, changes: dict[str, object]
) -> None:
    with pytest.raises(InvalidSettings) as caught:
        await service.set_alliance_settings(db, settings(at(2035), **changes), at(2035))
    assert caught.value.extra["field"] == field


async def test_points_may_never_expire(db: Database) -> None:
    await service.set_alliance_settings(db, settings(at(2036), points_lifetime_s=None), at(2036))
    assert (await service.current_settings(db, at(2036, 2))).points_lifetime_s is None


async def test_settings_change_resets_every_issuers_escrowed_headroom(
    db: Database, make_merchant: MakeMerchant
) -> None:
    merchants = [(await make_merchant()).merchant_id for _ in range(2)]
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO exposure_slots (merchant_id, slot, headroom) VALUES ($1, 0, 500)",
            [(merchant_id,) for merchant_id in merchants],
        )
    await service.set_alliance_settings(db, settings(at(2037), point_value=Decimal("3")), at(2037))
    async with db.transaction() as conn:
        headrooms = await conn.fetch(
            "SELECT headroom FROM exposure_slots WHERE merchant_id = ANY($1::text[])", merchants
        )
    assert [row["headroom"] for row in headrooms] == [0, 0]


async def test_refused_settings_change_leaves_headroom_alone(
    db: Database, make_merchant: MakeMerchant
) -> None:
    merchant_id = (await make_merchant()).merchant_id
    await service.set_alliance_settings(db, settings(at(2038)), at(2038))
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO exposure_slots (merchant_id, slot, headroom) VALUES ($1, 0, 500)",
            merchant_id,
        )
    with pytest.raises(InvalidSettings):
        await service.set_alliance_settings(db, settings(at(2038, 2)), at(2038, 3))
    async with db.transaction() as conn:
        headroom = await conn.fetchval(
            "SELECT headroom FROM exposure_slots WHERE merchant_id = $1", merchant_id
        )
    assert headroom == 500


async def test_merchant_currency_joins_with_its_owner(
    db: Database, make_merchant: MakeMerchant
) -> None:
    owner = await make_merchant()
    code = "T" + owner.merchant_id[-8:].upper().replace("_", "0")
    currency = await service.create_currency(
        db, currency=code, name="Tea points", owner_merchant_id=owner.merchant_id, now=at(2031)
    )
    assert currency.owner_merchant_id == owner.merchant_id
    assert currency in await service.list_currencies(db)
    with pytest.raises(DuplicateCurrency):
        await service.create_currency(
            db, currency=code, name="Again", owner_merchant_id=owner.merchant_id, now=at(2031)
        )


@pytest.mark.parametrize("code", ["AP", "x", "lower", "TOO_LONG_CODE_X"])
async def test_malformed_or_reserved_currency_code_is_refused(
    db: Database, make_merchant: MakeMerchant, code: str
) -> None:
    owner = await make_merchant()
    with pytest.raises(InvalidField):
        await service.create_currency(
            db, currency=code, name="Points", owner_merchant_id=owner.merchant_id, now=at(2031)
        )


async def test_closed_merchant_cannot_add_a_currency(
    db: Database, make_merchant: MakeMerchant
) -> None:
    owner = await make_merchant()
    await service.close(db, owner.merchant_id, at(2031))
    with pytest.raises(MerchantClosed):
        await service.create_currency(
            db, currency="CLOSED1", name="x", owner_merchant_id=owner.merchant_id, now=at(2031)
        )


async def _own_currency(db: Database, make_merchant: MakeMerchant) -> str:
    owner = await make_merchant()
    code = "R" + owner.merchant_id[-10:].upper().replace("_", "0")
    await service.create_currency(
        db, currency=code, name="Points", owner_merchant_id=owner.merchant_id, now=at(2031)
    )
    return code


async def test_conversion_rate_applies_from_its_instant(
    db: Database, make_merchant: MakeMerchant
) -> None:
    code = await _own_currency(db, make_merchant)
    rate = await service.set_conversion_rate(
        db, source=code, target="AP", rate=Decimal("0.5"), effective_from=at(2031, 3), now=at(2031)
    )
    assert rate in await service.list_conversion_rates(db)


async def test_conversion_rate_cannot_be_retroactive(
    db: Database, make_merchant: MakeMerchant
) -> None:
    code = await _own_currency(db, make_merchant)
    with pytest.raises(InvalidSettings, match="never retroactive"):
        await service.set_conversion_rate(
            db,
            source=code,
            target="AP",
            rate=Decimal("2"),
            effective_from=at(2031, 3),
            now=at(2031, 4),
        )


@pytest.mark.parametrize("rate", [Decimal("0"), Decimal("-1"), Decimal("1.0000000000001")])
async def test_conversion_rate_must_be_positive_and_exact(
    db: Database, make_merchant: MakeMerchant, rate: Decimal
) -> None:
    code = await _own_currency(db, make_merchant)
    with pytest.raises(InvalidSettings):
        await service.set_conversion_rate(
            db, source=code, target="AP", rate=rate, effective_from=at(2031), now=at(2031)
        )


async def test_conversion_needs_two_known_currencies(
    db: Database, make_merchant: MakeMerchant
) -> None:
    code = await _own_currency(db, make_merchant)
    with pytest.raises(InvalidSettings):
        await service.set_conversion_rate(
            db, source=code, target=code, rate=Decimal(1), effective_from=at(2031), now=at(2031)
        )
    with pytest.raises(CurrencyNotFound):
        await service.set_conversion_rate(
            db, source=code, target="NOPE", rate=Decimal(1), effective_from=at(2031), now=at(2031)
        )
