"""Admin users, sign-in and server-side sessions.

Sign-in is two steps when the user has TOTP: the right password opens a session at stage
`password`, which can do nothing but submit a code within SECOND_FACTOR_WINDOW_S; the right code
replaces it with a fresh `full` session (a new token, so a token seen before the second factor
is worth nothing after it). Failed passwords and failed codes count towards the same lockout.

Sign-in is also throttled per client address (an IPv6 /64): SIGNIN_ADDRESS_FAILURES_MAX
attempts that did not sign in, within SIGNIN_ADDRESS_WINDOW_S of the first, and that address is
refused before any password is checked. The count lives in PostgreSQL (`admin_signin_throttle`),
so every worker shares it and a restart does not reset it. Each attempt takes its slot first, in
one atomic upsert, and gives it back if the password is right: concurrent guesses cannot slip
past the limit, and no lock is held while a password is verified.

Every function is one unit of work and writes its audit entry in it.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from console import audit
from console.errors import InvalidInput, SignInFailed, SignInThrottled, UserNotFound
from console.limits import (
    LOCKOUT_S,
    LOGIN_FAILURES_MAX,
    SECOND_FACTOR_WINDOW_S,
    SESSION_ABSOLUTE_S,
    SESSION_IDLE_S,
    SESSION_TOUCH_S,
    SIGNIN_ADDRESS_FAILURES_MAX,
    SIGNIN_ADDRESS_WINDOW_S,
)
from console.security import (
    hash_password,
    match_totp,
    new_csrf_token,
    new_session_token,
    new_totp_secret,
    token_hash,
    verify_password,
)
from core.database import Database
from core.ids import new_id

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
SIGN_IN_FAILED = (
    "Sign-in failed: wrong username, password or code, or the account is locked "
    f"({LOGIN_FAILURES_MAX} failures lock it for {LOCKOUT_S // 60} minutes)."
)


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str
    role: Role
    totp_enabled: bool
    failed_logins: int
    locked_until: datetime | None
    disabled_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None

    def locked_at(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True, slots=True)
class Session:
    """A live session as a request sees it."""

    token_hash: bytes
    user: User
    stage: str
    csrf_token: str
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class SignIn:
    """What a right password gets: a session token, and whether a TOTP code is still owed."""

    token: str
    csrf_token: str
    needs_code: bool


def _user(row: asyncpg.Record) -> User:
    return User(
        user_id=row["user_id"],
        username=row["username"],
        role=Role(row["role"]),
        totp_enabled=row["totp_secret"] is not None,
        failed_logins=row["failed_logins"],
        locked_until=row["locked_until"],
        disabled_at=row["disabled_at"],
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
    )


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise InvalidInput(
            "a username is 2-63 characters: lower-case letters, digits, '.', '_' or '-'",
            field="username",
        )
    return username


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput("role is viewer, operator or admin", field="role") from None


# --- users ---------------------------------------------------------------------------------


async def create_user(
    db: Database,
    *,
    username: str,
    password: str,
    role: Role,
    actor: str,
    now: datetime,
    with_totp: bool = False,
) -> tuple[User, str | None]:
    """A new admin user; with `with_totp`, also its TOTP secret (shown once to the caller)."""
    check_username(username)
    password_hash = await asyncio.to_thread(hash_password, password)
    secret = new_totp_secret() if with_totp else None
    async with db.transaction() as conn:
        taken = await conn.fetchval(
            "SELECT 1 FROM admin_users WHERE lower(username) = lower($1)", username
        )
        if taken:
            raise InvalidInput(f"username {username!r} is taken", field="username")
        row = await conn.fetchrow(
            """INSERT INTO admin_users (user_id, username, password_hash, role, totp_secret,
                                        created_at)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
            new_id("adm"),
            username,
            password_hash,
            role.value,
            secret,
            now,
        )
        await audit.append(
            conn,
            actor=actor,
            action="user.create",
            target=username,
            at=now,
            details={"role": role.value, "totp": with_totp},
        )
    return _user(row), secret


