"""Manual adjustments: propose (operator), approve or reject (a different operator)."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import route

from console import adjustments, repository
from console.limits import PAGE_SIZE
from console.users import Role
from console.views.base import Page, refused
from console.web import console, integer, notify, parse_when, redirect, require, text
from core.errors import DomainError


class AdjustmentsView(Page):
    menu_label = "Adjustments"
    icon = "fa fa-scale-balanced"
    path = "/adjustments"
    route_name = "adjustments"

    @route("")
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        params = request.query_params
        status = params.get("status") or None
        if status not in (None, "pending", "posted", "rejected"):
            status = None
        cursor = params.get("cursor") or None
        try:
            before = repository.decode_cursor(cursor, datetime, str) if cursor else None
            rows = await adjustments.page(
                ctx.db,
                status=status,
                before=before,
                limit=PAGE_SIZE + 1,
            )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "adjustments")
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        next_cursor = (
            repository.encode_cursor(rows[-1]["proposed_at"], rows[-1]["adjustment_id"])
            if more
            else None
        )
        async with ctx.db.connection() as conn:
            names = await repository.merchant_names(conn)
        return await self.render(
            request,
            "console/adjustments.html",
            rows=rows,
            status=status or "",
            next_cursor=next_cursor,
            names=names,
            prefill_member=params.get("member", ""),
            prefill_transaction=params.get("transaction", ""),
        )

    @route("/credit", methods=["POST"], name="adjustment_credit")
    async def credit(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        form = await request.form()
        settings = await ctx.settings()
        try:
            proposal = await adjustments.propose_credit(
                ctx.db,
                merchant_id=text(form, "merchant_id", max_length=64),
                member_id=text(form, "member_id", max_length=64),
                points=integer(form, "points"),
                reason=text(form, "reason", max_length=500),
                expires_at=parse_when(
                    str(form.get("expires_at") or ""),
                    settings.timezone if settings else None,
                    "expires_at",
                ),
                proposer=user,
                now=ctx.now(),
            )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(
                request,
                f"Credit {proposal.adjustment_id} proposed; another operator must approve it.",
            )
        return redirect(request, "adjustments")

    @route("/reversal", methods=["POST"], name="adjustment_reversal")
    async def reversal(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        form = await request.form()
        try:
            proposal = await adjustments.propose_reversal(
                ctx.db,
                transaction_id=text(form, "transaction_id", max_length=64),
                points=integer(form, "points"),
                reason=text(form, "reason", max_length=500),
                proposer=user,
                now=ctx.now(),
            )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(
                request,
                f"Reversal {proposal.adjustment_id} proposed; another operator must approve it.",
            )
        return redirect(request, "adjustments")

    @route("/{adjustment_id}/approve", methods=["POST"], name="adjustment_approve")
    async def approve(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        adjustment_id = request.path_params["adjustment_id"]
        try:
            done = await adjustments.approve(
                ctx.db, ctx.clock, adjustment_id=adjustment_id, approver=user
            )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "adjustments")
        ctx.dashboard.clear()
        notify(request, f"Adjustment {adjustment_id} posted as {done.posted_transaction_id}.")
        return redirect(request, "transaction", transaction_id=done.posted_transaction_id)

    @route("/{adjustment_id}/reject", methods=["POST"], name="adjustment_reject")
    async def reject(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        adjustment_id = request.path_params["adjustment_id"]
        try:
            await adjustments.reject(
                ctx.db, adjustment_id=adjustment_id, decider=user, now=ctx.now()
            )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, f"Adjustment {adjustment_id} rejected.")
        return redirect(request, "adjustments")
