"""Payment instructions for the alliance's treasurer, from one settlement run's nets.

Two files (docs/payment-files.md, ADR 0011):

- `payment_csv`: every merchant with a non-zero net, one row each, in both directions: the alliance
  pays net receivers (`pay`) and collects from net payers (`collect`). Amounts are exact decimal
  strings made from integer minor units; a row without a bank account says so in its status.
- `pain001`: an ISO 20022 customer credit transfer initiation (pain.001) with the `pay` rows that
  have a bank account, debiting the alliance's treasury account, built with `sepaxml` and checked
  against the official XSD before it is returned.

Pure functions: plain data in, bytes out, no clock, no randomness, no database. The same input
(including `created_at`) gives the same bytes, and every id in the files is derived from the run id
and the merchant id, so a regenerated file is the same file and a bank refuses it as a duplicate.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib.resources import files
from typing import Final, Literal

import xmlschema
from sepaxml import SepaTransfer  # type: ignore[import-untyped]
from text_unidecode import unidecode  # type: ignore[import-untyped]  # sepaxml's transliteration

from core.config import Settings, get_settings
from core.errors import DomainError
from merchants import banking
from merchants.models import BankAccount

Direction = Literal["pay", "collect"]

PAIN001_VERSION: Final = "pain.001.001.09"
"""The ISO 20022 2019 version: what the EPC's SEPA guidelines (since November 2025) and SWIFT's
CBPR+ expect. `pain.001.001.03` (2009) is accepted too, for banks that still want it."""
PAIN001_VERSIONS: Final = ("pain.001.001.03", "pain.001.001.09")

STATUS_READY: Final = "ready"
STATUS_MISSING_BANK_ACCOUNT: Final = "missing_bank_account"

CSV_COLUMNS: Final = (
    "run_id",
    "period_start",
    "period_end",
    "merchant_id",
    "merchant_name",
    "direction",
    "currency",
    "amount",
    "amount_minor_units",
    "account_name",
    "iban",
    "bic",
    "reference",
    "status",
)

AMOUNT_DIGITS_MAX: Final = 18
"""ISO 20022 amounts have at most 18 digits (totalDigits), fraction included."""
MINOR_UNITS_MAX: Final = 4
"""As alliance settings allow (ISO 4217 has none above 4)."""

_CURRENCY = re.compile(r"[A-Z]{3}")
# The SEPA (EPC) basic Latin character set; other characters are replaced in EUR files.
_NOT_SEPA_TEXT = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")
_SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_ID_HEX_DIGITS = 31  # a 4-character prefix + 31 = 35, the Max35Text of every pain.001 id
_REMITTANCE_LENGTH_MAX = 140


class PaymentFileError(ValueError):
    """A payment file that must not go to a bank: invalid against the XSD, or sums that disagree."""


class NoPayments(ValueError):
    """No transfer is payable (a pain.001 needs at least one): skip the file, keep the CSV."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """One merchant's net for a run, as money to move: `amount` minor units, always > 0.

    `pay`: the alliance pays a net receiver. `collect`: a net payer pays the alliance.
    """

    merchant_id: str
    merchant_name: str
    amount: int
    direction: Direction
    account: BankAccount | None


@dataclass(frozen=True, slots=True)
class Treasury:
    """The alliance's own account: debtor of every credit transfer, creditor of collections."""

    name: str
    iban: str
    bic: str | None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Treasury:
        """From ALLIANCE_TREASURY_NAME, _IBAN and _BIC, checked like a merchant's account."""
        settings = settings or get_settings()
        variables = {"account_name": "NAME", "iban": "IBAN", "bic": "BIC"}
        try:
            return cls(
                name=banking.check_account_name(settings.treasury_name),
                iban=banking.normalize_iban(settings.treasury_iban),
                bic=banking.normalize_bic(settings.treasury_bic) if settings.treasury_bic else None,
            )
        except DomainError as error:
            variable = variables.get(str(error.extra.get("field")), "IBAN")
            raise ValueError(f"ALLIANCE_TREASURY_{variable}: {error.detail}") from None


@dataclass(frozen=True, slots=True)
class Pain001Summary:
    """What `verify_pain001` found in a valid file."""

    version: str
    message_id: str
    currency: str
    transactions: int
    control_sum: Decimal
    end_to_end_ids: tuple[str, ...]


