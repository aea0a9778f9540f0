"""Settlement: runs, the netting matrix, statements per merchant, payment files, starting a run.

Everything goes through settlement.service. The import is guarded: if the settlement package
cannot be imported, these pages say so and the rest of the console works.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import route

from console import audit, repository
from console.limits import DUE_PERIODS_SHOWN, JOB_PAGE_REFRESH_S, PAGE_SIZE
from console.users import Role
from console.views.base import Page, refused
from console.web import console, notify, parse_when, redirect, require
from core.errors import DomainError, NotFound

_log = logging.getLogger(__name__)

try:
    from console import jobs
    from settlement import service as settlement
except ImportError as missing:  # pragma: no cover - only while settlement is being built
    _log.warning("settlement is not available to the console: %s", missing)
    settlement = None  # type: ignore[assignment]

FILE_KINDS = {"csv": "csv", "pain001": "pain001"}


class SettlementView(Page):
    menu_label = "Settlement"
    icon = "fa fa-money-bill-transfer"
    path = "/settlement"
    route_name = "settlement"

    @route("")
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        if settlement is None:
            return await self.render(request, "console/settlement.html", available=False)
        try:
            async with ctx.db.connection() as conn:
                await repository.read_only(conn)
                runs = await repository.runs_page(
                    conn, cursor=request.query_params.get("cursor") or None, limit=PAGE_SIZE
                )
            # What "Run settlement" without a cut-off would settle, each in its own run.
            due = await settlement.due_periods(ctx.db, ctx.clock)
            job = await jobs.latest(ctx.db)
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "settlement")
        return await self.render(
            request,
            "console/settlement.html",
            available=True,
            runs=runs,
            due=due[:DUE_PERIODS_SHOWN],
            due_count=len(due),
            job=job,
            refresh_s=JOB_PAGE_REFRESH_S,
        )

    @route("/run", methods=["POST"], name="settlement_run")
    async def run(self, request: Request) -> Response:
        """Start a run as a background job (console/jobs.py); this page follows its progress."""
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        if settlement is None:
            notify(request, "Settlement is not available in this build.", "error")
            return redirect(request, "settlement")
        form = await request.form()
        if form.get("confirm") != "yes":
            notify(request, "Tick the confirmation to start a settlement run.", "error")
            return redirect(request, "settlement")
        settings = await ctx.settings()
        try:
            cutoff = parse_when(
                str(form.get("cutoff") or ""), settings.timezone if settings else None, "cutoff"
            )
            await ctx.jobs.start(
                ctx.db,
                ctx.clock,
                actor=user.username,
                cutoff=cutoff,
                on_end=ctx.dashboard.clear,
            )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "settlement")
        ctx.dashboard.clear()
        notify(request, "Settlement run started; this page follows it until it ends.", "info")
        return redirect(request, "settlement")

    @route("/runs/{run_id}", name="settlement_run_detail")
    async def detail(self, request: Request) -> Response:
        ctx = console(request)
        run_id = request.path_params["run_id"]
        if settlement is None:
            return redirect(request, "settlement")
        try:
            run = await settlement.run_detail(ctx.db, run_id)
        except NotFound:
            return await self.render(
                request, "console/not_found.html", status_code=404, what=f"settlement run {run_id}"
            )
        names: dict[str, str] = dict(run.get("names") or {})
        async with ctx.db.connection() as conn:
            names = {**(await repository.merchant_names(conn)), **names}
        creditors = sorted(
            {row["creditor_id"] for row in run["matrix"]}, key=lambda m: names.get(m, m)
        )
        debtors = sorted({row["debtor_id"] for row in run["matrix"]}, key=lambda m: names.get(m, m))
        cells = {(row["creditor_id"], row["debtor_id"]): row for row in run["matrix"]}
        return await self.render(
            request,
            "console/settlement_run.html",
            title=f"Settlement run {run_id}",
            run=run,
            names=names,
            creditors=creditors,
            debtors=debtors,
            cells=cells,
        )

    @route("/runs/{run_id}/files/{kind}", name="settlement_file")
    async def file(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        run_id, kind = request.path_params["run_id"], request.path_params["kind"]
        if settlement is None or kind not in FILE_KINDS:
            return redirect(request, "settlement")
        try:
            content, filename, media_type = await settlement.payment_file(
                ctx.db,
                run_id,
                "csv" if kind == "csv" else "pain001",
            )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "settlement_run_detail", run_id=run_id)
        except ValueError as unpayable:
            # settlement.payments refuses a file that must not go to a bank (no payee with a
            # bank account, sums that disagree): say why instead of serving it.
            notify(request, f"No {kind} file for this run: {unpayable}", "error")
            return redirect(request, "settlement_run_detail", run_id=run_id)
        async with ctx.db.transaction() as conn:
            await audit.append(
                conn,
                actor=user.username,
                action="settlement.file",
                target=run_id,
                at=ctx.now(),
                details={"kind": kind, "filename": filename, "bytes": len(content)},
            )
        return Response(
            content,
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
