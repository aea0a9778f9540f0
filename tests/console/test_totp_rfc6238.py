"""The console's TOTP against RFC 6238 Appendix B (the SHA-1 rows).

What is tested, exactly:

- The RFC's vectors are 8-digit codes; the console issues and accepts 6-digit codes (pyotp's
  `TOTP(secret)` defaults: HMAC-SHA-1, 30-second steps from the Unix epoch, 6 digits, which is
  what authenticator apps assume when the otpauth:// URI names no other).
- RFC 4226's truncation takes a 31-bit number and keeps it modulo 10^digits, so a 6-digit code is
  the last six digits of the 8-digit one. The console's own functions (`totp_code`, which the
  CLI's self-check and the tests use, and `match_totp`, which every sign-in calls) are therefore
  checked against the RFC's vectors directly, at the digits they really use.
- The same pyotp class, with digits=8 and the console's other parameters, reproduces the 8-digit
  vectors as printed, so the algorithm under the console's 6 digits is RFC 6238's.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from console.limits import TOTP_STEPS_ACCEPTED
from console.security import match_totp, totp_code, totp_uri

RFC_SECRET = b"12345678901234567890"  # RFC 6238 Appendix B, SHA-1 seed (20 ASCII bytes)
RFC_SECRET_B32 = base64.b32encode(RFC_SECRET).decode()
STEP_S = 30

# (Unix time, 8-digit TOTP) from RFC 6238 Appendix B, mode SHA1.
RFC6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


def _at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


@pytest.mark.parametrize(("unix", "expected"), RFC6238_SHA1)
def test_the_algorithm_under_the_console_gives_the_rfc_8_digit_vectors(unix: int, expected: str):
    totp = pyotp.TOTP(RFC_SECRET_B32, digits=8, digest=hashlib.sha1, interval=STEP_S)
    assert totp.at(unix) == expected
    assert totp.at(_at(unix)) == expected


@pytest.mark.parametrize(("unix", "expected"), RFC6238_SHA1)
def test_the_consoles_code_is_the_rfc_vector_at_six_digits(unix: int, expected: str):
    assert totp_code(RFC_SECRET_B32, _at(unix)) == expected[-6:]


@pytest.mark.parametrize(("unix", "expected"), RFC6238_SHA1)
def test_the_consoles_verifier_accepts_the_rfc_vector_in_its_own_step(unix: int, expected: str):
    step = unix // STEP_S
    assert match_totp(RFC_SECRET_B32, expected[-6:], _at(unix), after_step=None) == step
    # Typed with a space in the middle, as apps show it: the same.
    spaced = f"{expected[-6:-3]} {expected[-3:]}"
    assert match_totp(RFC_SECRET_B32, spaced, _at(unix), after_step=None) == step
    # Single use: once its step is the last accepted one, the same code is refused.
    assert match_totp(RFC_SECRET_B32, expected[-6:], _at(unix), after_step=step) is None


@pytest.mark.parametrize(("unix", "expected"), RFC6238_SHA1)
def test_the_consoles_verifier_refuses_the_rfc_vector_two_steps_away(unix: int, expected: str):
    """Checked at 60 s (and 90 s) before and after the vector's time: refused there; at 30 s
    either side (TOTP_STEPS_ACCEPTED = 1 step of drift) and at the time itself, accepted."""
    assert TOTP_STEPS_ACCEPTED == 1
    code, step = expected[-6:], unix // STEP_S
    for steps_away in (-3, -2, 2, 3):
        at = unix + steps_away * STEP_S
        if at < 0:
            continue  # 59 s has no step two before it
        # The steps the verifier looks at from there: none has the same six digits by chance
        # (so the refusal below is the window's, not a lucky mismatch).
        looked_at = range(at // STEP_S - 1, at // STEP_S + 2)
        assert step not in looked_at
        assert code not in {pyotp.TOTP(RFC_SECRET_B32).generate_otp(s) for s in looked_at}
        assert match_totp(RFC_SECRET_B32, code, _at(at), after_step=None) is None, steps_away
    for steps_away in (-1, 0, 1):
        if (unix + steps_away * STEP_S) // STEP_S < 1:
            continue  # the window around 1970's first step would reach step -1 (pyotp refuses)
        at = _at(unix + steps_away * STEP_S)
        assert match_totp(RFC_SECRET_B32, code, at, after_step=None) == step, steps_away


def test_the_consoles_verifier_refuses_the_8_digit_form():
    """The console's codes are 6 digits: the RFC's 8-digit string is not accepted as is."""
    unix, expected = RFC6238_SHA1[0]
    assert match_totp(RFC_SECRET_B32, expected, _at(unix), after_step=None) is None


def test_the_provisioning_uri_names_no_parameters_other_than_the_rfc_defaults():
    """Authenticator apps read the otpauth:// URI: absent parameters mean SHA1, 6 digits, 30 s,
    the ones the tests above check."""
    query = parse_qs(urlparse(totp_uri(RFC_SECRET_B32, "alice")).query)
    assert query["secret"] == [RFC_SECRET_B32]
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