def transfer_for_net(
    merchant_id: str, merchant_name: str, net: int, account: BankAccount | None
) -> Transfer | None:
    """The transfer that settles a merchant's net (receivables - payables); None for a zero net."""
    if net == 0:
        return None
    direction: Direction = "pay" if net > 0 else "collect"
    return Transfer(merchant_id, merchant_name, abs(net), direction, account)


def format_amount(minor: int, minor_units: int) -> str:
    """Exact decimal text of `minor` minor units: (1234, 2) -> "12.34", (5, 3) -> "0.005"."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError("amounts are whole minor units (int)")
    _check_minor_units(minor_units)
    if minor_units == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**minor_units)
    return f"{sign}{whole}.{fraction:0{minor_units}d}"


def message_id(run_id: str) -> str:
    """The pain.001 MsgId of a run's file: a bank refuses a second file with the same one."""
    return _derived_id("MSG-", "message", run_id)


def payment_information_id(run_id: str) -> str:
    return _derived_id("PMT-", "payment-information", run_id)


def reference(run_id: str, merchant_id: str, direction: Direction) -> str:
    """The id a transfer travels with: the pain.001 EndToEndId for `pay` (banks return it on the
    statement), the reference a net payer quotes on its payment for `collect`."""
    if direction == "pay":
        return _derived_id("E2E-", "end-to-end", run_id, merchant_id)
    return _derived_id("COL-", "collection", run_id, merchant_id)


def payable_transfers(transfers: Iterable[Transfer]) -> list[Transfer]:
    """The transfers a pain.001 carries: `pay` with a bank account, by merchant id."""
    return sorted(
        (t for t in transfers if t.direction == "pay" and t.account is not None),
        key=lambda t: t.merchant_id,
    )


