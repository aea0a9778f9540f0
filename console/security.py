"""Passwords (Argon2id) and TOTP codes (RFC 6238). Pure functions: no database, no framework."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from datetime import datetime

import pyotp
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from console.errors import InvalidInput
from console.limits import PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN, TOTP_STEPS_ACCEPTED

_HASHER = PasswordHash((Argon2Hasher(),))
# Verified against when the username does not exist, so that an unknown user costs the same time
# as a wrong password and the response time does not reveal which usernames exist.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

TOTP_ISSUER = "Alliance console"


def check_password_rules(password: str) -> None:
    if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
        raise InvalidInput(
            f"a password is {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters",
            field="password",
        )


def hash_password(password: str) -> str:
    check_password_rules(password)
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Whether `password` matches, and a new hash when the stored one uses outdated parameters.

    `password_hash=None` (no such user) still spends one Argon2 verification.
    """
    if len(password) > PASSWORD_LENGTH_MAX:
        return False, None
    if password_hash is None:
        _HASHER.verify(password, _DUMMY_HASH)
        return False, None
    return _HASHER.verify_and_update(password, password_hash)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app reads (typed in, or shown as a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def totp_code(secret: str, at: datetime) -> str:
    """The code for `at` (tests and the CLI's self-check use it)."""
    return pyotp.TOTP(secret).at(at)


def match_totp(secret: str, code: str, at: datetime, *, after_step: int | None) -> int | None:
    """The time step `code` belongs to, if it is valid near `at` and later than `after_step`.

    Refusing steps at or before the last accepted one makes every code single-use: a code seen
    over a shoulder or replayed from a log cannot sign in again.
    """
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(at)
    for offset in range(-TOTP_STEPS_ACCEPTED, TOTP_STEPS_ACCEPTED + 1):
        step = now_step + offset
        if after_step is not None and step <= after_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """Sessions are stored under this hash, so the table alone opens no session."""
    return hashlib.sha256(token.encode()).digest()


def new_csrf_token() -> str:
    return secrets.token_hex(32)


def client_address_key(host: str | None) -> str:
    """The key a client's sign-in failures are counted under.

    An IPv4 address as is; an IPv6 address by its /64, since one subscriber usually holds a whole
    /64 and could otherwise take a new address for every guess (an IPv4-mapped IPv6 address is the
    IPv4 address). Anything that is not an address (a test client, a Unix socket) is kept as
    text, at most 64 characters.
    """
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
