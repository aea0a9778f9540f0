"""The ledger explorer: filter transactions, open one (postings, obligations), export CSV.

Read-only: nothing on these pages changes the ledger.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette_admin import route

from console import audit, repository
from console.limits import EXPORT_ROWS_MAX, PAGE_SIZE
from console.repository import LedgerFilter
from console.views.base import Page, refused
from console.web import console, current_user, parse_when, redirect
from core.errors import DomainError

CSV_COLUMNS = (
    "transaction_id",
    "created_at",
    "kind",
    "merchant_id",
    "member_id",
    "currency",
    "points",
    "reference",
    "settlement_value",
    "balance_after",
    "reverses",
    "requested_points",
    "shortfall_points",
    "target_currency",
    "target_points",
)


def _filter(params: QueryParams, timezone: str | None) -> LedgerFilter:
    def value(name: str) -> str | None:
        return params.get(name, "").strip()[:255] or None

    return LedgerFilter(
        kind=value("kind"),
        merchant_id=value("merchant"),
        member_id=value("member"),
        transaction_id=value("transaction"),
        reference=value("reference"),
        since=parse_when(params.get("since", ""), timezone, "since"),
        until=parse_when(params.get("until", ""), timezone, "until"),
    )


def _csv_line(values: list[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


def _cell(value: object) -> object:
    """Formula-looking text is prefixed with a quote so a spreadsheet shows it, never runs it."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class LedgerView(Page):
    menu_label = "Ledger"
    icon = "fa fa-book"
    path = "/ledger"
    route_name = "ledger"

    @route("")
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        settings = await ctx.settings()
        timezone = settings.timezone if settings else None
        try:
            flt = _filter(request.query_params, timezone)
            async with ctx.db.connection() as conn:
                await repository.read_only(conn)
                page = await repository.ledger_page(
                    conn, flt, cursor=request.query_params.get("cursor") or None, limit=PAGE_SIZE
                )
                names = await repository.merchant_names(conn)
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "ledger")
        return await self.render(
            request,
            "console/ledger.html",
            page=page,
            flt=flt,
            query=flt.as_query(),
            raw=request.query_params,
            names=names,
            kinds=repository.TRANSACTION_KINDS,
        )

    @route("/export.csv", name="ledger_export")
    async def export(self, request: Request) -> Response:
        ctx = console(request)
        user = current_user(request)
        settings = await ctx.settings()
        try:
            flt = _filter(request.query_params, settings.timezone if settings else None)
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "ledger")
        now = ctx.now()
        # Exports are audited: they are how data leaves the console.
        async with ctx.db.transaction() as conn:
            await audit.append(
                conn,
                actor=user.username,
                action="ledger.export",
                at=now,
                details=dict(flt.as_query()),
            )

        async def rows() -> AsyncIterator[str]:
            yield _csv_line(list(CSV_COLUMNS))
            written = 0
            async with ctx.db.connection() as conn, conn.transaction(readonly=True):
                await repository.read_only(conn)
                async for row in repository.ledger_rows(conn, flt, limit=EXPORT_ROWS_MAX + 1):
                    if written == EXPORT_ROWS_MAX:
                        yield _csv_line(
                            [f"# stopped at {EXPORT_ROWS_MAX} rows: narrow the filter for more"]
                        )
                        return
                    values: list[object] = []
                    for column in CSV_COLUMNS:
                        value = row[column]
                        if column == "created_at":
                            value = value.astimezone(UTC).isoformat()
                        values.append("" if value is None else _cell(value))
                    yield _csv_line(values)
                    written += 1

        filename = f"ledger-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.csv"
        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @route("/transactions/{transaction_id}", name="transaction")
    async def transaction(self, request: Request) -> Response:
        ctx = console(request)
        transaction_id = request.path_params["transaction_id"]
        async with ctx.db.connection() as conn:
            await repository.read_only(conn)
            detail = await repository.transaction_detail(conn, transaction_id)
        if detail is None:
            return await self.render(
                request,
                "console/not_found.html",
                status_code=404,
                what=f"transaction {transaction_id}",
            )
        return await self.render(
            request,
            "console/transaction.html",
            title=f"Transaction {transaction_id}",
            detail=detail,
            txn=detail["transaction"],
        )