async def list_users(db: Database) -> list[User]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM admin_users ORDER BY lower(username)")
    return [_user(row) for row in rows]


async def get_user(db: Database, username: str) -> User:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM admin_users WHERE lower(username) = lower($1)", username
        )
    if row is None:
        raise UserNotFound(f"no admin user {username!r}")
    return _user(row)


async def count_users(db: Database) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM admin_users")
    return count


async def _for_update(conn: asyncpg.Connection, username: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT * FROM admin_users WHERE lower(username) = lower($1) FOR UPDATE", username
    )
    if row is None:
        raise UserNotFound(f"no admin user {username!r}")
    return row


async def _end_sessions(conn: asyncpg.Connection, user_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE admin_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
        now,
    )


async def set_role(db: Database, *, username: str, role: Role, actor: str, now: datetime) -> User:
    """Change a role; the user's sessions end, so the new role applies from the next sign-in."""
    async with db.transaction() as conn:
        row = await _for_update(conn, username)
        await conn.execute(
            "UPDATE admin_users SET role = $2 WHERE user_id = $1", row["user_id"], role.value
        )
        await _end_sessions(conn, row["user_id"], now)
        await audit.append(
            conn,
            actor=actor,
            action="user.role",
            target=row["username"],
            at=now,
            details={"from": row["role"], "to": role.value},
        )
        updated = await conn.fetchrow(
            "SELECT * FROM admin_users WHERE user_id = $1", row["user_id"]
        )
    return _user(updated)


async def set_password(
    db: Database, *, username: str, password: str, actor: str, now: datetime
) -> None:
    """New password; the lockout is lifted and every session of the user ends."""
    password_hash = await asyncio.to_thread(hash_password, password)
    async with db.transaction() as conn:
        row = await _for_update(conn, username)
        await conn.execute(
            """UPDATE admin_users SET password_hash = $2, failed_logins = 0, locked_until = NULL
               WHERE user_id = $1""",
            row["user_id"],
            password_hash,
        )
        await _end_sessions(conn, row["user_id"], now)
        await audit.append(
            conn, actor=actor, action="user.password", target=row["username"], at=now
        )


async def unlock(db: Database, *, username: str, actor: str, now: datetime) -> None:
    async with db.transaction() as conn:
        row = await _for_update(conn, username)
        await conn.execute(
            "UPDATE admin_users SET failed_logins = 0, locked_until = NULL WHERE user_id = $1",
            row["user_id"],
        )
        await audit.append(conn, actor=actor, action="user.unlock", target=row["username"], at=now)


async def set_disabled(
    db: Database, *, username: str, disabled: bool, actor: str, now: datetime
) -> None:
    async with db.transaction() as conn:
        row = await _for_update(conn, username)
        await conn.execute(
            "UPDATE admin_users SET disabled_at = $2 WHERE user_id = $1",
            row["user_id"],
            now if disabled else None,
        )
        if disabled:
            await _end_sessions(conn, row["user_id"], now)
        await audit.append(
            conn,
            actor=actor,
            action="user.disable" if disabled else "user.enable",
            target=row["username"],
            at=now,
        )


async def enable_totp(
    db: Database, *, username: str, secret: str, code: str, actor: str, now: datetime
) -> None:
    """Turn on TOTP with `secret`, once a code from it proves the authenticator has it."""
    step = match_totp(secret, code, now, after_step=None)
    if step is None:
        raise InvalidInput("that code does not match the new secret", field="code")
    async with db.transaction() as conn:
        row = await _for_update(conn, username)
        await conn.execute(
            "UPDATE admin_users SET totp_secret = $2, totp_last_step = $3 WHERE user_id = $1",
            row["user_id"],
            secret,
            step,
        )
        await audit.append(
            conn, actor=actor, action="user.totp_enable", target=row["username"], at=now
        )