def payment_csv(
    *,
    run_id: str,
    period_start: datetime | None,
    period_end: datetime,
    currency: str,
    minor_units: int,
    transfers: Sequence[Transfer],
) -> bytes:
    """Every transfer of the run, one row per merchant by merchant id (columns: CSV_COLUMNS).

    UTF-8 with a byte order mark (so that spreadsheets read merchants' names right) and CRLF line
    ends (RFC 4180). Text that a spreadsheet would run as a formula starts with an apostrophe.
    """
    _check_run(run_id, currency, minor_units, transfers)
    _check_aware(period_end, "period_end")
    if period_start is not None:
        _check_aware(period_start, "period_start")
        if period_start >= period_end:
            raise ValueError("the period must start before it ends")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for transfer in sorted(transfers, key=lambda t: t.merchant_id):
        account = transfer.account
        row = (
            _cell(run_id),
            period_start.isoformat() if period_start is not None else "",
            period_end.isoformat(),
            _cell(transfer.merchant_id),
            _cell(transfer.merchant_name),
            transfer.direction,
            currency,
            format_amount(transfer.amount, minor_units),
            str(transfer.amount),
            _cell(account.account_name) if account else "",
            account.iban if account else "",
            (account.bic or "") if account else "",
            reference(run_id, transfer.merchant_id, transfer.direction),
            STATUS_READY if account else STATUS_MISSING_BANK_ACCOUNT,
        )
        writer.writerow(row)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def pain001(
    *,
    run_id: str,
    execution_date: date,
    currency: str,
    minor_units: int,
    treasury: Treasury,
    transfers: Sequence[Transfer],
    created_at: datetime,
    version: str = PAIN001_VERSION,
) -> bytes:
    """The credit transfers to the net receivers that have a bank account, as one pain.001
    message with one payment information block (executed on `execution_date`, booked one by one).

    Raises NoPayments if there is none. EUR files follow the SEPA rules (service level SEPA,
    charges SLEV, Latin character set); other currencies are plain ISO 20022 credit transfers
    (no service level, charges shared, names as the bank holds them). The file is checked
    against the official XSD and its control sums before it is returned.
    """
    _check_run(run_id, currency, minor_units, transfers)
    _check_aware(created_at, "created_at")
    if isinstance(execution_date, datetime):
        raise TypeError("the execution date is a date (the bank's business day), not a datetime")
    if version not in PAIN001_VERSIONS:
        raise ValueError(f"unsupported pain.001 version {version!r}; use one of {PAIN001_VERSIONS}")
    payable = payable_transfers(transfers)
    if not payable:
        raise NoPayments(f"run {run_id} has no net receiver with a bank account to pay")
    total = sum(t.amount for t in payable)
    if total >= 10**AMOUNT_DIGITS_MAX:
        raise ValueError(f"the run's total does not fit {AMOUNT_DIGITS_MAX} digits of ISO 20022")
    sepa = currency == "EUR"
    debtor = _checked_treasury(treasury)

    builder = SepaTransfer(
        {
            "name": _text(debtor.name, sepa),
            "IBAN": debtor.iban,
            **({"BIC": debtor.bic} if debtor.bic else {}),
            "batch": True,
            "currency": currency,
            "domestic": not sepa,  # sepaxml's switch for "no SEPA service level"
        },
        schema=version,
        clean=sepa,
    )
    amounts: dict[str, int] = {}
    for transfer in payable:
        account = _checked_account(transfer)
        end_to_end_id = reference(run_id, transfer.merchant_id, "pay")
        amounts[end_to_end_id] = transfer.amount
        payment: dict[str, object] = {
            "name": _text(account.account_name, sepa),
            "IBAN": account.iban,
            "amount": transfer.amount,
            "execution_date": execution_date,
            "description": _text(_remittance(run_id, transfer.merchant_id), sepa),
            "endtoend_id": end_to_end_id,
        }
        if account.bic:
            payment["BIC"] = account.bic
        builder.add_payment(payment)

    document = ET.fromstring(builder.export(validate=False))
    namespace = _namespace(document)
    _deterministic(document, namespace, run_id=run_id, created_at=created_at, sepa=sepa)
    _exact_amounts(document, namespace, amounts, minor_units)
    if not debtor.bic:
        _debtor_agent_not_provided(document, namespace)
    ET.indent(document, space="  ")
    # The message's namespace as the default one (no prefixes), as sepaxml itself registers it;
    # ElementTree's `default_namespace` option would refuse the unqualified Ccy attribute.
    ET.register_namespace("", namespace)
    body = ET.tostring(document, encoding="unicode")
    data = b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8") + b"\n"

    summary = verify_pain001(data)
    if summary.control_sum * 10**minor_units != total or summary.transactions != len(payable):
        raise PaymentFileError("the pain.001 does not carry the run's transfers")  # a bug here
    return data


def verify_pain001(data: bytes) -> Pain001Summary:
    """Check a pain.001 before it goes to a bank: valid against the official XSD of its version,
    and every NbOfTxs and CtrlSum (of the group and of each payment information block) equal to
    the count and the exact sum of the transactions' amounts, all in one currency."""
    try:
        document = ET.fromstring(data)
    except ET.ParseError as error:
        raise PaymentFileError(f"not well-formed XML: {error}") from None
    namespace = _namespace(document)
    version = namespace.rsplit(":", 1)[-1]
    if version not in PAIN001_VERSIONS:
        raise PaymentFileError(f"not a supported pain.001 ({namespace or 'no namespace'})")
    invalid = next(iter(_schema(version).iter_errors(document)), None)
    if invalid is not None:
        raise PaymentFileError(
            f"invalid against the {version} XSD: {invalid.reason} ({invalid.path})"
        )

    ns = {"p": namespace}
    initiation = document.find("p:CstmrCdtTrfInitn", ns)
    assert initiation is not None  # the XSD requires it
    all_amounts: list[Decimal] = []
    currencies: set[str] = set()
    end_to_end_ids: list[str] = []
    for block in initiation.findall("p:PmtInf", ns):
        amounts = []
        for transaction in block.findall("p:CdtTrfTxInf", ns):
            amount = transaction.find("p:Amt/p:InstdAmt", ns)
            if amount is None:  # the XSD allows an equivalent amount instead
                raise PaymentFileError("a transaction has no instructed amount")
            amounts.append(Decimal(_required_text(amount)))
            currencies.add(amount.attrib["Ccy"])
            end_to_end_ids.append(_required_text(transaction.find("p:PmtId/p:EndToEndId", ns)))
        _check_totals(block, ns, amounts, f"payment information {_text_of(block, 'PmtInfId', ns)}")
        all_amounts += amounts
    _check_totals(initiation.find("p:GrpHdr", ns), ns, all_amounts, "group header")
    if len(currencies) != 1:
        raise PaymentFileError(f"one currency per file, found {sorted(currencies)}")
    if len(set(end_to_end_ids)) != len(end_to_end_ids):
        raise PaymentFileError("two transactions share an end-to-end id")
    header = initiation.find("p:GrpHdr", ns)
    return Pain001Summary(
        version=version,
        message_id=_text_of(header, "MsgId", ns),
        currency=currencies.pop(),
        transactions=len(all_amounts),
        control_sum=sum(all_amounts, Decimal(0)),
        end_to_end_ids=tuple(end_to_end_ids),
    )


