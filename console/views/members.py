"""Members: find by external reference or member id; balance, lots (issuer, expiry), history."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import route

from console import repository
from console.limits import MEMBER_REFS_SHOWN, PAGE_SIZE
from console.views.base import Page, refused
from console.web import console, redirect
from core.errors import DomainError
from exchange import queries
from merchants.models import ALLIANCE_POINT


class MembersView(Page):
    menu_label = "Members"
    icon = "fa fa-users"
    path = "/members"
    route_name = "members"

    @route("")
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        query = request.query_params.get("q", "").strip()[:255]
        if query:
            async with ctx.db.connection() as conn:
                await repository.read_only(conn)
                member_id = await repository.find_member(conn, query)
            if member_id is not None:
                return redirect(request, "member", member_id=member_id, _query={"ref": query})
        return await self.render(request, "console/members.html", query=query, missing=bool(query))

    @route("/{member_id}", name="member")
    async def detail(self, request: Request) -> Response:
        ctx = console(request)
        member_id = request.path_params["member_id"]
        params = request.query_params
        live_only = params.get("lots") != "all"
        now = ctx.now()
        try:
            async with ctx.db.connection() as conn:
                await repository.read_only(conn)
                member = await repository.member(conn, member_id)
                if member is None:
                    return await self.render(
                        request,
                        "console/not_found.html",
                        status_code=404,
                        what=f"member {member_id}",
                    )
                refs = await repository.member_refs(conn, member_id, limit=MEMBER_REFS_SHOWN + 1)
                balance = await queries.balance(
                    conn, member_id=member_id, currency=ALLIANCE_POINT, now=now
                )
                lots = await repository.lots_page(
                    conn,
                    member_id=member_id,
                    live_only=live_only,
                    now=now,
                    cursor=params.get("lots_cursor") or None,
                    limit=PAGE_SIZE,
                )
                history = await repository.ledger_page(
                    conn,
                    repository.LedgerFilter(member_id=member_id),
                    cursor=params.get("cursor") or None,
                    limit=PAGE_SIZE,
                )
                holds = await repository.active_holds(conn, member_id, now)
                names = await repository.merchant_names(conn)
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "member", member_id=member_id)
        return await self.render(
            request,
            "console/member.html",
            title=f"Member {member_id}",
            member=member,
            ref=params.get("ref", ""),
            refs=refs[:MEMBER_REFS_SHOWN],
            more_refs=len(refs) > MEMBER_REFS_SHOWN,
            balance=balance,
            lots=lots,
            live_only=live_only,
            history=history,
            holds=holds,
            names=names,
        )