async def disable_totp(db: Database, *, username: str, actor: str, now: datetime) -> None:
    async with db.transaction() as conn:
        row = await _for_update(conn, username)
        await conn.execute(
            "UPDATE admin_users SET totp_secret = NULL, totp_last_step = NULL WHERE user_id = $1",
            row["user_id"],
        )
        await audit.append(
            conn, actor=actor, action="user.totp_disable", target=row["username"], at=now
        )


# --- sign-in -------------------------------------------------------------------------------


async def _fail(conn: asyncpg.Connection, row: asyncpg.Record, now: datetime, why: str) -> None:
    """Count a failure against the user; at the limit, lock the account and end its sessions."""
    failures = row["failed_logins"] + 1
    if failures >= LOGIN_FAILURES_MAX:
        locked_until = now + timedelta(seconds=LOCKOUT_S)
        await conn.execute(
            "UPDATE admin_users SET failed_logins = 0, locked_until = $2 WHERE user_id = $1",
            row["user_id"],
            locked_until,
        )
        await _end_sessions(conn, row["user_id"], now)
        await audit.append(
            conn,
            actor=row["username"],
            action="signin.failed",
            target=row["username"],
            at=now,
            details={"why": why, "locked_until": audit.rfc3339(locked_until)},
        )
        return
    await conn.execute(
        "UPDATE admin_users SET failed_logins = $2 WHERE user_id = $1", row["user_id"], failures
    )
    await audit.append(
        conn,
        actor=row["username"],
        action="signin.failed",
        target=row["username"],
        at=now,
        details={"why": why, "failures": failures},
    )


async def confirm_password(db: Database, *, username: str, password: str, now: datetime) -> None:
    """A signed-in user's own password, asked again before changing the password or TOTP.

    A wrong one counts towards the lockout like a failed sign-in, so a stolen session cannot
    be used to guess the password without limit (at the limit the account locks and that
    session ends). InvalidInput if it is wrong, raised once the failure is committed.
    """
    async with db.transaction() as conn:
        row = await _for_update(conn, username)
        matches, _ = await asyncio.to_thread(verify_password, password, row["password_hash"])
        if not matches:
            await _fail(conn, row, now, "current password")
    if not matches:
        raise InvalidInput("the current password is wrong", field="current")


async def _open_session(
    conn: asyncpg.Connection, user_id: str, stage: str, now: datetime
) -> tuple[str, str]:
    token, csrf = new_session_token(), new_csrf_token()
    lifetime = SESSION_ABSOLUTE_S if stage == "full" else SECOND_FACTOR_WINDOW_S
    await conn.execute(
        """INSERT INTO admin_sessions (token_hash, user_id, stage, csrf_token, created_at,
                                       last_seen_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $5, $6)""",
        token_hash(token),
        user_id,
        stage,
        csrf,
        now,
        now + timedelta(seconds=lifetime),
    )
    return token, csrf


async def _take_attempt(db: Database, address: str, now: datetime) -> tuple[datetime, int]:
    """Count one sign-in attempt from `address`: its window's start and the count, this one in.

    A window starts at the first attempt after the previous one ended. The attempt is counted
    before the password is checked (and given back if it was right), in one statement, so any
    number of concurrent attempts from one address count one by one.
    """
    async with db.transaction() as conn:
        row = await conn.fetchrow(
            """INSERT INTO admin_signin_throttle AS t (address, window_start, failures)
               VALUES ($1, $2, 1)
               ON CONFLICT (address) DO UPDATE SET
                   window_start = CASE WHEN t.window_start <= $3 THEN $2 ELSE t.window_start END,
                   failures = CASE WHEN t.window_start <= $3 THEN 1 ELSE t.failures + 1 END
               RETURNING window_start, failures""",
            address,
            now,
            now - timedelta(seconds=SIGNIN_ADDRESS_WINDOW_S),
        )
        window_start: datetime = row["window_start"]
        attempts: int = row["failures"]
        if attempts == SIGNIN_ADDRESS_FAILURES_MAX + 1:
            # Once per window, when the address is first refused.
            await audit.append(
                conn,
                actor=address,
                action="signin.throttled",
                at=now,
                details={
                    "address": address,
                    "failures": SIGNIN_ADDRESS_FAILURES_MAX,
                    "until": audit.rfc3339(
                        window_start + timedelta(seconds=SIGNIN_ADDRESS_WINDOW_S)
                    ),
                },
            )
    return window_start, attempts