def pain001_schema_path(version: str = PAIN001_VERSION) -> str:
    """The official ISO 20022 XSD of `version`, as shipped in the sepaxml package."""
    return str(files("sepaxml") / "schemas" / f"{version}.xsd")


# Checks of the plain data in


def _check_run(run_id: str, currency: str, minor_units: int, transfers: Sequence[Transfer]) -> None:
    if not run_id or not run_id.strip():
        raise ValueError("a run id is needed: every id in the files derives from it")
    if not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency {currency!r} is not an ISO 4217 code like CNY")
    _check_minor_units(minor_units)
    seen: set[str] = set()
    for transfer in transfers:
        if transfer.merchant_id in seen:
            raise ValueError(f"merchant {transfer.merchant_id} has two transfers; one per merchant")
        seen.add(transfer.merchant_id)
        if isinstance(transfer.amount, bool) or not isinstance(transfer.amount, int):
            raise TypeError(f"merchant {transfer.merchant_id}: amounts are whole minor units")
        if transfer.amount <= 0:
            raise ValueError(f"merchant {transfer.merchant_id}: a transfer moves more than 0")
        if transfer.direction not in ("pay", "collect"):
            raise ValueError(f"merchant {transfer.merchant_id}: direction is pay or collect")
        if transfer.account is not None and transfer.account.merchant_id != transfer.merchant_id:
            raise ValueError(f"merchant {transfer.merchant_id} carries another merchant's account")


def _check_minor_units(minor_units: int) -> None:
    if isinstance(minor_units, bool) or not 0 <= minor_units <= MINOR_UNITS_MAX:
        raise ValueError(f"minor units are 0 to {MINOR_UNITS_MAX}")


