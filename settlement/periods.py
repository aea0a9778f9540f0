"""Settlement periods: business dates from the alliance's timezone and daily cut-off.

Period D ends at the cut-off on day D in the alliance's timezone; a cut-off of 00:00 means
midnight at the end of D. It starts where the previous run ended (periods are contiguous, and an
ad-hoc intraday run splits a day in two). An instant belongs to business date D when it lies in
[end(D - 1), end(D)).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MIDNIGHT = time(0, 0)
ONE_MICROSECOND = timedelta(microseconds=1)


def period_end(day: date, timezone: str, cutoff: time) -> datetime:
    """The instant (UTC) at which business date `day` closes."""
    closing_day = day + timedelta(days=1) if cutoff == MIDNIGHT else day
    local = datetime.combine(closing_day, cutoff, tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC)


def business_date(instant: datetime, timezone: str, cutoff: time) -> date:
    """The business date an instant belongs to."""
    assert instant.tzinfo is not None, "instants are timezone-aware"
    local = instant.astimezone(ZoneInfo(timezone))
    if cutoff == MIDNIGHT or local.timetz().replace(tzinfo=None) < cutoff:
        return local.date()
    return local.date() + timedelta(days=1)


def closing_date(end: datetime, timezone: str, cutoff: time) -> date:
    """The business date a period ending at `end` (exclusive) closes: that of its last instant."""
    return business_date(end - ONE_MICROSECOND, timezone, cutoff)


def finished_dates(*, since: datetime, now: datetime, timezone: str, cutoff: time) -> list[date]:
    """Business dates whose end is after `since` and not after `now`, oldest first."""
    dates: list[date] = []
    day = business_date(since, timezone, cutoff)
    while period_end(day, timezone, cutoff) <= since:
        day += timedelta(days=1)
    while period_end(day, timezone, cutoff) <= now:
        dates.append(day)
        day += timedelta(days=1)
    return dates