async def _prune(conn: asyncpg.Connection, now: datetime) -> int:
    """Delete sessions that ended, and address windows that closed, a day ago or more."""
    day_ago = now - timedelta(days=1)
    result: str = await conn.execute(
        """DELETE FROM admin_sessions WHERE expires_at < $1
              OR (revoked_at IS NOT NULL AND revoked_at < $1)""",
        day_ago,
    )
    await conn.execute(
        "DELETE FROM admin_signin_throttle WHERE window_start < $1",
        day_ago - timedelta(seconds=SIGNIN_ADDRESS_WINDOW_S),
    )
    return int(result.split()[-1])


async def sign_in(
    db: Database, *, username: str, password: str, now: datetime, address: str | None = None
) -> SignIn:
    """Check a password; a session, or SignInFailed (the same for every reason).

    `address` is the client's (`security.client_address_key`): a web sign-in always gives it, and
    too many failures from it raise SignInThrottled before the password is looked at. Without
    it (tools and tests that call this directly) no address is counted.
    """
    window: datetime | None = None
    if address is not None:
        window, attempts = await _take_attempt(db, address, now)
        if attempts > SIGNIN_ADDRESS_FAILURES_MAX:
            ends = window + timedelta(seconds=SIGNIN_ADDRESS_WINDOW_S)
            wait_s = max(1, math.ceil((ends - now).total_seconds()))
            raise SignInThrottled(
                f"Too many failed sign-ins from your address: try again in "
                f"{math.ceil(wait_s / 60)} minute(s).",
                retry_after_s=wait_s,
            )
    outcome: SignIn | None = None
    async with db.transaction() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM admin_users WHERE lower(username) = lower($1) FOR UPDATE",
            username[:64],
        )
        # Argon2 takes tens of milliseconds of CPU: on a thread (the library releases the GIL),
        # so that a sign-in does not stall every other request this process is serving.
        matches, new_hash = await asyncio.to_thread(
            verify_password, password, row["password_hash"] if row else None
        )
        if row is None:
            await audit.append(
                conn,
                actor=username[:64] or "-",
                action="signin.failed",
                at=now,
                details={"why": "unknown user"},
            )
        elif row["disabled_at"] is not None:
            await audit.append(
                conn,
                actor=row["username"],
                action="signin.failed",
                target=row["username"],
                at=now,
                details={"why": "disabled"},
            )
        elif row["locked_until"] is not None and row["locked_until"] > now:
            # Locked: refused even with the right password, and not counted again.
            await audit.append(
                conn,
                actor=row["username"],
                action="signin.failed",
                target=row["username"],
                at=now,
                details={"why": "locked"},
            )
        elif not matches:
            await _fail(conn, row, now, "password")
        else:
            await conn.execute(
                # With TOTP, the failure count is reset only once the code is right too, so
                # that guessing codes behind a known password still runs into the lockout.
                """UPDATE admin_users SET locked_until = NULL,
                          failed_logins = CASE WHEN totp_secret IS NULL THEN 0
                                               ELSE failed_logins END,
                          password_hash = coalesce($2, password_hash),
                          last_login_at = CASE WHEN totp_secret IS NULL THEN $3
                                               ELSE last_login_at END
                   WHERE user_id = $1""",
                row["user_id"],
                new_hash,
                now,
            )
            needs_code = row["totp_secret"] is not None
            token, csrf = await _open_session(
                conn, row["user_id"], "password" if needs_code else "full", now
            )
            if not needs_code:
                await audit.append(
                    conn, actor=row["username"], action="signin", target=row["username"], at=now
                )
            if address is not None:
                # A right password gives its attempt back: only failures use up the address.
                await conn.execute(
                    """UPDATE admin_signin_throttle SET failures = failures - 1
                       WHERE address = $1 AND window_start = $2 AND failures > 0""",
                    address,
                    window,
                )
            await _prune(conn, now)
            outcome = SignIn(token, csrf, needs_code)
    # The failure is committed (counted, audited) before it is raised.
    if outcome is None:
        raise SignInFailed(SIGN_IN_FAILED)
    return outcome


