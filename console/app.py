"""Build the console (a starlette-admin app) and mount it on the host app at /console."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette_admin.base import BaseAdmin

from console.auth import ConsoleAuth
from console.views.adjustments import AdjustmentsView
from console.views.audit import AuditView
from console.views.dashboard import DashboardView
from console.views.ledger import LedgerView
from console.views.members import MembersView
from console.views.merchants import MerchantsView
from console.views.settlement import SettlementView
from console.views.users import AccountView, SecondFactorView, UsersView
from console.web import Console, SessionMiddleware, format_money, format_when
from core.config import get_settings

BASE_URL = "/console"
ROUTE_NAME = "console"
TEMPLATES = Path(__file__).resolve().parent / "templates"
SECRET_ENV = "ALLIANCE_CONSOLE_SECRET"
SECRET_FILE = "console-secret"


def resolve_secret(data_dir: Path | None = None) -> str:
    """The key that signs the console's CSRF and flash cookies.

    ALLIANCE_CONSOLE_SECRET if set (production: the same value on every worker); otherwise a
    random key kept in `<data dir>/console-secret` (mode 0600), so that every worker on this
    machine, and the next start, use the same one.
    """
    configured = os.environ.get(SECRET_ENV)
    if configured:
        if len(configured) < 32:
            raise ValueError(f"{SECRET_ENV} must be at least 32 characters")
        return configured
    directory = data_dir or get_settings().data_dir
    path = directory / SECRET_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def build_console(host: Starlette, *, secret_key: str | None = None) -> BaseAdmin:
    """The console, mounted on `host` at /console. `host`'s lifespan provides db, clock, ledger."""
    secret = secret_key or resolve_secret()
    admin = BaseAdmin(
        title="Alliance console",
        base_url=BASE_URL,
        route_name=ROUTE_NAME,
        templates_dir=str(TEMPLATES),
        index_view=DashboardView(),
        auth_provider=ConsoleAuth(),
        secret_key=secret,
        middlewares=[Middleware(SessionMiddleware)],
        timezone_config=None,
    )
    for view in (
        MerchantsView(),
        MembersView(),
        LedgerView(),
        SettlementView(),
        AdjustmentsView(),
        AuditView(),
        UsersView(),
        AccountView(),
        SecondFactorView(),
    ):
        admin.add_view(view)
    env = admin.templates.env
    env.filters["money"] = format_money
    env.filters["when"] = format_when
    env.filters["points"] = lambda value: "—" if value is None else f"{value:,}"
    admin.mount_to(host)
    admin.app.state.console = Console(host=host, base_url=BASE_URL, secret_key=secret)
    return admin
