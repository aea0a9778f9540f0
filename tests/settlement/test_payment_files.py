"""The treasurer's payment files: the CSV and the ISO 20022 pain.001 (settlement/payments.py).

The pain.001 is validated here against the official XSD as shipped in the sepaxml package, loaded
with xmlschema independently of the module under test, and its sums are recomputed from the text.
"""

from __future__ import annotations

import csv
import io
import random
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
import sepaxml
import xmlschema
from hypothesis import given, strategies as st

from core.config import Settings
from merchants.models import BankAccount
from settlement.payments import (
    CSV_COLUMNS,
    PAIN001_VERSION,
    PAIN001_VERSIONS,
    NoPayments,
    PaymentFileError,
    Transfer,
    Treasury,
    format_amount,
    message_id,
    pain001,
    payment_csv,
    reference,
    transfer_for_net,
    verify_pain001,
)

RUN = "run-2026-06-01"
CREATED = datetime(2026, 6, 2, 0, 5, tzinfo=timezone(timedelta(hours=8)))
PERIOD_START = datetime(2026, 5, 31, 16, 0, tzinfo=UTC)
PERIOD_END = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)
TREASURY = Treasury("Demo Alliance Treasury", "NL91ABNA0417164300", "ABNANL2A")


def account(merchant_id: str, iban: str, bic: str | None = None, name: str = "") -> BankAccount:
    return BankAccount(merchant_id, name or f"{merchant_id} Ltd", iban, bic, PERIOD_START)


TRANSFERS = (
    Transfer(
        "mer_tea", "Jade Tea House", 1_234_56, "pay",
        account("mer_tea", "DE89370400440532013000", "COBADEFFXXX", "翡翠茶馆有限公司"),
    ),
    Transfer("mer_book", "Paper Moon", 5, "pay", account("mer_book", "GB29NWBK60161331926819")),
    Transfer(
        "mer_cinema", "Starlight Cinema", 98_765_43, "pay",
        account("mer_cinema", "FR1420041010050500013M02606", "BNPAFRPP"),
    ),
    Transfer("mer_noacct", "No Account Yet", 777_00, "pay", None),
    Transfer(
        "mer_payer", "Net Payer", 50_000_00, "collect",
        account("mer_payer", "BE68539007547034"),
    ),
    Transfer("mer_payer2", "=HYPERLINK(1)", 1_04, "collect", None),
)  # fmt: skip
PAID = ("mer_book", "mer_cinema", "mer_tea")  # the `pay` transfers with an account


