"""When to try a call again, and how long to wait first. Pure: the clients do the sleeping.

The schedule (defaults in `_constants.py`). A logical call is attempted at most
`1 + max_retries` = 4 times, with the same idempotency key and a fresh signature each time.
After attempt *n* fails with a connection error, a timeout, a 5xx or a 429, the client waits

    Retry-After, when the response has one of at most `retry_after_s_max` (60 s)
    min(initial_delay_s × 2^(n−1), max_delay_s) × (1 − jitter × u)   otherwise

with u drawn from [0, 1): 0.5, 1 and 2 s, each shortened by up to a quarter. A `Retry-After`
longer than the cap is not waited out: the error goes to the caller at once. Any other status is
final on the first attempt: a 4xx will not change by asking again.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass

from sdk._constants import (
    MAX_RETRIES,
    RETRY_AFTER_S_MAX,
    RETRY_DELAY_S_INITIAL,
    RETRY_DELAY_S_MAX,
    RETRY_JITTER,
)


def is_retryable_status(status: int) -> bool:
    """5xx and 429: the exchange (or a proxy) may answer differently in a moment."""
    return status == 429 or 500 <= status <= 599


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times, and after how long, a failed attempt is tried again (see module doc)."""

    max_retries: int = MAX_RETRIES
    initial_delay_s: float = RETRY_DELAY_S_INITIAL
    max_delay_s: float = RETRY_DELAY_S_MAX
    jitter: float = RETRY_JITTER
    retry_after_s_max: float = RETRY_AFTER_S_MAX

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")
        if self.initial_delay_s < 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("need 0 <= initial_delay_s <= max_delay_s")

    def backoff_s(self, retry: int, random: Callable[[], float]) -> float:
        """The wait before retry number `retry` (1 is the first retry) when no `Retry-After`
        applies: exponential, capped, shortened by up to `jitter` at random."""
        base = min(self.initial_delay_s * 2.0 ** (retry - 1), self.max_delay_s)
        fraction = min(max(random(), 0.0), 1.0)
        return base * (1 - self.jitter * fraction)

    def delay_s(
        self,
        *,
        retry: int,
        status: int | None,
        retry_after: str | None,
        now: float,
        random: Callable[[], float],
    ) -> float | None:
        """How long to wait before retry number `retry`, or None to stop and report.

        `status` is None when the attempt got no response (connection error, timeout);
        `retry_after` is the response's `Retry-After` header, if any; `now` is the Unix time,
        for a `Retry-After` given as an HTTP date.
        """
        if retry > self.max_retries:
            return None
        if status is not None and not is_retryable_status(status):
            return None
        asked_s = None if retry_after is None else parse_retry_after(retry_after, now=now)
        if asked_s is None:
            return self.backoff_s(retry, random)
        return asked_s if asked_s <= self.retry_after_s_max else None


def parse_retry_after(value: str, *, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an
    HTTP date. None when it is neither (the backoff applies instead)."""
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means "-0000"
        return None
    wait = when.timestamp() - now
    return max(0.0, math.ceil(wait)) if math.isfinite(wait) else None
