"""Seed a realistic alliance fast: merchants through the real services, the ledger by COPY.

Members, their issuances and redemptions are generated in Python, deterministically from the
member's index, and written with `COPY` (asyncpg `copy_records_to_table`) straight into the real
tables, consistently with every invariant `alliance verify` checks: each transaction's postings
balance per currency, each lot's `remaining_points` is what its postings left, each member
account's `posted_points` is the sum of its lots, and each cross-merchant redemption has one
obligation per foreign issuer with `gross = points x point value` and `fee = gross x fee rate`
(half-to-even). Triggers are switched off for the session while copying (`session_replication_role
= replica`, superuser only), so the deferred balance trigger and the foreign keys are not fired a
few million times; `alliance verify` afterwards checks what they would have.

A "ledger entry" here is one posting (one line of a double-entry transaction).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.database import Database
from exchange.rounding import fee_of, money_value
from merchants import service as merchants
from merchants.models import AllianceSettings

MERCHANT_COUNT = 12
LIABILITY_LIMIT = 10**15  # minor units: no benchmark issuance is ever near a limit
POINT_VALUE = Decimal("1")
FEE_RATE = Decimal("0.05")
POINTS_LIFETIME = timedelta(days=365)
HISTORY = timedelta(days=90)
CHUNK_MEMBERS = 20_000

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": ("member_id", "created_at"),
    "member_refs": ("external_ref", "member_id"),
    "member_accounts": ("member_id", "currency", "posted_points"),
    "lots": (
        "member_id",
        "lot_id",
        "currency",
        "issuer_id",
        "issued_points",
        "remaining_points",
        "issued_at",
        "expires_at",
        "transaction_id",
    ),
    "transactions": (
        "member_id",
        "transaction_id",
        "kind",
        "merchant_id",
        "currency",
        "points",
        "reference",
        "created_at",
        "settlement_value",
        "balance_after",
    ),
    "postings": (
        "member_id",
        "transaction_id",
        "posting_no",
        "account",
        "currency",
        "amount",
        "lot_id",
    ),
    "obligations": (
        "member_id",
        "obligation_id",
        "transaction_id",
        "debtor_id",
        "creditor_id",
        "points",
        "gross_value",
        "fee",
        "created_at",
    ),
}


@dataclass(frozen=True, slots=True)
class Partner:
    merchant_id: str
    key_id: str
    private_pem: str


@dataclass(slots=True)
class Rows:
    """One chunk of members' rows, table by table, plus the counters for the next chunk."""

    tables: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {name: [] for name in TABLE_COLUMNS}
    )


def member_id(index: int) -> str:
    """Deterministic, the same length as real ids (`mbr_` + 26 characters)."""
    return f"mbr_B{index:025d}"


def lot_base(index: int) -> int:
    """Lot ids are derived from the member index (at most 8 lots per member), so chunks and
    later growth never collide; the `lot_ids` sequence is moved past the largest afterwards."""
    return index * 8 + 1


def obligation_base(index: int) -> int:
    return index * 4 + 1


def settings(effective_from: datetime) -> AllianceSettings:
    return AllianceSettings(
        effective_from=effective_from,
        currency="CNY",
        minor_units=2,
        timezone="Asia/Shanghai",
        cutoff=time(0, 0),
        point_value=POINT_VALUE,
        fee_rate=FEE_RATE,
        points_lifetime_s=int(POINTS_LIFETIME.total_seconds()),
        hold_lifetime_s=900,
    )


async def found_alliance(db: Database, now: datetime, keys_file: Path) -> list[Partner]:
    """Alliance settings and merchants with Ed25519 keys, through the real services."""
    await merchants.set_alliance_settings(db, settings(now - HISTORY - timedelta(days=1)), now)
    partners: list[Partner] = []
    for number in range(MERCHANT_COUNT):
        merchant = await merchants.create_merchant(
            db, name=f"Bench merchant {number:02d}", liability_limit=LIABILITY_LIMIT, now=now
        )
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        key = await merchants.add_key(
            db, merchant_id=merchant.merchant_id, public_key=public, now=now
        )
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        partners.append(Partner(merchant.merchant_id, key.key_id, pem))
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    keys_file.write_text(json.dumps([dataclasses.asdict(p) for p in partners]))
    keys_file.chmod(0o600)
    return partners


def load_partners(keys_file: Path) -> list[Partner]:
    return [Partner(**entry) for entry in json.loads(keys_file.read_text())]