@cache
def official_schema(version: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(Path(sepaxml.__file__).parent / "schemas" / f"{version}.xsd")


def make_pain001(**changes: object) -> bytes:
    arguments: dict[str, object] = {
        "run_id": RUN,
        "execution_date": date(2026, 6, 2),
        "currency": "CNY",
        "minor_units": 2,
        "treasury": TREASURY,
        "transfers": TRANSFERS,
        "created_at": CREATED,
    }
    return pain001(**{**arguments, **changes})  # type: ignore[arg-type]


def make_csv(**changes: object) -> bytes:
    arguments: dict[str, object] = {
        "run_id": RUN,
        "period_start": PERIOD_START,
        "period_end": PERIOD_END,
        "currency": "CNY",
        "minor_units": 2,
        "transfers": TRANSFERS,
    }
    return payment_csv(**{**arguments, **changes})  # type: ignore[arg-type]


def read_csv(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(b"\xef\xbb\xbf")  # the BOM spreadsheets need for UTF-8
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def parsed(data: bytes) -> tuple[ET.Element, dict[str, str]]:
    root = ET.fromstring(data)
    return root, {"p": root.tag[1:].partition("}")[0]}


def transactions(data: bytes) -> dict[str, tuple[Decimal, str, str]]:
    """IBAN -> (amount, currency, end-to-end id), read straight from the XML."""
    root, ns = parsed(data)
    found = {}
    for tx in root.iterfind(".//p:CdtTrfTxInf", ns):
        amount = tx.find("p:Amt/p:InstdAmt", ns)
        assert amount is not None
        assert amount.text is not None
        iban = tx.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=ns)
        assert iban is not None
        found[iban] = (
            Decimal(amount.text),
            amount.attrib["Ccy"],
            tx.findtext("p:PmtId/p:EndToEndId", namespaces=ns) or "",
        )
    return found


def control_sums_hold(data: bytes) -> bool:
    """Group and payment-information NbOfTxs and CtrlSum against the transactions' amounts."""
    root, ns = parsed(data)
    everything: list[Decimal] = []
    for block in root.iterfind(".//p:PmtInf", ns):
        amounts = [Decimal(e.text or "") for e in block.iterfind(".//p:InstdAmt", ns)]
        if Decimal(block.findtext("p:CtrlSum", namespaces=ns) or "") != sum(amounts):
            return False
        if int(block.findtext("p:NbOfTxs", namespaces=ns) or "") != len(amounts):
            return False
        everything += amounts
    header = root.find(".//p:GrpHdr", ns)
    assert header is not None
    return Decimal(header.findtext("p:CtrlSum", namespaces=ns) or "") == sum(everything) and int(
        header.findtext("p:NbOfTxs", namespaces=ns) or ""
    ) == len(everything)


# pain.001


@pytest.mark.parametrize("version", PAIN001_VERSIONS)
@pytest.mark.parametrize(
    ("currency", "minor_units"), [("CNY", 2), ("EUR", 2), ("JPY", 0), ("BHD", 3), ("CLF", 4)]
)
def test_pain001_validates_against_the_official_xsd(
    version: str, currency: str, minor_units: int
) -> None:
    data = make_pain001(currency=currency, minor_units=minor_units, version=version)
    official_schema(version).validate(data.decode())
    root, _ = parsed(data)
    assert root.tag == f"{{urn:iso:std:iso:20022:tech:xsd:{version}}}Document"
    assert control_sums_hold(data)
    scale = Decimal(10) ** -minor_units
    assert {iban: amount for iban, (amount, _, _) in transactions(data).items()} == {
        "GB29NWBK60161331926819": 5 * scale,
        "FR1420041010050500013M02606": 98_765_43 * scale,
        "DE89370400440532013000": 1_234_56 * scale,
    }
    for amount, ccy, _ in transactions(data).values():
        assert ccy == currency
        # ISO 4217's minor units, exactly: no "1234.00" yen, no rounded dinars.
        assert -amount.as_tuple().exponent == minor_units  # type: ignore[operator]


def test_the_default_version_is_the_2019_one() -> None:
    assert PAIN001_VERSION == "pain.001.001.09"
    assert b"urn:iso:std:iso:20022:tech:xsd:pain.001.001.09" in make_pain001()


def test_control_sum_and_count_are_those_of_the_payable_transfers() -> None:
    data = make_pain001()
    root, ns = parsed(data)
    expected = Decimal(sum(t.amount for t in TRANSFERS if t.merchant_id in PAID)) / 100
    assert root.findtext(".//p:GrpHdr/p:CtrlSum", namespaces=ns) == f"{expected:.2f}"
    assert root.findtext(".//p:GrpHdr/p:NbOfTxs", namespaces=ns) == "3"
    assert root.findtext(".//p:PmtInf/p:CtrlSum", namespaces=ns) == "100000.04"
    summary = verify_pain001(data)
    assert (summary.transactions, summary.control_sum, summary.currency) == (
        3,
        Decimal("100000.04"),
        "CNY",
    )


def test_a_payee_without_an_account_and_collections_are_left_out_and_flagged() -> None:
    data = make_pain001()
    paid_ids = {reference(RUN, merchant_id, "pay") for merchant_id in PAID}
    assert {e2e for _, _, e2e in transactions(data).values()} == paid_ids
    assert reference(RUN, "mer_noacct", "pay").encode() not in data
    assert b"BE68539007547034" not in data  # the net payer's account: collected, not paid
    rows = {row["merchant_id"]: row for row in read_csv(make_csv())}
    assert rows["mer_noacct"]["status"] == "missing_bank_account"
    assert rows["mer_payer2"]["status"] == "missing_bank_account"
    assert {m for m, row in rows.items() if row["status"] == "ready"} == {*PAID, "mer_payer"}
    ready_pay = {row["reference"] for row in rows.values() if row["direction"] == "pay"} & paid_ids
    assert ready_pay == paid_ids  # the CSV names each transfer by the id the bank will return


def test_the_same_run_gives_the_same_bytes_whatever_the_order() -> None:
    first = make_pain001()
    shuffled = list(TRANSFERS)
    random.Random(7).shuffle(shuffled)
    assert make_pain001(transfers=tuple(shuffled)) == first
    assert make_csv(transfers=tuple(shuffled)) == make_csv()
    root, ns = parsed(first)
    assert root.findtext(".//p:MsgId", namespaces=ns) == message_id(RUN)
    assert root.findtext(".//p:CreDtTm", namespaces=ns) == "2026-06-02T00:05:00+08:00"
    later = make_pain001(created_at=CREATED + timedelta(hours=1))
    assert later.replace(b"T01:05:00", b"T00:05:00") == first  # only the creation time moved
    other_run = make_pain001(run_id="run-2026-06-02")
    assert message_id(RUN).encode() not in other_run
    assert not set(verify_pain001(other_run).end_to_end_ids) & set(
        verify_pain001(first).end_to_end_ids
    )


def test_ids_fit_iso_20022_and_are_in_merchant_order() -> None:
    summary = verify_pain001(make_pain001(run_id="r" * 500))
    assert all(len(e2e) <= 35 for e2e in summary.end_to_end_ids)
    assert len(summary.message_id) <= 35
    assert list(summary.end_to_end_ids) == [reference("r" * 500, m, "pay") for m in PAID]


def test_a_tampered_amount_fails_the_control_sum_or_the_xsd() -> None:
    data = make_pain001()
    schema = official_schema(PAIN001_VERSION)
    # One fen more to the tea house: still schema-valid, but the sums no longer hold.
    more = data.replace(b">1234.56<", b">1234.57<")
    assert more != data
    schema.validate(more.decode())
    assert not control_sums_hold(more)
    with pytest.raises(PaymentFileError, match="CtrlSum 100000.04, but the amounts add up to"):
        verify_pain001(more)
    # A sub-fen amount beyond the schema's 5 fraction digits: invalid.
    precise = data.replace(b">1234.56<", b">1234.5600001<")
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(precise.decode())
    with pytest.raises(PaymentFileError, match="XSD"):
        verify_pain001(precise)
    # A transaction dropped without fixing the count.
    root, ns = parsed(data)
    block = root.find(".//p:PmtInf", ns)
    assert block is not None
    block.remove(block.findall("p:CdtTrfTxInf", ns)[0])
    with pytest.raises(PaymentFileError, match="NbOfTxs 3, but 2"):
        verify_pain001(ET.tostring(root))


def test_cny_is_a_plain_iso_20022_transfer_and_eur_a_sepa_one() -> None:
    cny = make_pain001()
    assert b"<SvcLvl>" not in cny
    assert b"<ChrgBr>SHAR</ChrgBr>" in cny
    assert "<Nm>翡翠茶馆有限公司</Nm>".encode() in cny  # the name as the bank holds it
    eur = make_pain001(currency="EUR")
    assert b"<Cd>SEPA</Cd>" in eur
    assert b"<ChrgBr>SLEV</ChrgBr>" in eur
    assert b"<Nm>Fei Cui Cha Guan You Xian Gong Si</Nm>" in eur  # the EPC's Latin set
    assert b"Alliance settlement run-2026-06-01 mer-tea" in eur  # no "_" in SEPA text
    for data in (cny, eur):
        assert b"<BtchBookg>false</BtchBookg>" in data  # one debit per merchant


def test_a_treasury_without_bic_says_not_provided() -> None:
    data = make_pain001(treasury=replace(TREASURY, bic=None))
    official_schema(PAIN001_VERSION).validate(data.decode())
    root, ns = parsed(data)
    assert root.findtext(".//p:DbtrAgt/p:FinInstnId/p:Othr/p:Id", namespaces=ns) == "NOTPROVIDED"


def test_nothing_payable_is_no_file() -> None:
    collections = tuple(t for t in TRANSFERS if t.direction == "collect" or t.account is None)
    with pytest.raises(NoPayments):
        make_pain001(transfers=collections)
    assert len(read_csv(make_csv(transfers=collections))) == len(collections)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"transfers": (*TRANSFERS, TRANSFERS[0])}, "two transfers"),
        ({"transfers": (replace(TRANSFERS[0], amount=0),)}, "more than 0"),
        ({"transfers": (replace(TRANSFERS[0], amount=-5),)}, "more than 0"),
        ({"transfers": (replace(TRANSFERS[0], direction="refund"),)}, "pay or collect"),
        ({"transfers": (replace(TRANSFERS[0], merchant_id="mer_other"),)}, "another merchant"),
        ({"created_at": datetime(2026, 6, 2)}, "timezone"),
        ({"currency": "yuan"}, "ISO 4217"),
        ({"minor_units": 5}, "minor units"),
        ({"run_id": ""}, "run id"),
        ({"version": "pain.001.001.02"}, "unsupported"),
        ({"treasury": replace(TREASURY, iban="NL91ABNA0417164301")}, "treasury"),
        (
            {"transfers": (replace(TRANSFERS[1], account=account("mer_book", "GB29")),)},
            "mer_book's account",
        ),
        ({"transfers": (replace(TRANSFERS[0], amount=10**18),)}, "18 digits"),
    ],
)
def test_bad_input_makes_no_file(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_pain001(**changes)


def test_amounts_are_integers_never_floats() -> None:
    with pytest.raises(TypeError):
        make_pain001(transfers=(replace(TRANSFERS[0], amount=12.5),))
    with pytest.raises(TypeError):
        make_csv(transfers=(replace(TRANSFERS[0], amount=True),))
    with pytest.raises(TypeError, match="date"):
        make_pain001(execution_date=CREATED)


def test_the_largest_amount_that_fits_is_exact() -> None:
    largest = 10**18 - 1
    data = make_pain001(transfers=(replace(TRANSFERS[0], amount=largest),))
    official_schema(PAIN001_VERSION).validate(data.decode())
    assert b">9999999999999999.99<" in data


# CSV


def test_csv_lists_both_directions_one_row_per_merchant_in_merchant_order() -> None:
    rows = read_csv(make_csv())
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["merchant_id"] for row in rows] == sorted(t.merchant_id for t in TRANSFERS)
    by_id = {row["merchant_id"]: row for row in rows}
    assert by_id["mer_tea"] == {
        "run_id": RUN,
        "period_start": "2026-05-31T16:00:00+00:00",
        "period_end": "2026-06-01T16:00:00+00:00",
        "merchant_id": "mer_tea",
        "merchant_name": "Jade Tea House",
        "direction": "pay",
        "currency": "CNY",
        "amount": "1234.56",
        "amount_minor_units": "123456",
        "account_name": "翡翠茶馆有限公司",
        "iban": "DE89370400440532013000",
        "bic": "COBADEFFXXX",
        "reference": reference(RUN, "mer_tea", "pay"),
        "status": "ready",
    }
    assert by_id["mer_payer"]["direction"] == "collect"
    assert by_id["mer_payer"]["amount"] == "50000.00"
    assert by_id["mer_payer"]["reference"] == reference(RUN, "mer_payer", "collect")
    assert by_id["mer_payer2"]["merchant_name"] == "'=HYPERLINK(1)"  # not a formula
    assert make_csv().count(b"\r\n") == len(TRANSFERS) + 1


