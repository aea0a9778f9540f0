"""The console's web plumbing: where the database is, who is signed in, CSRF bound to the session,
roles, and small helpers every page uses.

CSRF: starlette-admin checks, on every POST, that the `csrftoken` form field (or X-CSRFToken
header) carries the same token as its signed `starlette_admin_csrftoken` cookie (double submit).
A double-submit cookie alone can be planted by a sibling subdomain together with a token the
attacker knows; so for every request that carries a console session, `SessionMiddleware` below
replaces that cookie's value, before the library reads it, with the token stored in the session
row. A POST therefore passes only if its form carries the session's own token, which a page on
another site cannot read (a synchroniser token). Requests without a session (the sign-in form)
keep the library's double-submit check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request, cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette_admin.auth import AdminUser
from starlette_admin.flash import flash, get_flashed_messages
from starlette_admin.security.csrf import _CSRF_SALT, CSRFMiddleware

from console import users
from console.audit import Verification
from console.dashboard import DashboardCache
from console.errors import InvalidInput
from console.jobs import Jobs
from console.users import Role, Session, User
from core.clock import Clock
from core.database import Database
from exchange.service import Ledger
from merchants import repository as merchant_repository
from merchants.models import AllianceSettings

SESSION_COOKIE = "alliance_console_session"
SETTINGS_CACHE_S = 60


@dataclass(slots=True)
class Console:
    """What every console request needs, reached as `request.app.state.console`.

    The database, clock and ledger belong to the host app (its lifespan opens them), so they are
    read from it on each request rather than captured when the console is built.
    """

    host: Starlette
    base_url: str
    secret_key: str
    dashboard: DashboardCache = field(default_factory=DashboardCache)
    jobs: Jobs = field(default_factory=Jobs)
    audit_checkpoint: Verification | None = None
    audit_checkpoint_at: float = 0.0
    _settings: AllianceSettings | None = None
    _settings_at: datetime | None = None

    @property
    def db(self) -> Database:
        database: Database = self.host.state.db
        return database

    @property
    def clock(self) -> Clock:
        clock: Clock = self.host.state.clock
        return clock

    @property
    def ledger(self) -> Ledger:
        ledger: Ledger = self.host.state.ledger
        return ledger

    def now(self) -> datetime:
        return self.clock.now()

    async def settings(self) -> AllianceSettings | None:
        now = self.now()
        fresh = (
            self._settings_at is not None
            and abs((now - self._settings_at).total_seconds()) < SETTINGS_CACHE_S
        )
        if not fresh:
            async with self.db.connection() as conn:
                self._settings = await merchant_repository.settings_at(conn, now)
            self._settings_at = now
        return self._settings

    @property
    def csrf_signer(self) -> URLSafeSerializer:
        # The same signer starlette-admin's CSRFMiddleware uses for its cookie and form field
        # (tests/console/test_csrf.py pins that the two agree).
        return URLSafeSerializer(self.secret_key, salt=_CSRF_SALT)


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


@dataclass
class ConsoleUser(AdminUser):
    """The signed-in admin as starlette-admin's templates and permission hooks see them."""

    role: Role = Role.VIEWER
    user: User | None = None

    @property
    def account(self) -> User:
        if self.user is None:
            raise RuntimeError("a console user without an account")
        return self.user


def current_user(request: Request) -> User:
    admin_user = getattr(request.state, "admin_user", None)
    if not isinstance(admin_user, ConsoleUser):
        raise HTTPException(401, "Sign in first.")
    return admin_user.account


def has_role(request: Request, role: Role) -> bool:
    admin_user = getattr(request.state, "admin_user", None)
    return isinstance(admin_user, ConsoleUser) and admin_user.role.allows(role)


def require(request: Request, role: Role) -> User:
    """The signed-in user if their role is at least `role`; otherwise 403 (and nothing runs)."""
    user = current_user(request)
    if not user.role.allows(role):
        raise HTTPException(403, f"This needs the {role.value} role; you are {user.role.value}.")
    return user


def session_of(request: Request) -> Session | None:
    session: Session | None = getattr(request.state, "console_session", None)
    return session


