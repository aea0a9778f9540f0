"""Merchants' bank accounts: IBAN/BIC checks, the service, and `alliance merchant set-bank`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner, Result

from cli.merchant import merchant_app
from core.clock import FixedClock
from core.config import get_settings
from core.database import Database
from exchange import demo
from exchange.demo import DEMO_BANK_ACCOUNTS, DEMO_MERCHANTS
from merchants import banking, service
from merchants.errors import InvalidField, MerchantClosed, MerchantNotFound
from merchants.models import BankAccount
from tests.merchants.conftest import MakeMerchant, unique

# Published examples: the SWIFT IBAN Registry's and ISO 13616's own, and Wikipedia's.
GOOD_IBANS = [
    "DE89370400440532013000",
    "GB29NWBK60161331926819",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "BE68539007547034",
    "CH9300762011623852957",
    "NO9386011117947",  # the shortest, 15
    "LC55HEMM000100010012001200023015",  # 32
    "RU0304452522540817810538091310419",  # the longest, 33
    "MT84MALT011000012345MTLCAST001S",
    "SA0380000000608010167519",
    "AL47212110090000000235698741",
    "IT60X0542811101000000123456",
    "BR1800360305000010009795493C1",
    "QA58DOHB00001234567890ABCDEFG",
]

BAD_IBANS = [
    ("GB82TEST12345698765432", "check digits"),  # Wikipedia's invalid example
    ("DE89370400440532013001", "check digits"),  # one digit changed
    ("DE89370400440523013000", "check digits"),  # two digits swapped
    ("DE8937040044053201300", "has 22 characters, this one has 21"),
    ("DE893704004405320130000", "has 22 characters, this one has 23"),
    ("US64SVBKUS6S3300958879", "not a country that uses IBANs"),
    ("CN12345678901234567890", "not a country that uses IBANs"),
    ("8937040044053201300012", "not a country that uses IBANs"),
    ("DE89-3704-0044-0532-0130-00", "only letters A-Z and digits"),
    ("DE89370400440532013Ö00", "only letters A-Z and digits"),
    ("NLAAABNA0417164300", "country code, 2 check digits"),
    ("", "empty"),
    ("   ", "empty"),
]


@pytest.mark.parametrize("iban", GOOD_IBANS)
def test_published_example_ibans_are_valid(iban: str) -> None:
    assert banking.normalize_iban(iban) == iban
    assert banking.is_valid_iban(iban)


def test_an_iban_may_be_typed_in_groups_and_lower_case() -> None:
    assert banking.normalize_iban(" de89 3704 0044 0532 0130 00 ") == "DE89370400440532013000"
    assert banking.format_iban("DE89370400440532013000") == "DE89 3704 0044 0532 0130 00"


@pytest.mark.parametrize(("iban", "reason"), BAD_IBANS)
def test_bad_ibans_are_refused_with_the_reason(iban: str, reason: str) -> None:
    with pytest.raises(InvalidField, match=reason) as refused:
        banking.normalize_iban(iban)
    assert refused.value.extra == {"field": "iban"}
    assert not banking.is_valid_iban(iban)


def test_check_digits_are_those_of_the_published_examples() -> None:
    assert banking.iban_check_digits("DE", "370400440532013000") == "89"
    assert banking.iban_check_digits("GB", "WEST12345698765432") == "82"
    assert banking.iban_check_digits("NL", "ABNA0417164300") == "91"


@pytest.mark.parametrize(("country", "length"), sorted(banking.IBAN_LENGTHS.items()))
def test_every_registry_country_accepts_its_length_and_no_other(country: str, length: int) -> None:
    bban = ("1234567890" * 4)[: length - 4]
    iban = country + banking.iban_check_digits(country, bban) + bban
    assert banking.normalize_iban(iban) == iban
    longer = country + banking.iban_check_digits(country, bban + "1") + bban + "1"
    assert not banking.is_valid_iban(longer)


@given(position=st.integers(min_value=4, max_value=21), digit=st.sampled_from("0123456789"))
def test_any_single_digit_typo_is_caught(position: int, digit: str) -> None:
    iban = "DE89370400440532013000"
    typo = iban[:position] + digit + iban[position + 1 :]
    assert banking.is_valid_iban(typo) == (typo == iban)


@given(position=st.integers(min_value=4, max_value=20))
def test_any_swap_of_two_neighbouring_different_digits_is_caught(position: int) -> None:
    iban = "DE89370400440532013000"
    swapped = iban[:position] + iban[position + 1] + iban[position] + iban[position + 2 :]
    assert banking.is_valid_iban(swapped) == (swapped == iban)


@pytest.mark.parametrize(
    ("bic", "expected"),
    [
        ("COBADEFFXXX", "COBADEFFXXX"),
        ("COBADEFF", "COBADEFF"),
        ("NWBKGB2L", "NWBKGB2L"),
        ("DEUTDEFF500", "DEUTDEFF500"),
        ("BKCHCNBJ", "BKCHCNBJ"),  # Bank of China, Beijing
        (" icbk cnbj ", "ICBKCNBJ"),
    ],
)
def test_good_bics(bic: str, expected: str) -> None:
    assert banking.normalize_bic(bic) == expected
    assert banking.is_valid_bic(bic)


@pytest.mark.parametrize(
    ("bic", "reason"),
    [
        ("COBADEF", "8 or 11 characters"),
        ("COBADEFFX", "8 or 11 characters"),
        ("COBADEFFXXXX", "8 or 11 characters"),
        ("", "8 or 11 characters"),
        ("COBA1EFF", "2 letters \\(country\\)"),  # a digit in the country code
        ("C0BADEFF", "4 letters \\(bank\\)"),  # a zero for an O in the bank code
        ("COBADE0F", "location"),  # location starting 0: a test BIC
        ("COBADE1F", "location"),  # location starting 1: a passive participant
        ("COBADEFO", "location"),  # location ending in the letter O
        ("COBADEFF-XX", "location"),
    ],
)
def test_bad_bics_are_refused(bic: str, reason: str) -> None:
    with pytest.raises(InvalidField, match=reason) as refused:
        banking.normalize_bic(bic)
    assert refused.value.extra == {"field": "bic"}


def test_account_names_are_trimmed_and_bounded() -> None:
    assert banking.check_account_name("  Jade   Tea\tHouse  ") == "Jade Tea House"
    assert banking.check_account_name("翡翠茶馆有限公司") == "翡翠茶馆有限公司"
    assert banking.check_account_name("x" * 70) == "x" * 70
    for bad in ("", "   ", "x" * 71, "Jade\x00Tea", "Jade\u200bTea"):
        with pytest.raises(InvalidField) as refused:
            banking.check_account_name(bad)
        assert refused.value.extra == {"field": "account_name"}


async def test_the_demo_alliance_gives_its_merchants_their_accounts(
    fresh_database_url: str, tmp_path: Path
) -> None:
    db = await Database.connect(fresh_database_url, min_size=1, max_size=2)
    try:
        report = demo.DemoReport()
        start = datetime(2026, 6, 1, tzinfo=UTC)
        await demo._found_alliance(db, report, start=start, key_dir=tmp_path)
        accounts = await service.bank_accounts(db, list(report.merchants.values()))
    finally:
        await db.close()
    assert {
        key_id: (
            accounts[merchant_id].account_name,
            accounts[merchant_id].iban,
            accounts[merchant_id].bic,
        )
        for key_id, merchant_id in report.merchants.items()
    } == DEMO_BANK_ACCOUNTS


def test_the_demo_merchants_have_valid_accounts() -> None:
    assert set(DEMO_BANK_ACCOUNTS) == {key_id for key_id, _, _ in DEMO_MERCHANTS}
    for name, iban, bic in DEMO_BANK_ACCOUNTS.values():
        assert banking.check_account_name(name) == name
        assert banking.normalize_iban(iban) == iban
        assert bic is None or banking.normalize_bic(bic) == bic


# The service


async def test_set_stores_the_electronic_form_and_replaces(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    first = await service.set_bank_account(
        db,
        merchant.merchant_id,
        " Jade Tea House Ltd ",
        "de89 3704 0044 0532 0130 00",
        None,
        clock.now(),
    )
    assert first == BankAccount(
        merchant.merchant_id, "Jade Tea House Ltd", "DE89370400440532013000", None, clock.now()
    )
    later = clock.now() + timedelta(days=1)
    second = await service.set_bank_account(
        db, merchant.merchant_id, "Jade Tea", "GB29 NWBK 6016 1331 9268 19", "nwbkgb2l", later
    )
    assert (second.iban, second.bic, second.updated_at) == (
        "GB29NWBK60161331926819",
        "NWBKGB2L",
        later,
    )
    assert await service.bank_accounts(db, [merchant.merchant_id]) == {merchant.merchant_id: second}


async def test_bank_accounts_lists_only_the_merchants_that_have_one(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    with_account, without = await make_merchant(), await make_merchant()
    account = await service.set_bank_account(
        db, with_account.merchant_id, "Shop", "NL91ABNA0417164300", "ABNANL2A", clock.now()
    )
    found = await service.bank_accounts(
        db, [with_account.merchant_id, without.merchant_id, "mer_nobody"]
    )
    assert found == {with_account.merchant_id: account}
    assert await service.bank_accounts(db, []) == {}


async def test_a_bad_account_is_refused_and_changes_nothing(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    merchant = await make_merchant()
    kept = await service.set_bank_account(
        db, merchant.merchant_id, "Shop", "NL91ABNA0417164300", None, clock.now()
    )
    for name, iban, bic, field in [
        ("Shop", "NL91ABNA0417164301", None, "iban"),
        ("Shop", "NL91ABNA0417164300", "ABNANL2", "bic"),
        ("", "NL91ABNA0417164300", None, "account_name"),
    ]:
        with pytest.raises(InvalidField) as refused:
            await service.set_bank_account(db, merchant.merchant_id, name, iban, bic, clock.now())
        assert refused.value.extra == {"field": field}
    with pytest.raises(InvalidField):
        await service.set_bank_account(
            db, merchant.merchant_id, "Shop", "NL91ABNA0417164300", None, datetime(2026, 6, 2)
        )
    assert await service.bank_accounts(db, [merchant.merchant_id]) == {merchant.merchant_id: kept}


async def test_unknown_and_closed_merchants_are_refused(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    with pytest.raises(MerchantNotFound):
        await service.set_bank_account(
            db, "mer_nobody_at_all", "Shop", "NL91ABNA0417164300", None, clock.now()
        )
    suspended = await make_merchant()
    await service.suspend(db, suspended.merchant_id, clock.now())
    await service.set_bank_account(
        db, suspended.merchant_id, "Shop", "NL91ABNA0417164300", None, clock.now()
    )
    closed = await make_merchant()
    await service.close(db, closed.merchant_id, clock.now())
    with pytest.raises(MerchantClosed):
        await service.set_bank_account(
            db, closed.merchant_id, "Shop", "NL91ABNA0417164300", None, clock.now()
        )
    assert await service.bank_accounts(db, ["mer_nobody_at_all", closed.merchant_id]) == {}


# The command


@pytest.fixture
def cli_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def invoke(*args: str) -> Result:
    # The command runs asyncio.run itself, so it runs on a worker thread.
    return await asyncio.to_thread(lambda: CliRunner().invoke(merchant_app, list(args)))


def test_set_bank_help_shows_an_example() -> None:
    result = CliRunner().invoke(merchant_app, ["set-bank", "--help"])
    assert result.exit_code == 0
    assert "Example: alliance merchant set-bank" in result.output


@pytest.mark.usefixtures("cli_database")
async def test_set_bank_sets_the_account(db: Database, make_merchant: MakeMerchant) -> None:
    merchant = await make_merchant()
    result = await invoke(
        *("set-bank", merchant.merchant_id, "--name", "Jade Tea House Ltd"),
        *("--iban", "de89 3704 0044 0532 0130 00", "--bic", "cobadeffxxx"),
    )
    assert result.exit_code == 0, result.output
    assert "IBAN DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX" in result.output
    account = (await service.bank_accounts(db, [merchant.merchant_id]))[merchant.merchant_id]
    assert (account.account_name, account.iban, account.bic) == (
        "Jade Tea House Ltd",
        "DE89370400440532013000",
        "COBADEFFXXX",
    )


@pytest.mark.usefixtures("cli_database")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iban", "DE89 3704 0044 0532 0130 01"], "check digits"),
        (["--iban", "DE89 3704 0044 0532 0130"], "has 22 characters"),
        (["--iban", "NL91ABNA0417164300", "--bic", "ABNANL"], "8 or 11 characters"),
        (["--iban", "NL91ABNA0417164300", "--bic", "ABNANL0A"], "location"),
    ],
)
async def test_set_bank_refuses_bad_input_as_a_usage_error(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant, args: list[str], message: str
) -> None:
    merchant = await make_merchant()
    kept = await service.set_bank_account(
        db, merchant.merchant_id, "Shop", "GB29NWBK60161331926819", None, clock.now()
    )
    result = await invoke("set-bank", merchant.merchant_id, "--name", "Other", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "--iban" in result.output or "--bic" in result.output
    assert await service.bank_accounts(db, [merchant.merchant_id]) == {merchant.merchant_id: kept}


@pytest.mark.usefixtures("cli_database")
async def test_set_bank_refuses_an_unknown_or_closed_merchant_with_exit_1(
    db: Database, clock: FixedClock, make_merchant: MakeMerchant
) -> None:
    unknown = await invoke(
        "set-bank", unique("mer_nobody"), "--name", "Shop", "--iban", "NL91ABNA0417164300"
    )
    assert unknown.exit_code == 1
    assert "not_found" in unknown.output
    closed = await make_merchant()
    await service.close(db, closed.merchant_id, clock.now())
    refused = await invoke(
        "set-bank", closed.merchant_id, "--name", "Shop", "--iban", "NL91ABNA0417164300"
    )
    assert refused.exit_code == 1
    assert "merchant_closed" in refused.output
    assert await service.bank_accounts(db, [closed.merchant_id]) == {}