def test_csv_of_a_first_run_has_no_period_start() -> None:
    rows = read_csv(make_csv(period_start=None))
    assert {row["period_start"] for row in rows} == {""}
    with pytest.raises(ValueError, match="start before"):
        make_csv(period_start=PERIOD_END)
    with pytest.raises(ValueError, match="timezone"):
        make_csv(period_end=datetime(2026, 6, 1))


@pytest.mark.parametrize(
    ("minor_units", "minor", "text"),
    [
        (0, 1, "1"),
        (0, 123456, "123456"),
        (0, 2**63 - 1, "9223372036854775807"),
        (2, 1, "0.01"),
        (2, 5, "0.05"),
        (2, 10, "0.10"),
        (2, 100, "1.00"),
        (2, 123456, "1234.56"),
        (2, 2**63 - 1, "92233720368547758.07"),
        (3, 1, "0.001"),
        (3, 1000, "1.000"),
        (3, 1234567, "1234.567"),
        (3, 2**63 - 1, "9223372036854775.807"),
    ],
)
def test_csv_amounts_are_exact(minor_units: int, minor: int, text: str) -> None:
    transfer = Transfer("mer_x", "X", minor, "pay", None)
    rows = read_csv(make_csv(minor_units=minor_units, transfers=(transfer,)))
    assert (rows[0]["amount"], rows[0]["amount_minor_units"]) == (text, str(minor))
    assert Decimal(text).scaleb(minor_units) == minor


