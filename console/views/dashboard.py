"""The dashboard: starlette-admin widgets (ApexCharts, served by the app) over console.dashboard."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette_admin import (
    Breakpoints,
    CardRowWidget,
    ChartWidget,
    Col,
    ColumnWidget,
    RowWidget,
    StatWidget,
    TableWidget,
    TextWidget,
)
from starlette_admin.widgets import BaseWidget

from console.dashboard import Dashboard
from console.views.base import Page
from console.web import console, format_money, format_when


def _value(value: Any) -> Callable[[Request], Awaitable[Any]]:
    async def get(request: Request) -> Any:
        return value

    return get


def _major(minor: int, minor_units: int) -> float:
    """For chart axes only: the exact figures are in the tables and statements."""
    return float(Decimal(minor).scaleb(-minor_units))


STILL = {"animations": {"enabled": False}, "toolbar": {"show": True}}
"""Charts draw at once: a finance screen shows figures, not an animation (and screenshots agree)."""


def _percent(part: int, whole: int) -> float:
    """Exposure over limit in percent, to a tenth (display only; the table shows money exactly)."""
    return 0.0 if whole <= 0 else round(float(Decimal(part * 100) / Decimal(whole)), 1)


def _name(board: Dashboard, merchant_id: str) -> str:
    return board.names.get(merchant_id, merchant_id)


def build(board: Dashboard) -> BaseWidget:
    settings = board.settings
    units = settings.minor_units
    labels = [day.isoformat() for day in board.days]
    today = board.days[-1]
    issuers = sorted(board.outstanding, key=lambda m: -board.outstanding[m])
    liability_total = sum(board.outstanding_value(m) for m in issuers)
    breakage_total = sum(board.breakage_by_issuer.values())

    kpis = CardRowWidget(
        children=[
            StatWidget(
                title="Outstanding points (AP)",
                value_callback=_value(f"{board.outstanding_points:,}"),
                description=f"liability {format_money(liability_total, settings)}",
            ),
            StatWidget(
                title=f"Issued today ({settings.timezone})",
                value_callback=_value(f"{board.issued.get(today, 0):,}"),
                description=f"redeemed {board.redeemed.get(today, 0):,}",
            ),
            StatWidget(
                title=f"Breakage, last {len(board.days)} days",
                value_callback=_value(f"{breakage_total:,}"),
                description=f"{board.expired_unposted:,} expired, not yet written off",
                color="warning" if board.expired_unposted else "",
            ),
            StatWidget(
                title="Adjustments awaiting approval",
                value_callback=_value(str(board.pending_adjustments)),
                description="need a second operator",
                color="danger" if board.pending_adjustments else "",
            ),
        ]
    )
    flows = ChartWidget(
        title=f"Points issued and redeemed per day ({settings.timezone})",
        chart_type="bar",
        height=300,
        series_callback=_value(
            [
                {"name": "issued", "data": [board.issued.get(day, 0) for day in board.days]},
                {"name": "redeemed", "data": [board.redeemed.get(day, 0) for day in board.days]},
            ]
        ),
        options={
            "chart": STILL,
            "xaxis": {"categories": labels, "type": "category"},
            "colors": ["#206bc4", "#2fb344"],
            "dataLabels": {"enabled": False},
            "yaxis": {"title": {"text": "points"}},
        },
    )
    liability = ChartWidget(
        title="Outstanding liability by issuer",
        chart_type="bar",
        height=280,
        series_callback=_value(
            [
                {
                    "name": f"liability ({settings.currency})",
                    "data": [_major(board.outstanding_value(m), units) for m in issuers],
                }
            ]
        ),
        options={
            "chart": STILL,
            "xaxis": {"categories": [_name(board, m) for m in issuers]},
            "plotOptions": {"bar": {"horizontal": True}},
            "dataLabels": {"enabled": False},
            "colors": ["#f59f00"],
        },
    )
    breakage_issuers = sorted(board.breakage_by_issuer)
    breakage = ChartWidget(
        title="Breakage per day (expired points written off), by issuer",
        chart_type="bar",
        height=280,
        series_callback=_value(
            [
                {
                    "name": _name(board, issuer),
                    "data": [
                        board.breakage_by_day.get(day, {}).get(issuer, 0) for day in board.days
                    ],
                }
                for issuer in breakage_issuers
            ]
            or [{"name": "breakage", "data": [0 for _ in board.days]}]
        ),
        options={
            "chart": STILL | {"stacked": True},
            "xaxis": {"categories": labels},
            "dataLabels": {"enabled": False},
        },
    )
    debtors = sorted({d for d, _ in board.flow}, key=lambda m: _name(board, m))
    creditors = sorted({c for _, c in board.flow}, key=lambda m: _name(board, m))
    flow = ChartWidget(
        title=(
            f"Cross-merchant flow, last {len(board.days)} days: whose points (rows) "
            f"were redeemed where (columns), gross {settings.currency}"
        ),
        chart_type="heatmap",
        height=280,
        series_callback=_value(
            [
                {
                    "name": _name(board, debtor),
                    "data": [
                        {
                            "x": _name(board, creditor),
                            "y": _major(board.flow.get((debtor, creditor), 0), units),
                        }
                        for creditor in creditors
                    ],
                }
                for debtor in debtors
            ]
        ),
        options={
            "chart": STILL,
            "dataLabels": {"enabled": True},
            "colors": ["#206bc4"],
            "xaxis": {"labels": {"rotate": -20, "rotateAlways": True, "trim": True}},
        },
    )
    exposures = sorted(board.exposures, key=lambda e: -e.used_percent)
    exposure_chart = ChartWidget(
        title="Exposure as a share of the liability limit (%)",
        chart_type="bar",
        height=280,
        series_callback=_value(
            [
                {
                    "name": "% of limit used",
                    "data": [_percent(e.exposure, e.limit) for e in exposures],
                }
            ]
        ),
        options={
            "chart": STILL,
            "xaxis": {"categories": [e.name for e in exposures]},
            "plotOptions": {"bar": {"horizontal": True}},
            "dataLabels": {"enabled": True},
            "colors": ["#d63939"],
        },
    )
    exposure_table = TableWidget(
        title="Exposure per merchant (exact)",
        columns=[
            "merchant",
            "status",
            "outstanding points",
            "outstanding value",
            "net payable",
            "exposure",
            "limit",
            "used",
        ],
        rows_callback=_value(
            [
                [
                    e.name,
                    e.status,
                    f"{e.outstanding_points:,}",
                    format_money(e.outstanding_value, settings),
                    format_money(e.net_payable, settings),
                    format_money(e.exposure, settings),
                    format_money(e.limit, settings),
                    f"{e.used_percent}%",
                ]
                for e in exposures
            ]
        ),
    )
    half = Breakpoints(default=12, lg=6)
    note = TextWidget(
        content=(
            f"Computed {format_when(board.computed_at, settings.timezone)}; "
            f"{board.cached_days} closed days "
            "read from the daily totals cache, the open days summed live."
            if board.computed_at
            else ""
        )
    )
    return ColumnWidget(
        children=[
            kpis,
            flows,
            RowWidget(children=[Col(liability, half), Col(exposure_chart, half)]),
            RowWidget(children=[Col(breakage, half), Col(flow, half)]),
            exposure_table,
            note,
        ]
    )


async def dashboard_widget(request: Request) -> BaseWidget | None:
    ctx = console(request)
    try:
        board = await ctx.dashboard.get(ctx.db, ctx.now())
    except LookupError as missing:
        return TextWidget(content=f"Nothing to show yet: {missing}.", card=True)
    return build(board)


class DashboardView(Page):
    """The console's home page."""

    menu_label = "Dashboard"
    icon = "fa fa-chart-line"
    path = "/"
    route_name = "index"

    def __init__(self) -> None:
        super().__init__(widget=dashboard_widget)
