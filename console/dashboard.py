"""What the dashboard shows, computed so that it stays fast on a ledger of millions of rows.

Per-day totals (issued, redeemed, breakage, cross-merchant flow) are read from
`console_daily_totals` for days that are closed (ended DAY_CLOSED_AFTER_S ago: no transaction can
still commit into them) and computed once for a closed day that is not cached yet; only the open
days (today, and yesterday just after midnight) are summed live, through the (created_at) index.
Outstanding liability is summed live from the lots with points left; exposure against limit
uses exchange.exposure.measure's definition, computed for all merchants in two grouped scans.
The whole result is cached in the process for DASHBOARD_CACHE_S.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from console.limits import DASHBOARD_CACHE_S, DASHBOARD_DAYS, DAY_CLOSED_AFTER_S
from console.repository import read_only
from core.database import Database
from exchange.rounding import exposure_value
from merchants import repository as merchant_repository
from merchants.models import ALLIANCE_POINT, AllianceSettings

Totals = dict[tuple[date, str, str, str], int]
"""(day, metric, merchant, counterparty) -> amount."""


@dataclass(frozen=True, slots=True)
class MerchantExposure:
    merchant_id: str
    name: str
    status: str
    outstanding_points: int
    outstanding_value: int
    net_payable: int
    exposure: int
    limit: int

    @property
    def used_percent(self) -> int:
        return 0 if self.limit <= 0 else min(999, self.exposure * 100 // self.limit)


@dataclass(slots=True)
class Dashboard:
    settings: AllianceSettings
    days: list[date]
    names: dict[str, str]
    issued: dict[date, int] = field(default_factory=dict)
    redeemed: dict[date, int] = field(default_factory=dict)
    breakage_by_day: dict[date, dict[str, int]] = field(default_factory=dict)
    breakage_by_issuer: dict[str, int] = field(default_factory=dict)
    flow: dict[tuple[str, str], int] = field(default_factory=dict)
    outstanding: dict[str, int] = field(default_factory=dict)
    expired_unposted: int = 0
    exposures: list[MerchantExposure] = field(default_factory=list)
    pending_adjustments: int = 0
    cached_days: int = 0
    computed_at: datetime | None = None

    @property
    def outstanding_points(self) -> int:
        return sum(self.outstanding.values())

    def outstanding_value(self, issuer: str) -> int:
        return exposure_value(self.outstanding[issuer], self.settings.point_value)


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    return start, end


def is_closed(day: date, timezone: str, now: datetime) -> bool:
    return day_bounds(day, timezone)[1] + timedelta(seconds=DAY_CLOSED_AFTER_S) <= now


async def _sum_days(
    conn: asyncpg.Connection, start: datetime, end: datetime, timezone: str
) -> Totals:
    """Every metric per (local) day over [start, end)."""
    totals: Totals = {}
    rows = await conn.fetch(
        """SELECT (t.created_at AT TIME ZONE $3)::date AS day, t.kind, t.merchant_id,
                  sum(t.points)::bigint AS amount
           FROM transactions t
           WHERE t.created_at >= $1 AND t.created_at < $2 AND t.currency = 'AP'
             AND t.kind IN ('issuance', 'redemption')
           GROUP BY 1, 2, 3""",
        start,
        end,
        timezone,
    )
    for row in rows:
        metric = "issued" if row["kind"] == "issuance" else "redeemed"
        totals[(row["day"], metric, row["merchant_id"], "")] = row["amount"]
    rows = await conn.fetch(
        """SELECT (t.created_at AT TIME ZONE $3)::date AS day, substr(p.account, 8) AS issuer,
                  sum(p.amount)::bigint AS amount
           FROM transactions t JOIN postings p
             ON p.member_id = t.member_id AND p.transaction_id = t.transaction_id
           WHERE t.created_at >= $1 AND t.created_at < $2 AND t.kind = 'expiry'
             AND p.currency = 'AP' AND p.account LIKE 'issuer:%'
           GROUP BY 1, 2""",
        start,
        end,
        timezone,
    )
    for row in rows:
        totals[(row["day"], "breakage", row["issuer"], "")] = row["amount"]
    rows = await conn.fetch(
        """SELECT (t.created_at AT TIME ZONE $3)::date AS day, o.debtor_id, o.creditor_id,
                  sum(o.gross_value)::bigint AS amount
           FROM transactions t JOIN obligations o
             ON o.member_id = t.member_id AND o.transaction_id = t.transaction_id
           WHERE t.created_at >= $1 AND t.created_at < $2
             AND t.kind IN ('redemption', 'reversal')
           GROUP BY 1, 2, 3""",
        start,
        end,
        timezone,
    )
    for row in rows:
        totals[(row["day"], "flow", row["debtor_id"], row["creditor_id"])] = row["amount"]
    return totals


async def daily_totals(
    conn: asyncpg.Connection, days: list[date], timezone: str, now: datetime
) -> tuple[Totals, int]:
    """Totals for `days` (ascending): closed days from the cache (filling it), open days live."""
    closed_rows = await conn.fetch(
        "SELECT day FROM console_closed_days WHERE timezone = $1 AND day = ANY($2::date[])",
        timezone,
        days,
    )
    cached = {row["day"] for row in closed_rows}
    totals: Totals = {}
    if cached:
        rows = await conn.fetch(
            """SELECT day, metric, merchant_id, counterparty_id, amount FROM console_daily_totals
               WHERE timezone = $1 AND day = ANY($2::date[])""",
            timezone,
            sorted(cached),
        )
        for row in rows:
            key = (row["day"], row["metric"], row["merchant_id"], row["counterparty_id"])
            totals[key] = row["amount"]
    missing = [day for day in days if day not in cached]
    if missing:
        start = day_bounds(missing[0], timezone)[0]
        end = day_bounds(missing[-1], timezone)[1]
        fresh = await _sum_days(conn, start, end, timezone)
        totals.update({key: amount for key, amount in fresh.items() if key[0] in set(missing)})
        to_close = [day for day in missing if is_closed(day, timezone, now)]
        if to_close:
            await _cache(conn, fresh, to_close, timezone)
    return totals, len(cached)


async def _cache(conn: asyncpg.Connection, fresh: Totals, days: list[date], timezone: str) -> None:
    closing = set(days)
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO console_daily_totals
                   (timezone, day, metric, merchant_id, counterparty_id, amount)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
            [(timezone, *key, amount) for key, amount in fresh.items() if key[0] in closing],
        )
        await conn.executemany(
            """INSERT INTO console_closed_days (timezone, day) VALUES ($1, $2)
               ON CONFLICT DO NOTHING""",
            [(timezone, day) for day in days],
        )


async def compute(db: Database, now: datetime) -> Dashboard:
    async with db.connection() as conn:
        await read_only(conn)
        settings = await merchant_repository.settings_at(conn, now)
        if settings is None:
            raise LookupError("the alliance has no settings yet")
        today = now.astimezone(ZoneInfo(settings.timezone)).date()
        days = [today - timedelta(days=offset) for offset in range(DASHBOARD_DAYS - 1, -1, -1)]
        merchants = await merchant_repository.list_merchants(conn)
        board = Dashboard(
            settings=settings, days=days, names={m.merchant_id: m.name for m in merchants}
        )
        totals, board.cached_days = await daily_totals(conn, days, settings.timezone, now)
        breakage_by_day: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        breakage_by_issuer: dict[str, int] = defaultdict(int)
        flow: dict[tuple[str, str], int] = defaultdict(int)
        issued: dict[date, int] = defaultdict(int)
        redeemed: dict[date, int] = defaultdict(int)
        for (day, metric, party, counterparty), amount in totals.items():
            if metric == "issued":
                issued[day] += amount
            elif metric == "redeemed":
                redeemed[day] += amount
            elif metric == "breakage":
                breakage_by_day[day][party] += amount
                breakage_by_issuer[party] += amount
            else:
                flow[(party, counterparty)] += amount
        board.issued, board.redeemed = dict(issued), dict(redeemed)
        board.breakage_by_day = {day: dict(v) for day, v in breakage_by_day.items()}
        board.breakage_by_issuer = dict(breakage_by_issuer)
        board.flow = {pair: value for pair, value in flow.items() if value}
        rows = await conn.fetch(
            """SELECT issuer_id, sum(remaining_points)::bigint AS points FROM lots
               WHERE currency = $1 AND remaining_points > 0
                 AND (expires_at IS NULL OR expires_at > $2)
               GROUP BY issuer_id""",
            ALLIANCE_POINT,
            now,
        )
        board.outstanding = {row["issuer_id"]: row["points"] for row in rows}
        board.expired_unposted = await conn.fetchval(
            """SELECT coalesce(sum(remaining_points), 0)::bigint FROM lots
               WHERE remaining_points > 0 AND expires_at IS NOT NULL AND expires_at <= $1
                 AND currency = $2""",
            now,
            ALLIANCE_POINT,
        )
        # exchange.exposure.measure's definition, for every merchant in two grouped scans
        # instead of two scans per merchant (tests/console/test_dashboard.py holds them equal).
        rows = await conn.fetch(
            """SELECT merchant_id, sum(owed)::bigint AS owed, sum(owed_to)::bigint AS owed_to
               FROM (SELECT debtor_id AS merchant_id, sum(gross_value) AS owed, 0 AS owed_to
                     FROM obligations GROUP BY debtor_id
                     UNION ALL
                     SELECT creditor_id, 0, sum(gross_value - fee) FROM obligations
                     GROUP BY creditor_id) AS sides
               GROUP BY merchant_id"""
        )
        payables = {row["merchant_id"]: max(row["owed"] - row["owed_to"], 0) for row in rows}
        for merchant in merchants:
            points = board.outstanding.get(merchant.merchant_id, 0)
            value = exposure_value(points, settings.point_value)
            net_payable = payables.get(merchant.merchant_id, 0)
            board.exposures.append(
                MerchantExposure(
                    merchant_id=merchant.merchant_id,
                    name=merchant.name,
                    status=merchant.status.value,
                    outstanding_points=points,
                    outstanding_value=value,
                    net_payable=net_payable,
                    exposure=value + net_payable,
                    limit=merchant.liability_limit,
                )
            )
        board.pending_adjustments = await conn.fetchval(
            "SELECT count(*) FROM adjustments WHERE status = 'pending'"
        )
    board.computed_at = now
    return board


class DashboardCache:
    """The last dashboard, reused for DASHBOARD_CACHE_S (monotonic time, per process)."""

    def __init__(self) -> None:
        self._value: Dashboard | None = None
        self._at = 0.0

    async def get(self, db: Database, now: datetime, *, refresh: bool = False) -> Dashboard:
        if refresh or self._value is None or time.monotonic() - self._at > DASHBOARD_CACHE_S:
            self._value = await compute(db, now)
            self._at = time.monotonic()
        return self._value

    def clear(self) -> None:
        self._value = None
