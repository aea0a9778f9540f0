"""`alliance settings …`: the alliance's effective-dated settings, currencies, conversion rates."""

from __future__ import annotations

import dataclasses
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.merchant import call, now, parse_instant
from cli.runtime import console
from core.database import Database
from merchants import service
from merchants.errors import InvalidSettings
from merchants.models import AllianceSettings

SECONDS_PER_DAY = 86_400
FIRST_MINOR_UNITS = 2
"""Minor units of a first settings version when --minor-units is not given (CNY, USD, EUR…)."""

settings_app = typer.Typer(
    help="The alliance's settings (currency, timezone, cut-off, point value, fee, lifetimes), "
    "points currencies and conversion rates. Changes apply from an instant on, never backwards.",
    no_args_is_help=True,
)
currency_app = typer.Typer(
    help="Points currencies of merchants' own programmes.", no_args_is_help=True
)
rate_app = typer.Typer(help="Conversion rates between points currencies.", no_args_is_help=True)
settings_app.add_typer(currency_app, name="currency")
settings_app.add_typer(rate_app, name="rate")

EffectiveFrom = Annotated[
    str | None, typer.Option(help="RFC 3339 instant it applies from (default now; never earlier).")
]


@settings_app.command(epilog="Example: alliance settings show")
def show() -> None:
    """Show the settings in force now and any scheduled versions."""
    instant = now()

    async def load(db: Database) -> list[AllianceSettings]:
        current = await service.current_settings(db, instant)
        return [current, *await service.upcoming_settings(db, instant)]

    versions = call(load)
    table = Table(title="Alliance settings (first column: in force now)")
    table.add_column("")
    for version in versions:
        table.add_column(version.effective_from.isoformat())
    for label, *values in zip(_LABELS, *(_describe(v) for v in versions), strict=True):
        table.add_row(label, *values)
    console.print(table)


_LABELS = (
    "currency",
    "timezone",
    "cut-off",
    "point value",
    "alliance fee",
    "points lifetime",
    "hold lifetime",
)


def _describe(settings: AllianceSettings) -> list[str]:
    lifetime = settings.points_lifetime_s
    return [
        f"{settings.currency} ({settings.minor_units} minor units)",
        settings.timezone,
        settings.cutoff.isoformat("minutes"),
        f"{_plain(settings.point_value)} minor units per point",
        f"{_plain(settings.fee_rate * 100)}%",
        "never expire"
        if lifetime is None
        else f"{_plain(Decimal(lifetime) / SECONDS_PER_DAY)} days",
        f"{settings.hold_lifetime_s} s",
    ]


def _plain(value: Decimal) -> str:
    """Without the database's trailing zeros or an exponent: 0.050000000000 -> 0.05, 10 -> 10."""
    return f"{value.normalize():f}"


@settings_app.command(
    "set",
    epilog=(
        "Example: alliance settings set --currency CNY --timezone Asia/Shanghai --cutoff 00:00"
        " --point-value 1 --fee-rate 0.05 --points-lifetime-days 365 --hold-lifetime-seconds 900"
    ),
)
def set_(
    currency: Annotated[str | None, typer.Option(help="ISO 4217 settlement currency.")] = None,
    minor_units: Annotated[
        int | None, typer.Option(help="Decimal places of the currency (default 2).")
    ] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone of the cut-off.")] = None,
    cutoff: Annotated[str | None, typer.Option(help="Daily cut-off, HH:MM local.")] = None,
    point_value: Annotated[
        str | None, typer.Option(help="Minor units per point, exact decimal.")
    ] = None,
    fee_rate: Annotated[str | None, typer.Option(help="Alliance fee share, e.g. 0.05.")] = None,
    points_lifetime_days: Annotated[
        str | None, typer.Option(help="Default points lifetime in days, or 'never'.")
    ] = None,
    hold_lifetime_seconds: Annotated[
        int | None, typer.Option(help="Default hold lifetime in seconds.")
    ] = None,
    effective_from: EffectiveFrom = None,
) -> None:
    """Add a settings version, in force from --effective-from (default now) on.

    Options left out keep the value in force at that instant; the very first version needs all.
    """
    instant = now()
    starts = parse_instant(effective_from, "--effective-from") or instant
    changes = _changes(
        currency=currency,
        minor_units=minor_units,
        timezone=timezone,
        cutoff=_parse_cutoff(cutoff),
        point_value=_parse_decimal(point_value, "--point-value"),
        fee_rate=_parse_decimal(fee_rate, "--fee-rate"),
        hold_lifetime_s=hold_lifetime_seconds,
    )
    if points_lifetime_days is not None:
        # Set apart: its parsed value None is meaningful ("never expire").
        changes["points_lifetime_s"] = _parse_lifetime(points_lifetime_days)

    async def apply(db: Database) -> AllianceSettings:
        base = await _settings_in_force(db, starts)
        settings = _merge(base, changes, starts)
        return await service.set_alliance_settings(db, settings, instant)

    settings = call(apply)
    console.print(f"Settings in force from [bold]{settings.effective_from.isoformat()}[/]:")
    for label, value in zip(_LABELS, _describe(settings), strict=True):
        console.print(f"  {label}: {value}")