def _check_aware(instant: datetime, field: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{field} needs a timezone")


def _checked_treasury(treasury: Treasury) -> Treasury:
    try:
        return Treasury(
            name=banking.check_account_name(treasury.name),
            iban=banking.normalize_iban(treasury.iban),
            bic=None if treasury.bic is None else banking.normalize_bic(treasury.bic),
        )
    except DomainError as error:
        raise ValueError(f"the treasury account: {error.detail}") from None


def _checked_account(transfer: Transfer) -> BankAccount:
    """The account as stored (validated when set), checked again: the file must pass its XSD."""
    account = transfer.account
    assert account is not None
    try:
        return BankAccount(
            merchant_id=account.merchant_id,
            account_name=banking.check_account_name(account.account_name),
            iban=banking.normalize_iban(account.iban),
            bic=None if account.bic is None else banking.normalize_bic(account.bic),
            updated_at=account.updated_at,
        )
    except DomainError as error:
        raise ValueError(f"merchant {transfer.merchant_id}'s account: {error.detail}") from None


# Text and ids


def _derived_id(prefix: str, kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join((kind, *parts)).encode("utf-8")).hexdigest()
    return prefix + digest[:_ID_HEX_DIGITS]


def _remittance(run_id: str, merchant_id: str) -> str:
    text = f"Alliance settlement {run_id} {merchant_id}"
    return text[:_REMITTANCE_LENGTH_MAX]


def _text(value: str, sepa: bool) -> str:
    """SEPA files keep to the EPC's Latin set (sepaxml transliterates the rest first)."""
    if not sepa:
        return value
    return " ".join(_NOT_SEPA_TEXT.sub("-", unidecode(value)).split()) or "-"


def _cell(value: str) -> str:
    """Spreadsheets run a cell that starts like a formula; an apostrophe makes it text."""
    return "'" + value if value.startswith(_SPREADSHEET_FORMULA) else value


# The XML after sepaxml


def _namespace(element: ET.Element) -> str:
    return element.tag[1:].partition("}")[0] if element.tag.startswith("{") else ""


def _deterministic(
    document: ET.Element, namespace: str, *, run_id: str, created_at: datetime, sepa: bool
) -> None:
    """Replace sepaxml's random ids and wall-clock time with ones derived from the run."""
    ns = {"p": namespace}
    header = _find(document, "p:CstmrCdtTrfInitn/p:GrpHdr", ns)
    _find(header, "p:MsgId", ns).text = message_id(run_id)
    _find(header, "p:CreDtTm", ns).text = created_at.replace(microsecond=0).isoformat()
    for block in document.iterfind("p:CstmrCdtTrfInitn/p:PmtInf", ns):
        _find(block, "p:PmtInfId", ns).text = payment_information_id(run_id)
        # One debit per merchant on the treasury's statement, to match the merchants' statements.
        _find(block, "p:BtchBookg", ns).text = "false"
        if not sepa:
            _find(block, "p:ChrgBr", ns).text = "SHAR"


def _exact_amounts(
    document: ET.Element, namespace: str, amounts: dict[str, int], minor_units: int
) -> None:
    """Write every amount and control sum from the integers (sepaxml assumes 2 decimals)."""
    ns = {"p": namespace}
    initiation = _find(document, "p:CstmrCdtTrfInitn", ns)
    grand_total = 0
    for block in initiation.iterfind("p:PmtInf", ns):
        total = 0
        for transaction in block.iterfind("p:CdtTrfTxInf", ns):
            amount = amounts[_required_text(_find(transaction, "p:PmtId/p:EndToEndId", ns))]
            _find(transaction, "p:Amt/p:InstdAmt", ns).text = format_amount(amount, minor_units)
            total += amount
        _find(block, "p:CtrlSum", ns).text = format_amount(total, minor_units)
        grand_total += total
    _find(initiation, "p:GrpHdr/p:CtrlSum", ns).text = format_amount(grand_total, minor_units)


def _debtor_agent_not_provided(document: ET.Element, namespace: str) -> None:
    """Without the treasury's BIC, the debtor agent says so, as the EPC guidelines ask."""
    ns = {"p": namespace}
    for agent in document.iterfind("p:CstmrCdtTrfInitn/p:PmtInf/p:DbtrAgt/p:FinInstnId", ns):
        if len(agent) == 0:
            other = ET.SubElement(agent, f"{{{namespace}}}Othr")
            ET.SubElement(other, f"{{{namespace}}}Id").text = "NOTPROVIDED"


def _find(element: ET.Element, path: str, ns: dict[str, str]) -> ET.Element:
    found = element.find(path, ns)
    if found is None:
        raise PaymentFileError(f"the pain.001 has no {path.replace('p:', '')}")
    return found


def _required_text(element: ET.Element | None) -> str:
    if element is None or element.text is None:
        raise PaymentFileError("an element the file needs is missing or empty")
    return element.text


def _text_of(element: ET.Element | None, tag: str, ns: dict[str, str]) -> str:
    return _required_text(None if element is None else element.find(f"p:{tag}", ns))


def _check_totals(
    element: ET.Element | None, ns: dict[str, str], amounts: list[Decimal], where: str
) -> None:
    if element is None:
        raise PaymentFileError(f"the {where} is missing")
    count = int(_text_of(element, "NbOfTxs", ns))
    if count != len(amounts):
        raise PaymentFileError(f"{where}: NbOfTxs {count}, but {len(amounts)} transactions")
    control = element.find("p:CtrlSum", ns)
    if control is None:
        raise PaymentFileError(f"{where}: no CtrlSum")
    expected = sum(amounts, Decimal(0))
    if Decimal(_required_text(control)) != expected:
        raise PaymentFileError(
            f"{where}: CtrlSum {_required_text(control)}, but the amounts add up to {expected}"
        )


@cache
def _schema(version: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(pain001_schema_path(version))
