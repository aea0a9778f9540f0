"""Admin users (admins only), your own account (password, TOTP), and the TOTP sign-in step."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette_admin import route
from starlette_admin.auth import login_not_required
from starlette_admin.helpers import index_url, safe_redirect_url

from console import users
from console.errors import InvalidInput, SignInFailed
from console.security import new_totp_secret, totp_uri
from console.users import Role
from console.views.base import Page, refused
from console.web import (
    Console,
    console,
    current_user,
    flashes,
    notify,
    redirect,
    require,
    session_of,
    set_session_cookie,
    text,
)
from core.errors import DomainError


class UsersView(Page):
    menu_label = "Admin users"
    icon = "fa fa-user-shield"
    path = "/users"
    route_name = "users"
    minimum_role = Role.ADMIN

    @route("")
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        return await self.render(
            request,
            "console/users.html",
            users=await users.list_users(ctx.db),
            roles=[role.value for role in Role],
        )

    @route("/create", methods=["POST"], name="user_create")
    async def create(self, request: Request) -> Response:
        admin = require(request, Role.ADMIN)
        ctx = console(request)
        form = await request.form()
        try:
            user, secret = await users.create_user(
                ctx.db,
                username=text(form, "username", max_length=63),
                password=text(form, "password", max_length=1024),
                role=users.check_role(text(form, "role")),
                actor=admin.username,
                now=ctx.now(),
                with_totp=form.get("totp") == "on",
            )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            message = f"User {user.username} ({user.role.value}) created."
            if secret:
                message += f" TOTP secret (shown once): {secret}"
            notify(request, message)
        return redirect(request, "users")

    @route("/{username}/{change}", methods=["POST"], name="user_change")
    async def change(self, request: Request) -> Response:
        admin = require(request, Role.ADMIN)
        ctx = console(request)
        username, change = request.path_params["username"], request.path_params["change"]
        form = await request.form()
        now = ctx.now()
        try:
            if change == "role":
                role = users.check_role(text(form, "role"))
                if username == admin.username and role is not Role.ADMIN:
                    raise InvalidInput("you cannot lower your own role", field="role")
                await users.set_role(
                    ctx.db, username=username, role=role, actor=admin.username, now=now
                )
                message = f"{username} is now {role.value}."
            elif change == "unlock":
                await users.unlock(ctx.db, username=username, actor=admin.username, now=now)
                message = f"{username} is unlocked."
            elif change in ("disable", "enable"):
                if username == admin.username:
                    raise InvalidInput("you cannot disable yourself", field="username")
                await users.set_disabled(
                    ctx.db,
                    username=username,
                    disabled=change == "disable",
                    actor=admin.username,
                    now=now,
                )
                message = f"{username} is {change}d."
            elif change == "password":
                await users.set_password(
                    ctx.db,
                    username=username,
                    password=text(form, "password", max_length=1024),
                    actor=admin.username,
                    now=now,
                )
                message = f"{username}'s password is reset; their sessions ended."
            elif change == "totp-reset":
                await users.disable_totp(ctx.db, username=username, actor=admin.username, now=now)
                message = f"{username}'s TOTP is removed."
            else:
                raise InvalidInput(f"unknown change {change!r}", field="change")
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, message)
        return redirect(request, "users")


class AccountView(Page):
    menu_label = "My account"
    icon = "fa fa-user"
    path = "/account"
    route_name = "account"

    @route("")
    async def index(self, request: Request) -> Response:
        user = current_user(request)
        secret = new_totp_secret()
        return await self.render(
            request,
            "console/account.html",
            user=user,
            new_secret=secret,
            new_uri=totp_uri(secret, user.username),
        )

    @route("/password", methods=["POST"], name="account_password")
    async def password(self, request: Request) -> Response:
        user = current_user(request)
        ctx = console(request)
        form = await request.form()
        try:
            await _check_own_password(ctx, user.username, str(form.get("current") or ""))
            await users.set_password(
                ctx.db,
                username=user.username,
                password=text(form, "password", max_length=1024),
                actor=user.username,
                now=ctx.now(),
            )
        except DomainError as refusal:
            refused(request, refusal)
            return redirect(request, "account")
        notify(request, "Password changed. Sign in again with the new one.")
        return redirect(request, "login")

    @route("/totp", methods=["POST"], name="account_totp")
    async def totp(self, request: Request) -> Response:
        user = current_user(request)
        ctx = console(request)
        form = await request.form()
        try:
            await users.enable_totp(
                ctx.db,
                username=user.username,
                secret=text(form, "secret", max_length=64),
                code=text(form, "code", max_length=16),
                actor=user.username,
                now=ctx.now(),
            )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, "Two-factor sign-in is on: from now on you also enter a code.")
        return redirect(request, "account")

    @route("/totp/disable", methods=["POST"], name="account_totp_disable")
    async def totp_disable(self, request: Request) -> Response:
        user = current_user(request)
        ctx = console(request)
        form = await request.form()
        try:
            await _check_own_password(ctx, user.username, str(form.get("current") or ""))
            await users.disable_totp(
                ctx.db, username=user.username, actor=user.username, now=ctx.now()
            )
        except DomainError as refusal:
            refused(request, refusal)
        else:
            notify(request, "Two-factor sign-in is off.")
        return redirect(request, "account")


async def _check_own_password(ctx: Console, username: str, password: str) -> None:
    await users.confirm_password(ctx.db, username=username, password=password, now=ctx.now())


class SecondFactorView(Page):
    """The TOTP step of sign-in: reachable with a password-stage session only."""

    menu_label = "Two-factor sign-in"
    path = "/second-factor"
    route_name = "second_factor"
    add_to_menu = False

    def is_accessible(self, request: Request) -> bool:
        return True

    @route("", methods=["GET", "POST"])
    @login_not_required
    async def index(self, request: Request) -> Response:
        ctx = console(request)
        session = session_of(request)
        fallback = index_url(request)
        next_url = safe_redirect_url(
            request.query_params.get("next") or fallback, request, fallback
        )
        login = str(request.url_for(f"{request.app.state.ROUTE_NAME}:login"))
        if session is None or session.stage != "password":
            return RedirectResponse(f"{login}?{urlencode({'next': next_url})}", status_code=303)
        error = None
        if request.method == "POST":
            form = await request.form()
            try:
                signed_in = await users.second_factor(
                    ctx.db,
                    token=request.state.console_token,
                    code=str(form.get("code") or "")[:16],
                    now=ctx.now(),
                )
            except SignInFailed as refusal:
                notify(request, refusal.detail, "error")
                return RedirectResponse(f"{login}?{urlencode({'next': next_url})}", status_code=303)
            response = RedirectResponse(next_url, status_code=303)
            set_session_cookie(request, response, signed_in.token)
            return response
        assert self.templates is not None
        return self.templates.TemplateResponse(
            request=request,
            name="console/second_factor.html",
            context={
                "error": error,
                "username": session.user.username,
                "flashed_messages": flashes(request),
            },
        )