@given(minor=st.integers(min_value=-(2**63), max_value=2**63 - 1), units=st.integers(0, 4))
def test_format_amount_is_exact_for_every_amount(minor: int, units: int) -> None:
    text = format_amount(minor, units)
    assert Decimal(text).scaleb(units) == minor
    assert len(text.partition(".")[2]) == units
    assert "e" not in text.lower()


# Plumbing the settlement run uses


def test_transfer_for_net() -> None:
    acct = account("mer_a", "NL91ABNA0417164300")
    assert transfer_for_net("mer_a", "A", 150, acct) == Transfer("mer_a", "A", 150, "pay", acct)
    assert transfer_for_net("mer_a", "A", -150, None) == Transfer(
        "mer_a", "A", 150, "collect", None
    )
    assert transfer_for_net("mer_a", "A", 0, acct) is None


def test_the_treasury_comes_from_settings() -> None:
    default = Treasury.from_settings(Settings(_env_file=None))
    assert default == Treasury("Demo Alliance Treasury", "NL91ABNA0417164300", "ABNANL2A")
    configured = Treasury.from_settings(
        Settings(
            ALLIANCE_TREASURY_NAME="Coalition Treasury",
            ALLIANCE_TREASURY_IBAN="de89 3704 0044 0532 0130 00",
            ALLIANCE_TREASURY_BIC="",
            _env_file=None,
        )
    )
    assert configured == Treasury("Coalition Treasury", "DE89370400440532013000", None)
    with pytest.raises(ValueError, match="ALLIANCE_TREASURY_IBAN: .*check digits"):
        Treasury.from_settings(
            Settings(ALLIANCE_TREASURY_IBAN="DE89370400440532013001", _env_file=None)
        )
    with pytest.raises(ValueError, match="ALLIANCE_TREASURY_BIC"):
        Treasury.from_settings(Settings(ALLIANCE_TREASURY_BIC="ABN", _env_file=None))


