"""A demo alliance with a week of history: a tea house, a bookshop, a cinema, a few hundred members.

Deterministic (seeded), and built through the same services partners and operators use, so the
demo's books reconcile like real ones. Each merchant gets an Ed25519 key whose private half is
written to `<data dir>/demo-keys/`, so a newcomer can sign requests as that merchant.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.clock import Clock, FixedClock
from core.database import Database
from core.errors import DomainError
from exchange.service import Ledger
from merchants import repository as merchant_repository, service as merchants
from merchants.models import AllianceSettings

DEMO_SEED = 2026
HISTORY_DAYS = 7
MEMBERS = 300

DEMO_MERCHANTS = (
    # (key id, name, liability limit in fen)
    ("tea-house", "Jade Tea House", 50_000_000),
    ("bookshop", "Paper Moon Bookshop", 30_000_000),
    ("cinema", "Starlight Cinema", 80_000_000),
)

DEMO_BANK_ACCOUNTS = {
    # key id: (account holder, IBAN, BIC); ISO 13616 published example IBANs (for documentation)
    "tea-house": ("Jade Tea House Ltd", "DE89370400440532013000", "COBADEFFXXX"),
    "bookshop": ("Paper Moon Bookshop Ltd", "GB29NWBK60161331926819", "NWBKGB2L"),
    "cinema": ("Starlight Cinema Ltd", "FR1420041010050500013M02606", None),
}


@dataclass(slots=True)
class DemoReport:
    merchants: dict[str, str] = field(default_factory=dict)
    key_files: list[Path] = field(default_factory=list)
    members: int = 0
    operations: int = 0
    refused: int = 0
    already_seeded: bool = False


def demo_settings(effective_from: datetime) -> AllianceSettings:
    return AllianceSettings(
        effective_from=effective_from,
        currency="CNY",
        minor_units=2,
        timezone="Asia/Shanghai",
        cutoff=time(0, 0),
        point_value=Decimal("1"),
        fee_rate=Decimal("0.05"),
        points_lifetime_s=180 * 24 * 3600,
        hold_lifetime_s=900,
    )


async def is_seeded(db: Database) -> bool:
    async with db.connection() as conn:
        return any(
            m.name == DEMO_MERCHANTS[0][1] for m in await merchant_repository.list_merchants(conn)
        )


def _write_private_key(directory: Path, key_id: str) -> tuple[bytes, Path]:
    private = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key_id}.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return public, path


async def _found_alliance(
    db: Database, report: DemoReport, *, start: datetime, key_dir: Path
) -> None:
    async with db.connection() as conn:
        configured = await merchant_repository.settings_at(conn, start) is not None
    if not configured:
        # A new alliance may open backdated once; an alliance with settings keeps its own.
        await merchants.set_alliance_settings(db, demo_settings(start - timedelta(days=1)), start)
    for key_id, name, limit in DEMO_MERCHANTS:
        merchant = await merchants.create_merchant(db, name=name, liability_limit=limit, now=start)
        public, path = _write_private_key(key_dir, f"{key_id}-1")
        await merchants.add_key(
            db,
            merchant_id=merchant.merchant_id,
            public_key=public,
            key_id=f"{key_id}-1",
            now=start,
        )
        report.merchants[key_id] = merchant.merchant_id
        report.key_files.append(path)
        account_name, iban, bic = DEMO_BANK_ACCOUNTS[key_id]
        await merchants.set_bank_account(db, merchant.merchant_id, account_name, iban, bic, start)
    tea = report.merchants["tea-house"]
    await merchants.create_currency(
        db, currency="TEA", name="Jade Tea leaves", owner_merchant_id=tea, now=start
    )
    for source, target, rate in (("AP", "TEA", "2"), ("TEA", "AP", "0.5")):
        await merchants.set_conversion_rate(
            db, source=source, target=target, rate=Decimal(rate), effective_from=start, now=start
        )


class _History:
    """One simulated week of tills: earning, spending, holds, refunds, conversions."""

    def __init__(self, ledger: Ledger, clock: FixedClock, report: DemoReport) -> None:
        self.ledger, self.clock, self.report = ledger, clock, report
        self.random = random.Random(DEMO_SEED)
        self.merchant_ids = list(report.merchants.values())
        self.redemptions: list[tuple[str, str]] = []

    def _key(self) -> str:
        self.report.operations += 1
        return f"demo-{self.report.operations}"

    async def visit(self, member_id: str) -> None:
        merchant = self.random.choice(self.merchant_ids)
        roll = self.random.random()
        try:
            if roll < 0.55:
                short_lived = self.random.random() < 0.05
                await self.ledger.issue(
                    merchant_id=merchant,
                    idempotency_key=self._key(),
                    member_id=member_id,
                    points=self.random.randrange(20, 300),
                    reference=f"receipt-{self.report.operations}",
                    expires_at=self.clock.now() + timedelta(days=2) if short_lived else None,
                )
            elif roll < 0.85:
                outcome = await self.ledger.redeem(
                    merchant_id=merchant,
                    idempotency_key=self._key(),
                    member_id=member_id,
                    points=self.random.randrange(10, 150),
                    reference=f"checkout-{self.report.operations}",
                )
                self.redemptions.append((merchant, outcome.body["transaction_id"]))
            elif roll < 0.93:
                await self._hold_then_settle(merchant, member_id)
            elif roll < 0.97 and self.redemptions:
                refunder, transaction_id = self.random.choice(self.redemptions)
                await self.ledger.reverse(
                    merchant_id=refunder,
                    idempotency_key=self._key(),
                    transaction_id=transaction_id,
                    reference="refund",
                    points=5,
                )
            else:
                await self.ledger.convert(
                    merchant_id=self.report.merchants["tea-house"],
                    idempotency_key=self._key(),
                    member_id=member_id,
                    points=20,
                    source_currency="AP",
                    target_currency="TEA",
                    reference="tea-card top-up",
                )
        except DomainError:
            self.report.refused += 1  # refusals are part of a real week (no points, limits…)

    async def _hold_then_settle(self, merchant: str, member_id: str) -> None:
        held = await self.ledger.hold(
            merchant_id=merchant,
            idempotency_key=self._key(),
            member_id=member_id,
            points=self.random.randrange(10, 60),
            reference=f"booking-{self.report.operations}",
        )
        self.clock.advance(timedelta(minutes=3))
        if self.random.random() < 0.7:
            await self.ledger.capture(
                merchant_id=merchant, idempotency_key=self._key(), hold_id=held.body["hold_id"]
            )
        else:
            await self.ledger.void(
                merchant_id=merchant, idempotency_key=self._key(), hold_id=held.body["hold_id"]
            )


async def seed(
    db: Database,
    clock: Clock,
    *,
    data_dir: Path,
    on_progress: Callable[[int, int], None] | None = None,
) -> DemoReport:
    """Seed the demo alliance unless it exists; `on_progress(done, total)` per simulated hour."""
    report = DemoReport()
    if await is_seeded(db):
        report.already_seeded = True
        return report
    end = clock.now()
    start = end - timedelta(days=HISTORY_DAYS)
    await _found_alliance(db, report, start=start, key_dir=data_dir / "demo-keys")
    history_clock = FixedClock(start)
    ledger = Ledger(db, history_clock)
    members = [
        (await ledger.register_member(external_ref=f"card-{number:06d}")).member_id
        for number in range(1, MEMBERS + 1)
    ]
    report.members = len(members)
    history = _History(ledger, history_clock, report)
    hours = HISTORY_DAYS * 24
    for hour in range(hours):
        for _ in range(history.random.randrange(5, 25)):
            history_clock.advance(timedelta(seconds=history.random.randrange(30, 120)))
            await history.visit(history.random.choice(members))
        history_clock.set(max(history_clock.now(), start + timedelta(hours=hour + 1)))
        if on_progress is not None:
            on_progress(hour + 1, hours)
    await Ledger(db, FixedClock(end)).expire()
    return report
