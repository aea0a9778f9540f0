"""The audit log, newest first, and whether its hash chain verifies."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import route

from console import audit, repository
from console.audit import Verification
from console.limits import AUDIT_FULL_VERIFY_S, PAGE_SIZE
from console.views.base import Page, refused
from console.web import Console, console, notify, redirect
from core.errors import DomainError


async def chain_status(ctx: Console, *, full: bool = False) -> Verification:
    """The chain's state: fully re-verified every AUDIT_FULL_VERIFY_S, incrementally between."""
    stale = time.monotonic() - ctx.audit_checkpoint_at > AUDIT_FULL_VERIFY_S
    checkpoint = None if full or stale else ctx.audit_checkpoint
    async with ctx.db.connection() as conn:
        result = await audit.verify_since(conn, checkpoint, now=ctx.now())
    if checkpoint is None:
        ctx.audit_checkpoint_at = time.monotonic()
    ctx.audit_checkpoint = result
    return result


class AuditView(Page):
    menu_label = "Audit log"
    icon = "fa fa-shield-halved"
    path = "/audit"
    route_name = "audit"

    @route("")
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        params = request.query_params

        def value(name: str) -> str | None:
            return params.get(name, "").strip()[:200] or None

        try:
            before = (
                repository.decode_cursor(params["cursor"], int)[0] if params.get("cursor") else None
            )
            async with ctx.db.connection() as conn:
                await repository.read_only(conn)
                entries = await audit.page(
                    conn,
                    before_seq=before,
                    limit=PAGE_SIZE + 1,
                    actor=value("actor"),
                    action=value("action"),
                    target=value("target"),
                )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "audit")
        more = len(entries) > PAGE_SIZE
        entries = entries[:PAGE_SIZE]
        status = await chain_status(ctx)
        return await self.render(
            request,
            "console/audit.html",
            entries=entries,
            status=status,
            next_cursor=repository.encode_cursor(entries[-1].seq) if more and entries else None,
            filters={k: v for k in ("actor", "action", "target") if (v := value(k))},
        )

    @route("/verify", methods=["POST"], name="audit_verify")
    async def verify(self, request: Request) -> Response:
        ctx = console(request)
        status = await chain_status(ctx, full=True)
        if status.ok:
            notify(request, f"The audit chain verifies: {status.entries:,} entries from the first.")
        else:
            notify(request, f"The audit chain is broken at entry {status.broken_seq}.", "error")
        return redirect(request, "audit")