def test_the_csv_and_the_pain001_agree_on_every_payment() -> None:
    paid = {e2e: amount for amount, _, e2e in transactions(make_pain001()).values()}
    ready = {
        row["reference"]: Decimal(row["amount"])
        for row in read_csv(make_csv())
        if row["direction"] == "pay" and row["status"] == "ready"
    }
    assert paid == ready


PINNED_PAIN001 = """\
<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">
  <CstmrCdtTrfInitn>
    <GrpHdr>
      <MsgId>MSG-5d32e16e2c486f054bda48fc82b5071</MsgId>
      <CreDtTm>2026-06-02T00:05:00+08:00</CreDtTm>
      <NbOfTxs>1</NbOfTxs>
      <CtrlSum>0.05</CtrlSum>
      <InitgPty>
        <Nm>Demo Alliance Treasury</Nm>
      </InitgPty>
    </GrpHdr>
    <PmtInf>
      <PmtInfId>PMT-f77979abb7ab38be1cddc43ca37001d</PmtInfId>
      <PmtMtd>TRF</PmtMtd>
      <BtchBookg>false</BtchBookg>
      <NbOfTxs>1</NbOfTxs>
      <CtrlSum>0.05</CtrlSum>
      <ReqdExctnDt>
        <Dt>2026-06-02</Dt>
      </ReqdExctnDt>
      <Dbtr>
        <Nm>Demo Alliance Treasury</Nm>
      </Dbtr>
      <DbtrAcct>
        <Id>
          <IBAN>NL91ABNA0417164300</IBAN>
        </Id>
      </DbtrAcct>
      <DbtrAgt>
        <FinInstnId>
          <BICFI>ABNANL2A</BICFI>
        </FinInstnId>
      </DbtrAgt>
      <ChrgBr>SHAR</ChrgBr>
      <CdtTrfTxInf>
        <PmtId>
          <EndToEndId>E2E-b856c158f95b40c62b86478ff9e4aa1</EndToEndId>
        </PmtId>
        <Amt>
          <InstdAmt Ccy="CNY">0.05</InstdAmt>
        </Amt>
        <Cdtr>
          <Nm>mer_book Ltd</Nm>
        </Cdtr>
        <CdtrAcct>
          <Id>
            <IBAN>GB29NWBK60161331926819</IBAN>
          </Id>
        </CdtrAcct>
        <RmtInf>
          <Ustrd>Alliance settlement run-2026-06-01 mer_book</Ustrd>
        </RmtInf>
      </CdtTrfTxInf>
    </PmtInf>
  </CstmrCdtTrfInitn>
</Document>
"""


def test_a_small_file_is_exactly_these_bytes() -> None:
    """Pinned: a change of library, id derivation or layout shows here before it reaches a bank
    (and before a regenerated old run stops matching the file the bank already has)."""
    assert make_pain001(transfers=(TRANSFERS[1],)).decode() == PINNED_PAIN001
    period = "run-2026-06-01,2026-05-31T16:00:00+00:00,2026-06-01T16:00:00+00:00"
    assert make_csv(transfers=(TRANSFERS[1], TRANSFERS[5])).decode("utf-8") == (
        "\ufeffrun_id,period_start,period_end,merchant_id,merchant_name,direction,currency,"
        "amount,amount_minor_units,account_name,iban,bic,reference,status\r\n"
        f"{period},mer_book,Paper Moon,pay,CNY,0.05,5,mer_book Ltd,GB29NWBK60161331926819,,"
        "E2E-b856c158f95b40c62b86478ff9e4aa1,ready\r\n"
        f"{period},mer_payer2,'=HYPERLINK(1),collect,CNY,1.04,104,,,,"
        "COL-6aa2c2e703cdbbf7b4a3c796dc5a011,missing_bank_account\r\n"
    )
