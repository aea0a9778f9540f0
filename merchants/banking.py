"""Bank account details settlement pays merchants to: IBAN (ISO 13616) and BIC (ISO 9362) checks.

Pure functions, no I/O. Each `normalize_*` returns the electronic form (upper case, no spaces) or
raises `InvalidField` naming the field, with a message an operator can act on. The checks catch
typos and pasted garbage; they cannot prove that an account exists or belongs to the merchant.
"""

from __future__ import annotations

import re
import unicodedata

from merchants.errors import InvalidField

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
"""Total IBAN length per country, from the SWIFT IBAN Registry (ISO 13616). A country that joins
the registry is one line here; until then its IBANs are refused as from an unknown country."""

ACCOUNT_NAME_LENGTH_MAX = 70
"""The account holder's name as the bank knows it. ISO 20022 allows 140 characters, but the SEPA
rulebook and most banks' import formats keep 70."""

_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
# ISO 9362: institution (4 letters), country (2 letters), location (2), optional branch (3).
# Location's first character is never 0 or 1 (test and passive BICs), its second never O: the
# pattern of the pain.001.001.03 schema, the strictest of those a payment file must pass.
_BIC_SHAPE = re.compile(r"[A-Z]{4}[A-Z]{2}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?")
_SPACES = re.compile(r"\s+")


def normalize_iban(value: str) -> str:
    """The IBAN in electronic form ("DE89370400440532013000"); spaces and case are forgiven."""
    iban = _SPACES.sub("", value).upper()
    if not iban:
        raise InvalidField("the IBAN is empty", field="iban")
    if not iban.isascii() or not iban.isalnum():
        raise InvalidField("an IBAN has only letters A-Z and digits 0-9", field="iban")
    country = iban[:2]
    length = IBAN_LENGTHS.get(country)
    if not country.isalpha() or length is None:
        raise InvalidField(
            f"an IBAN starts with its country code; {country!r} is not a country that uses IBANs",
            field="iban",
        )
    if len(iban) != length:
        raise InvalidField(
            f"a {country} IBAN has {length} characters, this one has {len(iban)}", field="iban"
        )
    if not _IBAN_SHAPE.fullmatch(iban):
        raise InvalidField(
            "an IBAN is a country code, 2 check digits, then letters and digits", field="iban"
        )
    if _mod97(iban[4:] + iban[:4]) != 1:
        raise InvalidField(
            "the IBAN's check digits do not match (ISO 13616 mod 97): is there a typo?",
            field="iban",
        )
    return iban


def is_valid_iban(value: str) -> bool:
    try:
        normalize_iban(value)
    except InvalidField:
        return False
    return True


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits that make `country` + digits + `bban` a valid IBAN."""
    return f"{98 - _mod97(bban.upper() + country.upper() + '00'):02d}"


def format_iban(iban: str) -> str:
    """Print form, in groups of four: "DE89 3704 0044 0532 0130 00"."""
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def normalize_bic(value: str) -> str:
    """The BIC in upper case without spaces; 8 characters, or 11 with a branch code."""
    bic = _SPACES.sub("", value).upper()
    if len(bic) not in (8, 11):
        raise InvalidField(
            f"a BIC has 8 or 11 characters (e.g. COBADEFFXXX), this one has {len(bic)}",
            field="bic",
        )
    if not bic.isascii() or not _BIC_SHAPE.fullmatch(bic):
        raise InvalidField(
            "a BIC is 4 letters (bank), 2 letters (country), 2 letters or digits (location) and "
            "an optional 3-character branch, e.g. COBADEFFXXX",
            field="bic",
        )
    return bic


def is_valid_bic(value: str) -> bool:
    try:
        normalize_bic(value)
    except InvalidField:
        return False
    return True


def check_account_name(value: str) -> str:
    """The account holder's name, trimmed; 1 to 70 printable characters."""
    name = _SPACES.sub(" ", value).strip()
    if not 1 <= len(name) <= ACCOUNT_NAME_LENGTH_MAX:
        raise InvalidField(
            f"the account holder's name is 1 to {ACCOUNT_NAME_LENGTH_MAX} characters",
            field="account_name",
        )
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise InvalidField(
            "the account holder's name has a control or unassigned character",
            field="account_name",
        )
    return name


def _mod97(text: str) -> int:
    """ISO 7064 MOD 97-10 over letters as 10..35 and digits as themselves."""
    return int("".join(str(int(char, 36)) for char in text)) % 97
