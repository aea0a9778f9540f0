"""The payment files of a real settlement run say what its statements say: the CSV, read with the
csv module, has one row per merchant with a non-zero net and that net as its amount; the pain.001
validates against the official XSD and pays exactly the net receivers that have an account."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import sepaxml  # type: ignore[import-untyped]
import xmlschema

from core.clock import FixedClock
from core.database import Database
from exchange.service import Ledger
from merchants import service as merchants
from settlement import payments, service
from tests.factories import (
    CREATED_AT,
    DEFAULT_SETTINGS,
    issue,
    make_member,
    make_merchant,
    redeem,
    unique,
)

CUTOFF = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
ACCOUNTS = {
    "books": ("Books Ltd", "DE89370400440532013000", "COBADEFFXXX"),
    "gym": ("Gym plc", "GB29NWBK60161331926819", None),
    "tea": ("Tea SARL", "FR1420041010050500013M02606", "BNPAFRPP"),
}  # shop (a net receiver) and cafe (a net payer) have none


async def test_the_csv_and_the_pain001_carry_the_statements_nets(
    alliance_db: Database, alliance_ledger: Ledger, day_clock: FixedClock
) -> None:
    ids = {name: await make_merchant(alliance_db, name=unique(name)) for name in
           ("tea", "books", "shop", "cafe", "gym")}  # fmt: skip
    for name, (holder, iban, bic) in ACCOUNTS.items():
        await merchants.set_bank_account(alliance_db, ids[name], holder, iban, bic, CREATED_AT)
    ann, bo, cy = [await make_member(alliance_ledger) for _ in range(3)]
    await issue(alliance_ledger, ids["tea"], ann, 1000)
    await issue(alliance_ledger, ids["books"], bo, 500)
    await issue(alliance_ledger, ids["cafe"], cy, 777)
    await redeem(alliance_ledger, ids["books"], ann, 400)  # Tea owes Books
    await redeem(alliance_ledger, ids["shop"], ann, 50)  # Tea owes Shop
    await redeem(alliance_ledger, ids["gym"], ann, 200)  # Tea owes Gym
    await redeem(alliance_ledger, ids["tea"], bo, 130)  # Books owes Tea
    await redeem(alliance_ledger, ids["tea"], cy, 333)  # Cafe owes Tea
    await redeem(alliance_ledger, ids["shop"], cy, 101)  # Cafe owes Shop
    day_clock.set(CUTOFF + timedelta(hours=1))

    result = await service.settle_cutoff(alliance_db, day_clock, CUTOFF)
    run = result.run
    detail = await service.run_detail(alliance_db, run.run_id)
    nets = {s["merchant_id"]: s["net"] for s in detail["statements"]}
    names = detail["names"]
    assert set(nets) == {ids[n] for n in ("tea", "books", "shop", "cafe", "gym")}
    assert sum(nets.values()) == -run.fee_total != 0  # the alliance keeps exactly the fees
    with_account = {ids[name] for name in ACCOUNTS}

    data, file_name, media_type = await service.payment_file(alliance_db, run.run_id, "csv")
    assert (file_name, media_type) == (f"{run.run_id}-payments.csv", "text/csv")
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    assert tuple(reader.fieldnames or ()) == payments.CSV_COLUMNS
    rows = list(reader)
    assert [row["merchant_id"] for row in rows] == sorted(m for m, net in nets.items() if net)
    unit = Decimal(10) ** -run.minor_units
    for row in rows:
        net = nets[row["merchant_id"]]
        assert row["direction"] == ("pay" if net > 0 else "collect")
        assert int(row["amount_minor_units"]) == abs(net)
        assert Decimal(row["amount"]) == abs(net) * unit  # exact decimal text, no float
        assert row["amount"] == f"{abs(net) * unit:.{run.minor_units}f}"
        assert (row["run_id"], row["currency"]) == (run.run_id, run.currency)
        assert row["period_end"] == run.period_end.isoformat()
        # The first run's period starts with the alliance: its first settings took effect.
        assert row["period_start"] == DEFAULT_SETTINGS.effective_from.isoformat()
        assert row["merchant_name"] == names[row["merchant_id"]]
        has_account = row["merchant_id"] in with_account
        assert row["status"] == ("ready" if has_account else "missing_bank_account")
        assert bool(row["iban"]) == has_account
    signed = sum(
        (1 if row["direction"] == "pay" else -1) * int(row["amount_minor_units"]) for row in rows
    )
    assert signed == sum(nets.values())
    assert {row["direction"] for row in rows} == {"pay", "collect"}
    assert any(row["status"] == "missing_bank_account" and row["direction"] == "pay"
               for row in rows)  # fmt: skip

    xml, _, _ = await service.payment_file(alliance_db, run.run_id, "pain001")
    schema = xmlschema.XMLSchema(
        Path(sepaxml.__file__).parent / "schemas" / f"{payments.PAIN001_VERSION}.xsd"
    )
    schema.validate(xml)  # the official ISO 20022 XSD, independently of the module's own check
    summary = payments.verify_pain001(xml)
    paid = {m: net for m, net in nets.items() if net > 0 and m in with_account}
    assert len(paid) == 2
    assert summary.transactions == len(paid)
    assert summary.control_sum == sum(paid.values()) * unit
    assert summary.currency == run.currency
    root = ET.fromstring(xml)
    ns = {"p": root.tag[1:].partition("}")[0]}
    by_iban = {
        tx.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=ns): Decimal(
            tx.findtext("p:Amt/p:InstdAmt", namespaces=ns) or "nan"
        )
        for tx in root.iterfind(".//p:CdtTrfTxInf", ns)
    }
    iban_of = {ids[name]: iban for name, (_, iban, _) in ACCOUNTS.items()}
    assert by_iban == {iban_of[m]: net * unit for m, net in paid.items()}