def _changes(**given: Any) -> dict[str, Any]:
    """The options given (None: not given), by AllianceSettings field name."""
    return {name: value for name, value in given.items() if value is not None}


async def _settings_in_force(db: Database, instant: datetime) -> AllianceSettings | None:
    try:
        return await service.current_settings(db, instant)
    except InvalidSettings:
        return None


def _merge(
    base: AllianceSettings | None, changes: dict[str, Any], starts: datetime
) -> AllianceSettings:
    if base is not None:
        return dataclasses.replace(base, effective_from=starts, **changes)
    fields = {"minor_units": FIRST_MINOR_UNITS, **changes, "effective_from": starts}
    missing = [f.name for f in dataclasses.fields(AllianceSettings) if f.name not in fields]
    if missing:
        options = ", ".join("--" + _option_name(name) for name in missing)
        raise InvalidSettings(f"there are no settings yet, so give all of: {options}")
    return AllianceSettings(**fields)


def _option_name(field: str) -> str:
    renamed = {
        "points_lifetime_s": "points-lifetime-days",
        "hold_lifetime_s": "hold-lifetime-seconds",
    }
    return renamed.get(field, field.replace("_", "-"))


def _parse_cutoff(value: str | None) -> time | None:
    if value is None:
        return None
    try:
        parsed = time.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a time like 00:00", param_hint="--cutoff"
        ) from None
    if parsed.tzinfo is not None:
        raise typer.BadParameter("give a local time without offset", param_hint="--cutoff")
    return parsed


def _parse_decimal(value: str | None, option: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value.strip())
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a decimal number", param_hint=option) from None


def _parse_lifetime(days: str) -> int | None:
    """Seconds; "never" gives None, which the settings store as points that do not expire."""
    if days.strip().lower() == "never":
        return None
    if not days.strip().isdigit() or int(days) <= 0:
        raise typer.BadParameter(
            f"{days!r} is not a whole number of days or 'never'",
            param_hint="--points-lifetime-days",
        )
    return int(days) * SECONDS_PER_DAY


@currency_app.command(
    "add",
    epilog=(
        "Example: alliance settings currency add TEAPTS --name 'Tea points' --owner mer_tea_house"
    ),
)
def currency_add(
    code: Annotated[str, typer.Argument(help="2-12 characters A-Z 0-9, e.g. TEAPTS.")],
    name: Annotated[str, typer.Option(help="Display name of the programme's points.")],
    owner: Annotated[str, typer.Option(help="The merchant whose programme it is.")],
) -> None:
    """Let a merchant's own points programme join the exchange with its own currency."""
    currency = call(
        lambda db: service.create_currency(
            db, currency=code, name=name, owner_merchant_id=owner, now=now()
        )
    )
    console.print(
        f"Added currency [bold]{currency.currency}[/] ({escape(currency.name)}) "
        f"owned by {currency.owner_merchant_id}."
    )


@currency_app.command("list", epilog="Example: alliance settings currency list")
def currency_list() -> None:
    """List points currencies (AP is the alliance point)."""
    table = Table("currency", "name", "owner")
    for currency in call(service.list_currencies):
        table.add_row(currency.currency, escape(currency.name), currency.owner_merchant_id or "-")
    console.print(table)


@rate_app.command(
    "set",
    epilog=(
        "Example: alliance settings rate set TEAPTS AP 0.5 --effective-from 2030-01-01T00:00:00Z"
    ),
)
def rate_set(
    source: Annotated[str, typer.Argument(help="Currency converted from.")],
    target: Annotated[str, typer.Argument(help="Currency converted to.")],
    rate: Annotated[str, typer.Argument(help="Target points per source point, exact decimal.")],
    effective_from: EffectiveFrom = None,
) -> None:
    """Set the conversion rate from SOURCE to TARGET from an instant on (never backwards)."""
    instant = now()
    starts = parse_instant(effective_from, "--effective-from") or instant
    value = _parse_decimal(rate, "RATE")
    assert value is not None
    result = call(
        lambda db: service.set_conversion_rate(
            db, source=source, target=target, rate=value, effective_from=starts, now=instant
        )
    )
    console.print(
        f"1 {result.source} converts to {result.rate} {result.target} "
        f"from [bold]{result.effective_from.isoformat()}[/]."
    )


@rate_app.command("list", epilog="Example: alliance settings rate list")
def rate_list() -> None:
    """List conversion rates, each from its effective instant until the next."""
    table = Table("source", "target", "rate", "effective from")
    for rate in call(service.list_conversion_rates):
        table.add_row(rate.source, rate.target, str(rate.rate), rate.effective_from.isoformat())
    console.print(table)
