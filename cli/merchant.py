"""`alliance merchant …`: onboard partner merchants, manage their keys, limits and status."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.table import Table

from cli.runtime import cli_actor, console, open_database, run
from console import audit
from console.unit import bound
from core.clock import Clock, SystemClock
from core.database import Database
from core.errors import DomainError
from merchants import banking, service
from merchants.keys import jwk_thumbprint, parse_public_key
from merchants.models import KeyCounts, Merchant

T = TypeVar("T")

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

merchant_app = typer.Typer(
    help=(
        "Partner merchants: create, keys, liability limit, bank account, webhook URL, suspend, "
        "close."
    ),
    no_args_is_help=True,
)

MerchantId = Annotated[str, typer.Argument(help="The merchant's id, e.g. mer_tea_house.")]


clock: Clock = SystemClock()
"""The commands' clock; tests put a FixedClock here."""


def now() -> datetime:
    return clock.now()


def call(action: Callable[[Database], Awaitable[T]]) -> T:
    """Open the database, run one service call, close it; refusals exit 1 with their message."""

    async def main() -> T:
        async with open_database() as db:
            return await action(db)

    return run(main())


def audited(
    action: str,
    target: str,
    change: Callable[[Database], Awaitable[T]],
    details: Callable[[T], audit.Details],
    at: datetime,
) -> T:
    """`call`, with the change written to the audit log as the console writes it (same action
    names), in the same transaction: both commit, or neither does. The actor is cli:<user>."""
    actor = cli_actor()

    async def change_and_record(db: Database) -> T:
        async with db.transaction() as conn:
            result = await change(bound(conn))
            await audit.append(
                conn, actor=actor, action=action, target=target, at=at, details=details(result)
            )
            return result

    return call(change_and_record)


def parse_instant(value: str | None, option: str) -> datetime | None:
    """An RFC 3339 instant (offset required, so it is never read in some local zone), in UTC."""
    if value is None:
        return None
    if not _RFC3339.fullmatch(value):
        raise typer.BadParameter(
            f"{value!r} is not an RFC 3339 time like 2026-12-01T00:00:00Z", param_hint=option
        )
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


@merchant_app.command(
    epilog="Example: alliance merchant create 'Tea House' --limit 5000000 --id mer_tea_house"
)
def create(
    name: Annotated[str, typer.Argument(help="Display name, unique regardless of case.")],
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Liability limit in minor units (fen, cents).")
    ],
    webhook_url: Annotated[
        str | None, typer.Option(help="Public https:// URL for webhooks (see set-webhook-url).")
    ] = None,
    merchant_id: Annotated[
        str | None, typer.Option("--id", help="Choose the id instead of a generated mer_….")
    ] = None,
) -> None:
    """Create an active merchant with a liability limit."""
    instant = now()
    merchant = call(lambda db: _create_audited(db, name, limit, webhook_url, merchant_id, instant))
    console.print(
        f"Created merchant [bold]{merchant.merchant_id}[/] ({escape(merchant.name)}), "
        f"liability limit {merchant.liability_limit} minor units."
    )


async def _create_audited(
    db: Database,
    name: str,
    limit: int,
    webhook_url: str | None,
    merchant_id: str | None,
    instant: datetime,
) -> Merchant:
    """The merchant and its audit entry in one transaction (its id is known only once made)."""
    async with db.transaction() as conn:
        merchant = await service.create_merchant(
            bound(conn),
            name=name,
            liability_limit=limit,
            webhook_url=webhook_url,
            merchant_id=merchant_id,
            now=instant,
        )
        await audit.append(
            conn,
            actor=cli_actor(),
            action="merchant.create",
            target=merchant.merchant_id,
            at=instant,
            details={"name": merchant.name, "liability_limit": limit},
        )
        return merchant


