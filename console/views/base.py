"""What every console page shares: role gating, rendering with the alliance's settings, refusals."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import CustomView

from console.users import Role
from console.web import console, current_user, flashes, has_role, notify
from core.errors import DomainError


class Page(CustomView):
    """A console page: visible from `minimum_role` up, active for its path and everything below."""

    minimum_role: Role = Role.VIEWER
    template: str = ""

    def is_accessible(self, request: Request) -> bool:
        return has_role(request, self.minimum_role)

    def is_active(self, request: Request) -> bool:
        root, path = request.scope["root_path"], request.scope["path"]
        own = root + self.path.rstrip("/")
        if self.path == "/":
            return bool(path in (root, root + "/"))
        return bool(path == own or path.startswith(own + "/"))

    async def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        assert self.templates is not None, "a view renders only once mounted"
        ctx = console(request)
        settings = await ctx.settings()
        user = current_user(request)
        base = {
            "title": context.pop("title", None) or self.title(request),
            "flashed_messages": flashes(request),
            "settings": settings,
            "tz": settings.timezone if settings else None,
            "me": user,
            "can_operate": has_role(request, Role.OPERATOR),
            "is_admin": has_role(request, Role.ADMIN),
            "now": ctx.now(),
        }
        return self.templates.TemplateResponse(
            request=request, name=template, context={**base, **context}, status_code=status_code
        )


def refused(request: Request, refusal: DomainError) -> None:
    """Show an expected refusal (a domain rule said no) on the next page."""
    notify(request, refusal.detail, "error")
