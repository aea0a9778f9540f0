"""Sign-in for starlette-admin: its login page, our users, sessions, lockout and TOTP."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette_admin.auth import AdminUser, AuthProvider
from starlette_admin.exceptions import LoginFailed
from starlette_admin.helpers import index_url, safe_redirect_url

from console import users
from console.errors import SignInFailed, SignInThrottled
from console.security import client_address_key
from console.web import (
    ConsoleUser,
    clear_session_cookie,
    console,
    session_of,
    set_session_cookie,
)


class ConsoleAuth(AuthProvider):
    async def render_login(self, request: Request, templates: Jinja2Templates) -> Response:
        """The library's sign-in page; a throttled address gets it as 429 with Retry-After."""
        response = await super().render_login(request, templates)
        retry_after_s = getattr(request.state, "signin_retry_after_s", None)
        if retry_after_s is not None:
            response.status_code = 429
            response.headers["Retry-After"] = str(retry_after_s)
        return response

    async def login(
        self, username: str, password: str, remember_me: bool, request: Request
    ) -> Response:
        ctx = console(request)
        # The address the connection came from. Behind a reverse proxy, that is the proxy's
        # unless uvicorn trusts its X-Forwarded-For (FORWARDED_ALLOW_IPS; see docs/console.md).
        address = client_address_key(request.client.host if request.client else None)
        try:
            signed_in = await users.sign_in(
                ctx.db,
                username=username.strip(),
                password=password,
                now=ctx.now(),
                address=address,
            )
        except SignInThrottled as refusal:
            request.state.signin_retry_after_s = refusal.retry_after_s
            raise LoginFailed(refusal.detail) from None
        except SignInFailed as refusal:
            raise LoginFailed(refusal.detail) from None
        fallback = index_url(request)
        next_url = safe_redirect_url(
            request.query_params.get("next") or fallback, request, fallback
        )
        if signed_in.needs_code:
            target = str(request.url_for(f"{request.app.state.ROUTE_NAME}:second_factor"))
            response = RedirectResponse(
                f"{target}?{urlencode({'next': next_url})}", status_code=303
            )
        else:
            response = RedirectResponse(next_url, status_code=303)
        set_session_cookie(request, response, signed_in.token)
        return response

    async def authenticate(self, request: Request) -> AdminUser | None:
        session = session_of(request)
        if session is None or session.stage != "full":
            return None
        return ConsoleUser(
            username=session.user.username, role=session.user.role, user=session.user
        )

    async def logout(self, request: Request) -> Response:
        ctx = console(request)
        token = request.state.console_token
        if token:
            await users.sign_out(ctx.db, token=token, now=ctx.now())
        response = RedirectResponse(
            str(request.url_for(f"{request.app.state.ROUTE_NAME}:login")), status_code=303
        )
        clear_session_cookie(request, response)
        return response