@merchant_app.command(
    "add-key",
    epilog=(
        "Example: alliance merchant add-key mer_tea_house"
        " --public-key-file tea_house.pub.pem --key-id key_tea_house_1"
    ),
)
def add_key(
    merchant_id: MerchantId,
    public_key: Annotated[
        str | None,
        typer.Option(help="Ed25519 public key: base64/base64url of the 32 raw bytes, or a JWK."),
    ] = None,
    public_key_file: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="File with the key: PEM (SPKI), JWK or base64."
        ),
    ] = None,
    key_id: Annotated[str | None, typer.Option(help="Choose the key id (default key_…).")] = None,
    not_before: Annotated[
        str | None, typer.Option(help="RFC 3339; usable from then on (default now).")
    ] = None,
    not_after: Annotated[
        str | None, typer.Option(help="RFC 3339; unusable from then on (default never).")
    ] = None,
) -> None:
    """Register one of a merchant's Ed25519 public keys (keys sign its API requests).

    The merchant makes its key pair and sends only the public half, e.g. with OpenSSL:
    openssl genpkey -algorithm ed25519 -out tea_house.pem &&
    openssl pkey -in tea_house.pem -pubout -out tea_house.pub.pem
    """
    raw = _read_public_key(public_key, public_key_file)
    starts = parse_instant(not_before, "--not-before")
    ends = parse_instant(not_after, "--not-after")
    instant = now()
    key = audited(
        "merchant.key_add",
        merchant_id,
        lambda db: service.add_key(
            db,
            merchant_id=merchant_id,
            public_key=raw,
            key_id=key_id,
            not_before=starts,
            not_after=ends,
            now=instant,
        ),
        lambda key: {"key_id": key.key_id, "thumbprint": jwk_thumbprint(key.public_key)},
        instant,
    )
    until = key.not_after.isoformat() if key.not_after else "revoked"
    thumbprint = jwk_thumbprint(key.public_key)
    console.print(
        f"Added key [bold]{key.key_id}[/] to merchant {key.merchant_id}: usable from "
        f"{key.not_before.isoformat()} until {until}. JWK thumbprint {thumbprint}."
    )


def _read_public_key(text: str | None, path: Path | None) -> bytes:
    if (text is None) == (path is None):
        raise typer.BadParameter("give exactly one of --public-key and --public-key-file")
    hint = "--public-key-file" if path is not None else "--public-key"
    try:
        value = path.read_text(encoding="utf-8") if path is not None else text
    except (OSError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"cannot read it: {error}", param_hint=hint) from None
    assert value is not None
    try:
        return parse_public_key(value)
    except DomainError as error:
        raise typer.BadParameter(error.detail, param_hint=hint) from None


@merchant_app.command(
    "revoke-key", epilog="Example: alliance merchant revoke-key mer_tea_house key_tea_house_1"
)
def revoke_key(
    merchant_id: MerchantId,
    key_id: Annotated[str, typer.Argument(help="The key id to revoke.")],
) -> None:
    """Revoke a key from now on, for good: requests signed with it are refused."""
    instant = now()
    key = audited(
        "merchant.key_revoke",
        merchant_id,
        lambda db: service.revoke_key(db, merchant_id=merchant_id, key_id=key_id, now=instant),
        lambda key: {"key_id": key.key_id},
        instant,
    )
    assert key.revoked_at is not None
    console.print(f"Key [bold]{key.key_id}[/] of {merchant_id} revoked as of {key.revoked_at}.")


@merchant_app.command(epilog="Example: alliance merchant suspend mer_tea_house")
def suspend(merchant_id: MerchantId) -> None:
    """Suspend a merchant: its requests are refused until it is reactivated."""
    _print_status(_status_change("suspend", merchant_id))


@merchant_app.command(epilog="Example: alliance merchant reactivate mer_tea_house")
def reactivate(merchant_id: MerchantId) -> None:
    """Let a suspended merchant transact again (a closed one cannot be)."""
    _print_status(_status_change("reactivate", merchant_id))


@merchant_app.command(epilog="Example: alliance merchant close mer_tea_house")
def close(merchant_id: MerchantId) -> None:
    """Close a merchant for good; it can never be reactivated."""
    _print_status(_status_change("close", merchant_id))


def _status_change(verb: str, merchant_id: str) -> Merchant:
    change = {"suspend": service.suspend, "reactivate": service.reactivate, "close": service.close}
    instant = now()
    return audited(
        f"merchant.{verb}",
        merchant_id,
        lambda db: change[verb](db, merchant_id, instant),
        lambda merchant: {"status": merchant.status.value},
        instant,
    )


def _print_status(merchant: Merchant) -> None:
    console.print(f"Merchant [bold]{merchant.merchant_id}[/] is now {merchant.status}.")


@merchant_app.command(
    "set-limit", epilog="Example: alliance merchant set-limit mer_tea_house 8000000"
)
def set_limit(
    merchant_id: MerchantId,
    minor_units: Annotated[int, typer.Argument(min=0, help="New liability limit, minor units.")],
) -> None:
    """Change a merchant's liability limit; it applies to the next issuance."""
    instant = now()

    async def change(db: Database) -> tuple[int, Merchant]:
        before = await service.get_merchant(db, merchant_id)
        after = await service.set_liability_limit(db, merchant_id, minor_units, instant)
        return before.liability_limit, after

    _, merchant = audited(
        "merchant.limit",
        merchant_id,
        change,
        lambda changed: {"from": changed[0], "to": changed[1].liability_limit},
        instant,
    )
    console.print(
        f"Merchant [bold]{merchant.merchant_id}[/] liability limit is now "
        f"{merchant.liability_limit} minor units."
    )


