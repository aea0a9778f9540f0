"""The retry schedule of sdk/_retry.py, value by value: what its docstring says is what it does."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from sdk import RetryPolicy
from sdk._retry import is_retryable_status, parse_retry_after

NOW = 1_780_000_000.0


def delay(policy: RetryPolicy, retry: int, status: int | None, retry_after=None, u=0.0):
    return policy.delay_s(
        retry=retry, status=status, retry_after=retry_after, now=NOW, random=lambda: u
    )


@pytest.mark.parametrize(
    ("retry", "u", "expected"),
    [
        (1, 0.0, 0.5),
        (2, 0.0, 1.0),
        (3, 0.0, 2.0),
        (1, 0.5, 0.4375),
        (3, 0.999, 2.0 * (1 - 0.25 * 0.999)),
    ],
)
def test_backoff_doubles_from_half_a_second_less_up_to_a_quarter_of_jitter(retry, u, expected):
    assert delay(RetryPolicy(), retry, None, u=u) == pytest.approx(expected)


def test_backoff_is_capped():
    policy = RetryPolicy(max_retries=10)
    assert [delay(policy, n, 503) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_three_retries_then_stop():
    policy = RetryPolicy()
    assert delay(policy, 3, None) is not None
    assert delay(policy, 4, None) is None
    assert delay(RetryPolicy(max_retries=0), 1, None) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_and_429_are_retried(status):
    assert is_retryable_status(status)
    assert delay(RetryPolicy(), 1, status) == 0.5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 422, 200, 201])
def test_other_statuses_are_final(status):
    assert not is_retryable_status(status)
    assert delay(RetryPolicy(), 1, status) is None


def test_retry_after_in_seconds_is_honoured_exactly():
    assert delay(RetryPolicy(), 1, 429, retry_after="7", u=0.9) == 7.0
    assert delay(RetryPolicy(), 1, 503, retry_after="0") == 0.0


def test_retry_after_as_an_http_date():
    when = datetime.fromtimestamp(NOW + 12, UTC)
    assert delay(RetryPolicy(), 1, 429, retry_after=format_datetime(when, usegmt=True)) == 12.0
    past = datetime.fromtimestamp(NOW - 100, UTC)
    assert parse_retry_after(format_datetime(past, usegmt=True), now=NOW) == 0.0


def test_retry_after_beyond_the_cap_stops_the_retries():
    assert delay(RetryPolicy(), 1, 429, retry_after="60") == 60.0
    assert delay(RetryPolicy(), 1, 429, retry_after="61") is None


def test_unreadable_retry_after_falls_back_to_the_backoff():
    assert delay(RetryPolicy(), 2, 429, retry_after="soon") == 1.0
    assert parse_retry_after("-5", now=NOW) is None


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"jitter": 1.5}, "jitter"),
        ({"initial_delay_s": 2.0, "max_delay_s": 1.0}, "initial_delay_s"),
    ],
)
def test_a_nonsensical_policy_is_refused(options, reason):
    with pytest.raises(ValueError, match=reason):
        RetryPolicy(**options)
