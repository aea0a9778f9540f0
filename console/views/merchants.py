"""Merchants: list and search, create, suspend / reactivate / close, keys, limit, exposure.

Every change goes through merchants.service, in one transaction with its audit entry.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import route

from console import audit, repository
from console.limits import PAGE_SIZE, STATEMENTS_SHOWN
from console.unit import bound
from console.users import Role
from console.views.base import Page, refused
from console.web import console, money_minor, notify, redirect, require, text
from core.errors import DomainError, NotFound
from exchange import exposure
from merchants import keys as merchant_keys, service as merchants
from merchants.models import MerchantStatus
from settlement import service as settlement

STATUS_ACTIONS = {
    "suspend": (merchants.suspend, "merchant.suspend"),
    "reactivate": (merchants.reactivate, "merchant.reactivate"),
    "close": (merchants.close, "merchant.close"),
}


class MerchantsView(Page):
    menu_label = "Merchants"
    icon = "fa fa-store"
    path = "/merchants"
    route_name = "merchants"

    @route("")
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        search = request.query_params.get("q", "").strip()[:200] or None
        cursor = request.query_params.get("cursor") or None
        try:
            async with ctx.db.connection() as conn:
                await repository.read_only(conn)
                page = await repository.merchants_page(
                    conn, search=search, cursor=cursor, limit=PAGE_SIZE
                )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "merchants")
        return await self.render(request, "console/merchants.html", page=page, search=search or "")

    @route("/create", methods=["POST"], name="merchant_create")
    async def create(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        form = await request.form()
        settings = await ctx.settings()
        try:
            name = text(form, "name", max_length=200)
            limit = money_minor(
                text(form, "liability_limit"), settings.minor_units if settings else 2, "limit"
            )
            webhook = text(form, "webhook_url", required=False, max_length=2000) or None
            merchant_id = text(form, "merchant_id", required=False, max_length=64) or None
            now = ctx.now()
            async with ctx.db.transaction() as conn:
                merchant = await merchants.create_merchant(
                    bound(conn),
                    name=name,
                    liability_limit=limit,
                    webhook_url=webhook,
                    merchant_id=merchant_id,
                    now=now,
                )
                await audit.append(
                    conn,
                    actor=user.username,
                    action="merchant.create",
                    target=merchant.merchant_id,
                    at=now,
                    details={"name": merchant.name, "liability_limit": limit},
                )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "merchants")
        notify(request, f"Merchant {merchant.name} created ({merchant.merchant_id}).")
        return redirect(request, "merchant", merchant_id=merchant.merchant_id)

    @route("/{merchant_id}", name="merchant")
    async def detail(self, request: Request) -> Response:
        ctx = console(request)
        merchant_id = request.path_params["merchant_id"]
        now = ctx.now()
        try:
            merchant = await merchants.get_merchant(ctx.db, merchant_id)
            keys = await merchants.list_keys(ctx.db, merchant_id)
        except NotFound:
            return await self.render(
                request, "console/not_found.html", status_code=404, what=f"merchant {merchant_id}"
            )
        settings = await ctx.settings()
        measured: Any = None
        if settings is not None:
            async with ctx.db.connection() as conn:
                await repository.read_only(conn)
                measured = await exposure.measure(
                    conn,
                    merchant_id=merchant_id,
                    liability_limit=merchant.liability_limit,
                    settings=settings,
                    now=now,
                )
        try:
            statements = await settlement.statements_page(
                ctx.db,
                merchant_id,
                period=None,
                limit=STATEMENTS_SHOWN,
                cursor=request.query_params.get("statements_cursor") or None,
            )
        except DomainError as refusal:  # a cursor that is not one of ours: the first page
            refused(request, refusal)
            statements = await settlement.statements_page(
                ctx.db, merchant_id, period=None, limit=STATEMENTS_SHOWN, cursor=None
            )
        key_rows = [
            {
                "key": key,
                "thumbprint": merchant_keys.jwk_thumbprint(key.public_key),
                "usable": key.usable_at(now),
            }
            for key in keys
        ]
        return await self.render(
            request,
            "console/merchant.html",
            title=merchant.name,
            merchant=merchant,
            keys=key_rows,
            exposure=measured,
            closed=merchant.status is MerchantStatus.CLOSED,
            statements=statements,
        )

    @route("/{merchant_id}/status", methods=["POST"], name="merchant_status")
    async def status(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        merchant_id = request.path_params["merchant_id"]
        form = await request.form()
        action = str(form.get("action") or "")
        if action not in STATUS_ACTIONS:
            notify(request, "Unknown status change.", "error")
            return redirect(request, "merchant", merchant_id=merchant_id)
        change, audit_action = STATUS_ACTIONS[action]
        if action == "close" and form.get("confirm") != merchant_id:
            notify(
                request, "To close a merchant, type its id to confirm: closing is final.", "error"
            )
            return redirect(request, "merchant", merchant_id=merchant_id)
        now = ctx.now()
        try:
            async with ctx.db.transaction() as conn:
                merchant = await change(bound(conn), merchant_id, now)
                await audit.append(
                    conn, actor=user.username, action=audit_action, target=merchant_id, at=now
                )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, f"{merchant.name} is now {merchant.status.value}.")
        return redirect(request, "merchant", merchant_id=merchant_id)

    @route("/{merchant_id}/limit", methods=["POST"], name="merchant_limit")
    async def limit(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        merchant_id = request.path_params["merchant_id"]
        form = await request.form()
        settings = await ctx.settings()
        now = ctx.now()
        try:
            limit = money_minor(
                text(form, "liability_limit"), settings.minor_units if settings else 2, "limit"
            )
            async with ctx.db.transaction() as conn:
                before = await merchants.get_merchant(bound(conn), merchant_id)
                await merchants.set_liability_limit(bound(conn), merchant_id, limit, now)
                await audit.append(
                    conn,
                    actor=user.username,
                    action="merchant.limit",
                    target=merchant_id,
                    at=now,
                    details={"from": before.liability_limit, "to": limit},
                )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, "Liability limit changed.")
            ctx.dashboard.clear()
        return redirect(request, "merchant", merchant_id=merchant_id)

    @route("/{merchant_id}/keys", methods=["POST"], name="merchant_key_add")
    async def add_key(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        merchant_id = request.path_params["merchant_id"]
        form = await request.form()
        now = ctx.now()
        try:
            raw = merchant_keys.parse_public_key(text(form, "public_key", max_length=4000))
            key_id = text(form, "key_id", required=False, max_length=128) or None
            async with ctx.db.transaction() as conn:
                key = await merchants.add_key(
                    bound(conn), merchant_id=merchant_id, public_key=raw, key_id=key_id, now=now
                )
                await audit.append(
                    conn,
                    actor=user.username,
                    action="merchant.key_add",
                    target=merchant_id,
                    at=now,
                    details={"key_id": key.key_id, "thumbprint": merchant_keys.jwk_thumbprint(raw)},
                )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, f"Key {key.key_id} added.")
        return redirect(request, "merchant", merchant_id=merchant_id)

    @route("/{merchant_id}/keys/{key_id}/revoke", methods=["POST"], name="merchant_key_revoke")
    async def revoke_key(self, request: Request) -> Response:
        user = require(request, Role.OPERATOR)
        ctx = console(request)
        merchant_id, key_id = request.path_params["merchant_id"], request.path_params["key_id"]
        now = ctx.now()
        try:
            async with ctx.db.transaction() as conn:
                await merchants.revoke_key(
                    bound(conn), merchant_id=merchant_id, key_id=key_id, now=now
                )
                await audit.append(
                    conn,
                    actor=user.username,
                    action="merchant.key_revoke",
                    target=merchant_id,
                    at=now,
                    details={"key_id": key_id},
                )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, f"Key {key_id} revoked.")
        return redirect(request, "merchant", merchant_id=merchant_id)