WEBHOOK_URL_ACTION = "merchant.webhook_url"


@merchant_app.command(
    "set-webhook-url",
    epilog=(
        "Example: alliance merchant set-webhook-url mer_tea_house "
        "https://tea.example/alliance/webhooks"
    ),
)
def set_webhook_url(
    merchant_id: MerchantId,
    url: Annotated[
        str | None, typer.Argument(help="The new webhook URL; leave out with --clear.")
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the URL: no more webhooks are sent.")
    ] = False,
) -> None:
    """Set (or --clear) where a merchant's webhooks (statement.published) are sent.

    The URL must be public https:// with no user name, password or fragment, and its host no IP
    address of loopback, a private network, link-local or the like, nor localhost; every address
    the host resolves to is checked again, and connected to, at each delivery (ADR 0022).
    ALLIANCE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true (development only) allows local receivers, and
    http:// on loopback. Queued webhooks go to the URL the merchant has when each is sent. The
    change is written to the audit log.
    """
    if clear == (url is not None):
        raise typer.BadParameter("give a URL, or --clear (not both)")
    instant = now()
    actor = cli_actor()

    async def change(db: Database) -> Merchant:
        async with db.transaction() as conn:
            merchant = await service.set_webhook_url(bound(conn), merchant_id, url, instant)
            # In the same transaction: the audit entry commits with the change, or neither does.
            # The URL's origin only: a path or query may carry the merchant's own secret.
            await audit.append(
                conn,
                actor=actor,
                action=WEBHOOK_URL_ACTION,
                target=merchant_id,
                at=instant,
                details={"origin": None if url is None else _origin(url)},
            )
            return merchant

    merchant = call(change)
    if merchant.webhook_url is None:
        console.print(f"Merchant [bold]{merchant.merchant_id}[/] has no webhook URL now.")
    else:
        console.print(
            f"Merchant [bold]{merchant.merchant_id}[/] webhooks go to "
            f"{escape(merchant.webhook_url)}."
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@merchant_app.command("list", epilog="Example: alliance merchant list")
def list_() -> None:
    """List merchants with status, liability limit and keys (usable now / all)."""
    instant = now()

    async def load(db: Database) -> tuple[list[Merchant], dict[str, KeyCounts]]:
        return await service.list_merchants(db), await service.key_counts(db, instant)

    merchants, counts = call(load)
    table = Table(title=f"Merchants ({len(merchants)})")
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("status")
    table.add_column("limit (minor units)", justify="right")
    table.add_column("keys usable/all", justify="right")
    for merchant in merchants:
        count = counts.get(merchant.merchant_id, KeyCounts(0, 0))
        table.add_row(
            merchant.merchant_id,
            escape(merchant.name),
            merchant.status.value,
            str(merchant.liability_limit),
            f"{count.usable}/{count.total}",
        )
    console.print(table)


_BANK_OPTIONS = {"account_name": "--name", "iban": "--iban", "bic": "--bic"}


@merchant_app.command(
    "set-bank",
    epilog=(
        "Example: alliance merchant set-bank mer_tea_house --name 'Jade Tea House Ltd'"
        " --iban 'DE89 3704 0044 0532 0130 00' --bic COBADEFFXXX"
    ),
)
def set_bank(
    merchant_id: MerchantId,
    name: Annotated[str, typer.Option("--name", help="Account holder, as the bank knows it.")],
    iban: Annotated[str, typer.Option(help="IBAN; spaces and lower case are fine.")],
    bic: Annotated[
        str | None, typer.Option(help="BIC (SWIFT code) of the merchant's bank, 8 or 11.")
    ] = None,
) -> None:
    """Set the bank account settlement pays the merchant to (or collects from), replacing any.

    A bad IBAN (mod-97 check, country length) or BIC is refused, and nothing changes.
    """
    try:
        account_name = banking.check_account_name(name)
        electronic_iban = banking.normalize_iban(iban)
        electronic_bic = None if bic is None else banking.normalize_bic(bic)
    except DomainError as error:
        hint = _BANK_OPTIONS.get(str(error.extra.get("field")))
        raise typer.BadParameter(error.detail, param_hint=hint) from None
    account = call(
        lambda db: service.set_bank_account(
            db, merchant_id, account_name, electronic_iban, electronic_bic, now()
        )
    )
    console.print(
        f"Merchant [bold]{account.merchant_id}[/] is settled to {escape(account.account_name)}, "
        f"IBAN {banking.format_iban(account.iban)}, BIC {account.bic or 'not given'}."
    )