async def second_factor(db: Database, *, token: str, code: str, now: datetime) -> SignIn:
    """Complete a sign-in with a TOTP code: a new `full` session replaces the `password` one."""
    outcome: SignIn | None = None
    async with db.transaction() as conn:
        session = await conn.fetchrow(
            """SELECT * FROM admin_sessions WHERE token_hash = $1 AND stage = 'password'
                 AND revoked_at IS NULL AND expires_at > $2 FOR UPDATE""",
            token_hash(token),
            now,
        )
        if session is None:
            raise SignInFailed(SIGN_IN_FAILED)
        row = await conn.fetchrow(
            "SELECT * FROM admin_users WHERE user_id = $1 FOR UPDATE", session["user_id"]
        )
        usable = (
            row["disabled_at"] is None
            and not (row["locked_until"] is not None and row["locked_until"] > now)
            and row["totp_secret"] is not None
        )
        step = (
            match_totp(row["totp_secret"], code, now, after_step=row["totp_last_step"])
            if usable
            else None
        )
        await conn.execute(
            "UPDATE admin_sessions SET revoked_at = $2 WHERE token_hash = $1",
            session["token_hash"],
            now,
        )
        if step is None:
            if usable:
                await _fail(conn, row, now, "code")
        else:
            await conn.execute(
                """UPDATE admin_users SET totp_last_step = $2, failed_logins = 0,
                          last_login_at = $3 WHERE user_id = $1""",
                row["user_id"],
                step,
                now,
            )
            new_token, csrf = await _open_session(conn, row["user_id"], "full", now)
            await audit.append(
                conn,
                actor=row["username"],
                action="signin",
                target=row["username"],
                at=now,
                details={"totp": True},
            )
            outcome = SignIn(new_token, csrf, needs_code=False)
    if outcome is None:
        raise SignInFailed(SIGN_IN_FAILED)
    return outcome


async def session_for(db: Database, *, token: str, now: datetime) -> Session | None:
    """The live session for a cookie token (either stage), touching it at most once a minute."""
    hashed = token_hash(token)
    async with db.connection() as conn:
        row = await conn.fetchrow(
            """SELECT s.token_hash, s.stage, s.csrf_token, s.last_seen_at, u.*
               FROM admin_sessions s JOIN admin_users u USING (user_id)
               WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
                 AND s.last_seen_at > $3 AND u.disabled_at IS NULL""",
            hashed,
            now,
            now - timedelta(seconds=SESSION_IDLE_S),
        )
        if row is None:
            return None
        if row["last_seen_at"] < now - timedelta(seconds=SESSION_TOUCH_S):
            await conn.execute(
                "UPDATE admin_sessions SET last_seen_at = $2 WHERE token_hash = $1", hashed, now
            )
    return Session(
        token_hash=bytes(row["token_hash"]),
        user=_user(row),
        stage=row["stage"],
        csrf_token=row["csrf_token"],
        last_seen_at=row["last_seen_at"],
    )


async def sign_out(db: Database, *, token: str, now: datetime) -> None:
    async with db.transaction() as conn:
        username = await conn.fetchval(
            """UPDATE admin_sessions s SET revoked_at = $2 FROM admin_users u
               WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND u.user_id = s.user_id
               RETURNING u.username""",
            token_hash(token),
            now,
        )
        if username is not None:
            await audit.append(conn, actor=username, action="signout", target=username, at=now)


async def prune_sessions(db: Database, *, now: datetime) -> int:
    """Delete sessions that ended a day ago or more (sign-ins stay in the audit log), and old
    address windows; every successful sign-in does this too. Returns the sessions deleted."""
    async with db.transaction() as conn:
        return await _prune(conn, now)
