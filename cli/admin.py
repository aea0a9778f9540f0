"""`alliance admin …`: the console's admin users, and the audit log's chain check."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from cli.runtime import cli_actor, console, err_console, open_database, run
from console import audit, users
from console.security import totp_uri
from console.users import Role
from core.clock import Clock, SystemClock
from core.config import get_settings
from core.database import Database

T = TypeVar("T")

admin_app = typer.Typer(
    help="Admin users of the console (/console): create, roles, passwords, lockouts; audit log.",
    no_args_is_help=True,
)

clock: Clock = SystemClock()
"""The commands' clock; tests put a FixedClock here."""

DEMO_USERNAME = "admin"
DEMO_PASSWORD_FILE = "console-admin-password"


def _call(action: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_database() as db:
            return await action(db)

    return run(main())


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise typer.BadParameter("viewer, operator or admin", param_hint="--role") from None


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt(
        "Password (12+ characters)", hide_input=True, confirmation_prompt=True
    )
    return password


def console_url() -> str:
    settings = get_settings()
    return f"http://{settings.host}:{settings.port}/console"


@admin_app.command(
    "create-user", epilog="Example: alliance admin create-user alice --role operator --totp"
)
def create_user(
    username: str = typer.Argument(help="Lower-case letters, digits, '.', '_' or '-'."),
    role: str = typer.Option("viewer", help="viewer, operator or admin."),
    totp: bool = typer.Option(False, "--totp", help="Require a TOTP code at sign-in."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
) -> None:
    """Create a console user (the password is asked for, never given as an argument)."""
    chosen = _role(role)
    password = _password(password_stdin)

    async def action(db: Database) -> tuple[users.User, str | None]:
        return await users.create_user(
            db,
            username=username,
            password=password,
            role=chosen,
            actor=cli_actor(),
            now=clock.now(),
            with_totp=totp,
        )

    user, secret = _call(action)
    console.print(f"Created {user.username} ({user.role.value}). Sign in at {console_url()}")
    if secret:
        console.print("Add this TOTP key to an authenticator app (shown once):")
        console.print(f"  {secret}")
        console.print(f"  {totp_uri(secret, user.username)}")


@admin_app.command("list-users", epilog="Example: alliance admin list-users")
def list_users() -> None:
    """Every console user, with role, TOTP and lockout state."""
    found = _call(users.list_users)
    table = Table(title="Console users")
    for column in ("username", "role", "totp", "state", "last sign-in"):
        table.add_column(column)
    now = clock.now()
    for user in found:
        state = "disabled" if user.disabled_at else "locked" if user.locked_at(now) else "active"
        table.add_row(
            user.username,
            user.role.value,
            "on" if user.totp_enabled else "off",
            state,
            user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "—",
        )
    console.print(table)


@admin_app.command("set-role", epilog="Example: alliance admin set-role alice admin")
def set_role(username: str, role: str) -> None:
    """Change a user's role (their sessions end)."""
    chosen = _role(role)
    _call(
        lambda db: users.set_role(
            db, username=username, role=chosen, actor=cli_actor(), now=clock.now()
        )
    )
    console.print(f"{username} is now {chosen.value}.")


@admin_app.command("set-password", epilog="Example: alliance admin set-password alice")
def set_password(
    username: str,
    password_stdin: bool = typer.Option(False, "--password-stdin"),
) -> None:
    """Set a new password (lifts a lockout, ends the user's sessions)."""
    password = _password(password_stdin)
    _call(
        lambda db: users.set_password(
            db, username=username, password=password, actor=cli_actor(), now=clock.now()
        )
    )
    console.print(f"{username}'s password is set.")


@admin_app.command("unlock", epilog="Example: alliance admin unlock alice")
def unlock(username: str) -> None:
    """Lift a lockout after repeated failed sign-ins."""
    _call(lambda db: users.unlock(db, username=username, actor=cli_actor(), now=clock.now()))
    console.print(f"{username} is unlocked.")


@admin_app.command("verify-audit", epilog="Example: alliance admin verify-audit")
def verify_audit() -> None:
    """Recompute the audit log's hash chain from its first entry; exit 1 if it is broken."""

    async def action(db: Database) -> audit.Verification:
        async with db.connection() as conn:
            return await audit.verify(conn, now=clock.now())

    result = _call(action)
    if not result.ok:
        err_console.print(
            f"[bold red]BROKEN[/] at entry {result.broken_seq}: {result.problem} "
            f"({result.entries} entries before it verify)"
        )
        raise typer.Exit(code=1)
    console.print(
        f"The audit chain verifies: {result.entries:,} entries, head {result.head_hash.hex()}."
    )


@admin_app.command("demo-user", epilog="Example: alliance admin demo-user")
def demo_user(
    data_dir: Path = typer.Option(None, help="Where the password file goes (default: data dir)."),
) -> None:
    """On first start (no console users yet), create the demo admin; always say how to sign in.

    The password is random and kept in <data dir>/console-admin-password (mode 0600), so that
    later starts can print it again. Change it in the console (My account) for anything real.
    """
    directory = data_dir or get_settings().data_dir
    path = directory / DEMO_PASSWORD_FILE

    async def action(db: Database) -> bool:
        if await users.count_users(db) > 0:
            return False
        password = secrets.token_urlsafe(12)
        await users.create_user(
            db,
            username=DEMO_USERNAME,
            password=password,
            role=Role.ADMIN,
            actor="cli:demo",
            now=clock.now(),
        )
        directory.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")
        return True

    created = _call(action)
    console.print(f"Admin console: {console_url()}")
    if path.exists():
        password = path.read_text().strip()
        verb = "Created the demo admin" if created else "Sign in"
        console.print(
            f"  {verb}: username [bold]{DEMO_USERNAME}[/], password [bold]{password}[/]"
            + ("" if created else " (unless changed since)")
        )
        console.print(f"  (kept in {path}; add users with: alliance admin create-user NAME)")
    else:
        console.print(
            "  Sign in with a console user (alliance admin create-user NAME --role admin)."
        )