class SessionMiddleware:
    """Loads the console session named by the cookie and binds the CSRF token to it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        static = scope.get("root_path", "") + "/static/"
        if scope["type"] != "http" or scope["path"].startswith(static):
            # Assets need no session: no database round trip for each script and stylesheet.
            await self.app(scope, receive, send)
            return
        ctx: Console = scope["app"].state.console
        cookies = _cookies(scope)
        token = cookies.get(SESSION_COOKIE)
        session = None
        if token and len(token) <= 128:
            session = await users.session_for(ctx.db, token=token, now=ctx.now())
        scope.setdefault("state", {})["console_session"] = session
        scope["state"]["console_token"] = token if session else None
        if session is None:
            await self.app(scope, receive, send)
            return
        bound = ctx.csrf_signer.dumps(session.csrf_token)
        presented = cookies.get(CSRFMiddleware.cookie_name)
        if presented != bound:
            _set_cookie_header(scope, CSRFMiddleware.cookie_name, bound)

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and presented != bound:
                secure = "; Secure" if scope.get("scheme") == "https" else ""
                cookie = f"{CSRFMiddleware.cookie_name}={bound}; Path=/; SameSite=Lax{secure}"
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies, parsed as Starlette parses them for `request.cookies`."""
    cookies: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    return cookies


def _set_cookie_header(scope: Scope, name: str, value: str) -> None:
    """Replace (or add) one cookie in the request's Cookie header."""
    cookies = _cookies(scope)
    cookies[name] = value
    header = "; ".join(f"{key}={val}" for key, val in cookies.items())
    others = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
    scope["headers"] = [*others, (b"cookie", header.encode("latin-1"))]


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path=console(request).base_url or "/",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=console(request).base_url or "/")


def csrf_token_valid(ctx: Console, signed: str, session: Session) -> bool:
    try:
        return bool(ctx.csrf_signer.loads(signed) == session.csrf_token)
    except BadSignature:
        return False


# --- pages ---------------------------------------------------------------------------------


def redirect(request: Request, name: str, **params: Any) -> RedirectResponse:
    """303 to a console route by name, with an optional query string (`_query`)."""
    query = params.pop("_query", None)
    url = str(request.url_for(f"{request.app.state.ROUTE_NAME}:{name}", **params))
    if query:
        from urllib.parse import urlencode

        url = f"{url}?{urlencode(query)}"
    return RedirectResponse(url, status_code=303)


def fail(message: str, status: int = 400) -> NoReturn:
    raise HTTPException(status, message)


def notify(request: Request, message: str, category: str = "success") -> None:
    flash(request, message, category)


def flashes(request: Request) -> list[dict[str, Any]]:
    return get_flashed_messages(request)


def text(form: FormData, name: str, *, required: bool = True, max_length: int = 500) -> str:
    value = str(form.get(name) or "").strip()
    if required and not value:
        raise InvalidInput(f"{name.replace('_', ' ')} is required", field=name)
    if len(value) > max_length:
        raise InvalidInput(f"{name.replace('_', ' ')} is too long", field=name)
    return value


def integer(form: FormData, name: str) -> int:
    raw = text(form, name).replace(",", "").replace("_", "")
    if not raw.lstrip("-").isdigit() or len(raw) > 19:
        raise InvalidInput(f"{name.replace('_', ' ')} must be a whole number", field=name)
    return int(raw)


def money_minor(raw: str, minor_units: int, name: str) -> int:
    """An amount typed in major units ("1,234.56") as exact minor units; never a float."""
    cleaned = raw.replace(",", "").replace(" ", "").replace("_", "")
    try:
        amount = Decimal(cleaned)
    except ArithmeticError:
        raise InvalidInput(f"{name} must be an amount like 1234.56", field=name) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidInput(f"{name} must be a positive amount", field=name)
    scaled = amount.scaleb(minor_units)
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"{name} has more than {minor_units} decimals", field=name)
    return int(scaled)


def format_money(minor: int | None, settings: AllianceSettings | None) -> str:
    if minor is None:
        return "—"
    units = settings.minor_units if settings else 2
    currency = settings.currency if settings else ""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**units)
    body = f"{whole:,}" + (f".{frac:0{units}d}" if units else "")
    return f"{sign}{body} {currency}".strip()


def format_when(instant: datetime | str | None, timezone: str | None) -> str:
    """An instant (or RFC 3339 text, as settlement's views give it) in the alliance's zone."""
    if instant is None or instant == "":
        return "—"
    if isinstance(instant, str):
        instant = datetime.fromisoformat(instant)
    zone = ZoneInfo(timezone) if timezone else UTC
    local = instant.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


def parse_when(raw: str, timezone: str | None, name: str) -> datetime | None:
    """A date or date-time typed into a filter, read in the alliance's timezone."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a date (YYYY-MM-DD) or date-time", field=name) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone) if timezone else UTC)
    return parsed.astimezone(UTC)