def generate(start: int, stop: int, merchant_ids: Sequence[str], now: datetime) -> Rows:
    """The rows of members [start, stop): 4 issuances then 1–2 redemptions each."""
    rows = Rows()
    t = rows.tables
    for index in range(start, stop):
        rng = random.Random(index)
        mid = member_id(index)
        member_account = f"member:{mid}"
        joined = now - HISTORY + timedelta(seconds=rng.randrange(3600 * 24 * 7))
        t["members"].append((mid, joined))
        t["member_refs"].append((f"card-{index:09d}", mid))
        events = sorted(
            rng.randrange(3600 * 24 * 7, int(HISTORY.total_seconds()) - 60) for _ in range(6)
        )
        lots: list[list[Any]] = []  # [lot_id, issuer, remaining], in consumption order
        balance = 0
        next_lot = lot_base(index)
        next_obligation = obligation_base(index)
        redemptions = rng.randint(1, 2)
        for number, offset in enumerate(events[: 4 + redemptions]):
            at = now - HISTORY + timedelta(seconds=offset)
            txn = f"txn_S{index:019d}{number:06d}"
            merchant = rng.choice(merchant_ids)
            if number < 4:
                points = rng.randrange(100, 1000)
                lot_id = next_lot
                next_lot += 1
                lots.append([lot_id, merchant, points, points, at])
                balance += points
                t["postings"].append((mid, txn, 0, member_account, "AP", points, lot_id))
                t["postings"].append((mid, txn, 1, f"issuer:{merchant}", "AP", -points, None))
                t["transactions"].append(
                    (
                        mid,
                        txn,
                        "issuance",
                        merchant,
                        "AP",
                        points,
                        f"receipt {number}",
                        at,
                        0,
                        balance,
                    )
                )
                continue
            wanted = min(rng.randrange(50, 400), balance)
            left = wanted
            posting_no = 0
            by_issuer: dict[str, int] = {}
            for lot in lots:
                if left == 0:
                    break
                take = min(lot[2], left)
                if take == 0:
                    continue
                lot[2] -= take
                left -= take
                t["postings"].append((mid, txn, posting_no, member_account, "AP", -take, lot[0]))
                t["postings"].append(
                    (mid, txn, posting_no + 1, f"issuer:{lot[1]}", "AP", take, None)
                )
                posting_no += 2
                if lot[1] != merchant:
                    by_issuer[lot[1]] = by_issuer.get(lot[1], 0) + take
            balance -= wanted
            settlement_value = 0
            for issuer in sorted(by_issuer):
                gross = money_value(by_issuer[issuer], POINT_VALUE)
                fee = fee_of(gross, FEE_RATE)
                settlement_value += gross - fee
                t["obligations"].append(
                    (mid, next_obligation, txn, issuer, merchant, by_issuer[issuer], gross, fee, at)
                )
                next_obligation += 1
            t["transactions"].append(
                (
                    mid,
                    txn,
                    "redemption",
                    merchant,
                    "AP",
                    wanted,
                    f"checkout {number}",
                    at,
                    settlement_value,
                    balance,
                )
            )
        for position, (lot_id, issuer, remaining, issued, at) in enumerate(lots):
            t["lots"].append(
                (
                    mid,
                    lot_id,
                    "AP",
                    issuer,
                    issued,
                    remaining,
                    at,
                    at + POINTS_LIFETIME,
                    f"txn_S{index:019d}{position:06d}",
                )
            )
        t["member_accounts"].append((mid, "AP", balance))
    return rows


async def _copy(conn: asyncpg.Connection, rows: Rows) -> None:
    async with conn.transaction():
        for table, columns in TABLE_COLUMNS.items():
            records = rows.tables[table]
            if records:
                await conn.copy_records_to_table(table, records=records, columns=columns)


async def seed_members(
    url: str,
    *,
    start: int,
    stop: int,
    merchant_ids: Sequence[str],
    now: datetime,
    on_progress: Any = None,
) -> None:
    """COPY members [start, stop) and their history; the next chunk is generated while the
    previous one is being copied."""
    conn = await asyncpg.connect(url)
    try:
        try:
            await conn.execute("SET session_replication_role = replica")
        except asyncpg.InsufficientPrivilegeError:
            pass  # not a superuser: triggers fire, slower but just as correct
        await conn.execute("SET synchronous_commit = off")
        loop = asyncio.get_running_loop()
        bounds = [(lo, min(lo + CHUNK_MEMBERS, stop)) for lo in range(start, stop, CHUNK_MEMBERS)]
        pending = loop.run_in_executor(None, generate, *bounds[0], merchant_ids, now)
        for number in range(len(bounds)):
            rows = await pending
            if number + 1 < len(bounds):
                pending = loop.run_in_executor(
                    None, generate, *bounds[number + 1], merchant_ids, now
                )
            await _copy(conn, rows)
            if on_progress is not None:
                on_progress(bounds[number][1] - start, stop - start)
        await conn.execute(
            "SELECT setval('lot_ids', $1), setval('obligation_ids', $2)",
            lot_base(stop) + 8,
            obligation_base(stop) + 4,
        )
    finally:
        await conn.close()


async def vacuum_analyze(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for table in TABLE_COLUMNS:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    finally:
        await conn.close()


async def counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {
            table: int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            for table in ("members", "transactions", "postings", "lots", "obligations")
        }
    finally:
        await conn.close()


def utc_now() -> datetime:
    return datetime.now(UTC)
