"""The RBAC matrix: every role x every state-changing console action, over HTTP.

Where the matrix comes from (nothing here is a hand copy of the code's rules):

- The actions are the console's own POST routes, read from the route table of the console the
  app builds (`console.app.build_console`); one route that takes a `change` path parameter
  (`/users/{username}/{change}`) is one action per change its handler knows, read from the
  handler's source.
- Who may do each is read from the code that enforces it: the view's own gate
  (`view.is_accessible`, run for each role) and the `require(request, Role.X)` call in the
  handler (read from its source; a handler without one is open to every signed-in role).
- Each cell is then tried for real: a user of that role signs in and posts the form with the
  session's CSRF token. Allowed: the change happens. Denied: 403, the change does not happen, and
  the actor has no new audit entry.

What the matrix is checked *against* is docs/console.md's role table (SPECIFIED below, the
only hand-written part, and meant to be: it is the specification). A new POST route fails
`test_the_matrix_covers_every_post_route_and_matches_the_specification` until it is specified
here and given a case below.

Not in the matrix: `login` and `second_factor` (sign-in itself, before any role: tests in
test_auth.py), and the library's generic model routes (`/{key}/create`, `/_api/{key}/action`,
...), which serve ModelViews: the console registers none, so they refuse every role
(`test_the_librarys_model_routes_change_nothing_for_any_role`).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import inspect
import re
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from console import adjustments, users
from console.app import build_console
from console.security import new_totp_secret, totp_code
from console.users import Role, User
from console.web import ConsoleUser
from core.clock import FixedClock
from core.database import Database
from exchange.service import Ledger
from merchants import service as merchant_service
from settlement import service as settlement_service
from tests.console.conftest import PASSWORD, SECRET, make_user, sign_in, token_for
from tests.factories import issue, make_member, make_merchant, unique

ROLES = list(Role)

# docs/console.md, "role | can": viewer reads (and uses their own account: My account, sign
# out, re-verify the audit chain they can read); operator also changes merchants, adjustments and
# settlement; admin also manages console users.
SPECIFIED: dict[str, Role] = {
    "merchant_create": Role.OPERATOR,
    "merchant_status": Role.OPERATOR,
    "merchant_limit": Role.OPERATOR,
    "merchant_key_add": Role.OPERATOR,
    "merchant_key_revoke": Role.OPERATOR,
    "adjustment_credit": Role.OPERATOR,
    "adjustment_reversal": Role.OPERATOR,
    "adjustment_approve": Role.OPERATOR,
    "adjustment_reject": Role.OPERATOR,
    "settlement_run": Role.OPERATOR,
    "user_create": Role.ADMIN,
    "user_change:role": Role.ADMIN,
    "user_change:unlock": Role.ADMIN,
    "user_change:disable": Role.ADMIN,
    "user_change:enable": Role.ADMIN,
    "user_change:password": Role.ADMIN,
    "user_change:totp-reset": Role.ADMIN,
    "account_password": Role.VIEWER,
    "account_totp": Role.VIEWER,
    "account_totp_disable": Role.VIEWER,
    "audit_verify": Role.VIEWER,
    "logout": Role.VIEWER,
}
SIGN_IN_ROUTES = {"login", "second_factor"}
LIBRARY_MODEL_ROUTES = {"create", "edit", "inline-edit", "import", "action", "row-action"}


# --- the matrix, read from the code --------------------------------------------------------


def _routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    found: list[tuple[str, Route]] = []
    for route in routes:
        if isinstance(route, Mount):
            found += _routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            found.append((prefix + route.path, route))
    return found


def _required_role(handler: Callable[..., Any]) -> Role | None:
    """The role in the handler's `require(request, Role.X)` call, if it has one."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    roles = [
        Role[node.args[1].attr]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "require"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Attribute)
        and isinstance(node.args[1].value, ast.Name)
        and node.args[1].value.id == "Role"
    ]
    assert len(set(roles)) <= 1, f"{handler.__qualname__} requires several roles: {roles}"
    return roles[0] if roles else None


def _changes(handler: Callable[..., Any]) -> list[str]:
    """The values the handler compares its `change` parameter with (`==` or `in (...)`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
    values: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name):
            if node.left.id != "change":
                continue
            for comparator in node.comparators:
                if isinstance(comparator, ast.Constant) and isinstance(comparator.value, str):
                    values.append(comparator.value)
                elif isinstance(comparator, ast.Tuple | ast.List | ast.Set):
                    values += [
                        element.value
                        for element in comparator.elts
                        if isinstance(element, ast.Constant) and isinstance(element.value, str)
                    ]
    return list(dict.fromkeys(values))


def _as(role: Role) -> Any:
    """Just enough of a request for a view's `is_accessible`: the signed-in user's role."""
    return SimpleNamespace(state=SimpleNamespace(admin_user=ConsoleUser(username="x", role=role)))


@dataclass(frozen=True)
class Action:
    name: str
    route: str
    allowed: frozenset[Role]


def _matrix() -> tuple[dict[str, Action], set[str]]:
    """Every role-gated POST action of the console with the roles its code allows, and the
    names of all POST routes of the console (to check that none is left out)."""
    host = Starlette()
    admin = build_console(host, secret_key=SECRET)
    post_routes = {
        route.name
        for path, route in _routes(host.routes)
        if path.startswith("/console") and "POST" in (route.methods or ())
    }
    actions: dict[str, Action] = {}
    for view in admin._views:
        for attribute in dir(type(view)):
            function = getattr(type(view), attribute, None)
            if function is None or not hasattr(function, "_route_path"):
                continue
            if "POST" not in function._route_methods:
                continue
            is_primary = function._route_path == ""
            name = function._route_name or (
                view.route_name if is_primary and view.route_name else function.__name__
            )
            if name in SIGN_IN_ROUTES:
                continue
            needed = _required_role(function)
            allowed = frozenset(
                role
                for role in ROLES
                if view.is_accessible(_as(role)) and (needed is None or role.allows(needed))
            )
            path = view.path.rstrip("/") + function._route_path
            if "{change}" in path:
                for change in _changes(function):
                    actions[f"{name}:{change}"] = Action(f"{name}:{change}", path, allowed)
            else:
                actions[name] = Action(name, path, allowed)
    # Sign-out is the library's route (AuthProvider.render_logout): any signed-in user.
    actions["logout"] = Action("logout", "/logout", frozenset(ROLES))
    return actions, post_routes


ACTIONS, POST_ROUTES = _matrix()


def _minimum(allowed: frozenset[Role]) -> Role | None:
    ranked = sorted(allowed, key=lambda role: role.rank)
    if not ranked or any(role.rank > ranked[0].rank and role not in allowed for role in ROLES):
        return None
    return ranked[0]


def test_the_matrix_covers_every_post_route_and_matches_the_specification():
    action_routes = {name.split(":")[0] for name in ACTIONS}
    assert POST_ROUTES - SIGN_IN_ROUTES - LIBRARY_MODEL_ROUTES == action_routes
    assert set(ACTIONS) == set(SPECIFIED), "specify (and give a case to) every console action"
    assert set(ACTIONS) == set(CASES)
    for name, action in ACTIONS.items():
        # Allowed from a rank up, never to a lower rank but not a higher one.
        assert _minimum(action.allowed) == SPECIFIED[name], name
    # The matrix is not trivial: each role is refused something, but for admins.
    for role in ROLES:
        refused = [name for name, action in ACTIONS.items() if role not in action.allowed]
        assert bool(refused) is (role is not Role.ADMIN), (role, refused)


# --- one case per action: what to post, and what it changes --------------------------------


@dataclass
class Env:
    db: Database
    ledger: Ledger
    clock: FixedClock
    actor: User
    monkeypatch: pytest.MonkeyPatch


@dataclass
class Attempt:
    path: str
    data: dict[str, str]
    state: Callable[[], Awaitable[Any]]
    """What the action changes, read from the database."""
    done: Callable[[Any, Any], bool]
    """Whether (before, after) shows the action done."""


async def _value(db: Database, sql: str, *args: Any) -> Any:
    async with db.connection() as conn:
        return await conn.fetchval(sql, *args)


def _reader(db: Database, sql: str, *args: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: _value(db, sql, *args)


def _public_key_b64() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


async def merchant_create(env: Env) -> Attempt:
    name = unique("RBAC shop")
    return Attempt(
        "/console/merchants/create",
        {"name": name, "liability_limit": "1000"},
        _reader(env.db, "SELECT count(*) FROM merchants WHERE name = $1", name),
        lambda before, after: after == 1,
    )


async def merchant_status(env: Env) -> Attempt:
    merchant_id = await make_merchant(env.db)
    return Attempt(
        f"/console/merchants/{merchant_id}/status",
        {"action": "suspend"},
        _reader(env.db, "SELECT status FROM merchants WHERE merchant_id = $1", merchant_id),
        lambda before, after: after == "suspended",
    )


async def merchant_limit(env: Env) -> Attempt:
    merchant_id = await make_merchant(env.db, liability_limit=10**12)
    return Attempt(
        f"/console/merchants/{merchant_id}/limit",
        {"liability_limit": "1234.56"},
        _reader(
            env.db, "SELECT liability_limit FROM merchants WHERE merchant_id = $1", merchant_id
        ),
        lambda before, after: after != before,
    )


async def merchant_key_add(env: Env) -> Attempt:
    merchant_id = await make_merchant(env.db)
    return Attempt(
        f"/console/merchants/{merchant_id}/keys",
        {"public_key": _public_key_b64()},
        _reader(env.db, "SELECT count(*) FROM merchant_keys WHERE merchant_id = $1", merchant_id),
        lambda before, after: after == before + 1,
    )


async def merchant_key_revoke(env: Env) -> Attempt:
    merchant_id = await make_merchant(env.db)
    key = await merchant_service.add_key(
        env.db,
        merchant_id=merchant_id,
        public_key=base64.b64decode(_public_key_b64()),
        now=env.clock.now() - timedelta(days=1),
    )
    return Attempt(
        f"/console/merchants/{merchant_id}/keys/{key.key_id}/revoke",
        {},
        _reader(env.db, "SELECT revoked_at FROM merchant_keys WHERE key_id = $1", key.key_id),
        lambda before, after: before is None and after is not None,
    )


async def adjustment_credit(env: Env) -> Attempt:
    merchant_id, member_id = await make_merchant(env.db), await make_member(env.ledger)
    return Attempt(
        "/console/adjustments/credit",
        {"merchant_id": merchant_id, "member_id": member_id, "points": "10", "reason": "rbac"},
        _reader(env.db, "SELECT count(*) FROM adjustments WHERE member_id = $1", member_id),
        lambda before, after: after == 1,
    )


async def adjustment_reversal(env: Env) -> Attempt:
    merchant_id, member_id = await make_merchant(env.db), await make_member(env.ledger)
    issued = await issue(env.ledger, merchant_id, member_id, 100)
    transaction_id = str(issued["transaction_id"])
    return Attempt(
        "/console/adjustments/reversal",
        {"transaction_id": transaction_id, "points": "10", "reason": "rbac"},
        _reader(
            env.db, "SELECT count(*) FROM adjustments WHERE transaction_id = $1", transaction_id
        ),
        lambda before, after: after == 1,
    )


async def _pending_credit(env: Env) -> str:
    """A credit proposed by another operator (the actor may decide it: four eyes)."""
    proposer, _ = await make_user(env.db, Role.OPERATOR)
    proposal = await adjustments.propose_credit(
        env.db,
        merchant_id=await make_merchant(env.db),
        member_id=await make_member(env.ledger),
        points=10,
        reason="rbac",
        expires_at=None,
        proposer=proposer,
        now=env.clock.now(),
    )
    return proposal.adjustment_id


async def adjustment_approve(env: Env) -> Attempt:
    adjustment_id = await _pending_credit(env)
    return Attempt(
        f"/console/adjustments/{adjustment_id}/approve",
        {},
        _reader(env.db, "SELECT status FROM adjustments WHERE adjustment_id = $1", adjustment_id),
        lambda before, after: after == "posted",
    )


async def adjustment_reject(env: Env) -> Attempt:
    adjustment_id = await _pending_credit(env)
    return Attempt(
        f"/console/adjustments/{adjustment_id}/reject",
        {},
        _reader(env.db, "SELECT status FROM adjustments WHERE adjustment_id = $1", adjustment_id),
        lambda before, after: after == "rejected",
    )


async def settlement_run(env: Env) -> Attempt:
    # The shared database holds every suite's history: the run itself is replaced by one that
    # settles nothing. What is checked is that the job starts (or not), which is the action.
    async def settles_nothing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"runs": []}

    env.monkeypatch.setattr(settlement_service, "run_settlement", settles_nothing)
    return Attempt(
        "/console/settlement/run",
        {"confirm": "yes"},
        _reader(
            env.db,
            "SELECT count(*) FROM settlement_jobs WHERE started_by = $1",
            env.actor.username,
        ),
        lambda before, after: after == 1,
    )


async def audit_verify(env: Env) -> Attempt:
    # Re-verifying changes nothing stored: success is the page saying how the chain stands.
    return Attempt("/console/audit/verify", {}, _reader(env.db, "SELECT 0"), lambda b, a: True)


async def user_create(env: Env) -> Attempt:
    username = unique("rbac").lower().replace("_", "-")
    return Attempt(
        "/console/users/create",
        {"username": username, "password": "a long enough password", "role": "viewer"},
        _reader(env.db, "SELECT count(*) FROM admin_users WHERE username = $1", username),
        lambda before, after: after == 1,
    )


def _user_change(
    change: str,
    column_sql: str,
    done: Callable[[Any, Any], bool],
    *,
    data: dict[str, str] | None = None,
    prepare: Callable[[Env, User], Awaitable[None]] | None = None,
    with_totp: bool = False,
) -> Callable[[Env], Awaitable[Attempt]]:
    async def case(env: Env) -> Attempt:
        target, _ = await make_user(env.db, Role.VIEWER, with_totp=with_totp)
        if prepare is not None:
            await prepare(env, target)
        return Attempt(
            f"/console/users/{target.username}/{change}",
            data or {},
            _reader(
                env.db, f"SELECT {column_sql} FROM admin_users WHERE user_id = $1", target.user_id
            ),
            done,
        )

    return case


async def _lock(env: Env, target: User) -> None:
    async with env.db.connection() as conn:
        await conn.execute(
            "UPDATE admin_users SET locked_until = $2 WHERE user_id = $1",
            target.user_id,
            env.clock.now() + timedelta(hours=1),
        )


async def _disable(env: Env, target: User) -> None:
    await users.set_disabled(
        env.db, username=target.username, disabled=True, actor="test", now=env.clock.now()
    )


async def account_password(env: Env) -> Attempt:
    return Attempt(
        "/console/account/password",
        {"current": PASSWORD, "password": "a brand new long password"},
        _reader(
            env.db, "SELECT password_hash FROM admin_users WHERE user_id = $1", env.actor.user_id
        ),
        lambda before, after: after != before,
    )


async def account_totp(env: Env) -> Attempt:
    secret = new_totp_secret()
    return Attempt(
        "/console/account/totp",
        {"secret": secret, "code": totp_code(secret, env.clock.now())},
        _reader(
            env.db, "SELECT totp_secret FROM admin_users WHERE user_id = $1", env.actor.user_id
        ),
        lambda before, after: before is None and after == secret,
    )


async def account_totp_disable(env: Env) -> Attempt:
    secret = new_totp_secret()
    earlier = env.clock.now() - timedelta(minutes=5)
    await users.enable_totp(
        env.db,
        username=env.actor.username,
        secret=secret,
        code=totp_code(secret, earlier),
        actor="test",
        now=earlier,
    )
    return Attempt(
        "/console/account/totp/disable",
        {"current": PASSWORD},
        _reader(
            env.db, "SELECT totp_secret FROM admin_users WHERE user_id = $1", env.actor.user_id
        ),
        lambda before, after: before == secret and after is None,
    )


async def logout(env: Env) -> Attempt:
    return Attempt(
        "/console/logout",
        {},
        _reader(
            env.db,
            "SELECT count(*) FROM admin_sessions WHERE user_id = $1 AND revoked_at IS NULL",
            env.actor.user_id,
        ),
        lambda before, after: before == 1 and after == 0,
    )


CASES: dict[str, Callable[[Env], Awaitable[Attempt]]] = {
    "merchant_create": merchant_create,
    "merchant_status": merchant_status,
    "merchant_limit": merchant_limit,
    "merchant_key_add": merchant_key_add,
    "merchant_key_revoke": merchant_key_revoke,
    "adjustment_credit": adjustment_credit,
    "adjustment_reversal": adjustment_reversal,
    "adjustment_approve": adjustment_approve,
    "adjustment_reject": adjustment_reject,
    "settlement_run": settlement_run,
    "audit_verify": audit_verify,
    "user_create": user_create,
    "user_change:role": _user_change(
        "role", "role", lambda before, after: after == "operator", data={"role": "operator"}
    ),
    "user_change:unlock": _user_change(
        "unlock",
        "locked_until",
        lambda before, after: before is not None and after is None,
        prepare=_lock,
    ),
    "user_change:disable": _user_change(
        "disable", "disabled_at", lambda before, after: before is None and after is not None
    ),
    "user_change:enable": _user_change(
        "enable",
        "disabled_at",
        lambda before, after: before is not None and after is None,
        prepare=_disable,
    ),
    "user_change:password": _user_change(
        "password",
        "password_hash",
        lambda before, after: after != before,
        data={"password": "another long enough password"},
    ),
    "user_change:totp-reset": _user_change(
        "totp-reset",
        "totp_secret IS NOT NULL",
        lambda before, after: before is True and after is False,
        with_totp=True,
    ),
    "account_password": account_password,
    "account_totp": account_totp,
    "account_totp_disable": account_totp_disable,
    "logout": logout,
}


# --- the cells -----------------------------------------------------------------------------


async def _audit_entries_by(db: Database, username: str) -> int:
    count: int = await _value(db, "SELECT count(*) FROM audit_log WHERE actor = $1", username)
    return count


async def _settlement_jobs_end(db: Database, username: str) -> None:
    """Wait for the actor's job to end, so the next cell's start is not refused as running."""
    for _ in range(600):
        running = await _value(
            db,
            "SELECT count(*) FROM settlement_jobs WHERE started_by = $1 AND finished_at IS NULL",
            username,
        )
        if running == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the settlement job did not end")


@pytest.mark.parametrize(
    ("action", "role"),
    [(name, role) for name in sorted(ACTIONS) for role in ROLES],
    ids=lambda value: value if isinstance(value, str) else value.value,
)
async def test_rbac_cell(
    action: str,
    role: Role,
    web: httpx.AsyncClient,
    db: Database,
    ledger: Ledger,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
):
    allowed = role in ACTIONS[action].allowed
    actor, _ = await make_user(db, role)
    assert (await sign_in(web, actor.username)).status_code == 303
    attempt = await CASES[action](Env(db, ledger, clock, actor, monkeypatch))
    pattern = re.sub(r"\{[^}]+\}", "[^/]+", "/console" + ACTIONS[action].route)
    assert re.fullmatch(pattern, attempt.path), (attempt.path, ACTIONS[action].route)
    if ":" in action:
        assert attempt.path.endswith("/" + action.partition(":")[2])
    token = await token_for(web, "/console/account")  # a page every role may read
    before = await attempt.state()
    audit_before = await _audit_entries_by(db, actor.username)

    response = await web.post(attempt.path, data={**attempt.data, "csrftoken": token})

    after = await attempt.state()
    if allowed:
        assert response.status_code == 303, (response.status_code, response.text[:300])
        assert attempt.done(before, after), (before, after)
        if action == "settlement_run":
            await _settlement_jobs_end(db, actor.username)
        if action == "audit_verify":
            page = await web.get(response.headers["location"])
            assert "The audit chain" in page.text
    else:
        assert response.status_code == 403, (response.status_code, response.text[:300])
        assert after == before
        assert not attempt.done(before, after)
        assert await _audit_entries_by(db, actor.username) == audit_before


async def test_the_librarys_model_routes_change_nothing_for_any_role(
    web: httpx.AsyncClient, db: Database
):
    """starlette-admin's generic create/edit/import/action routes need a ModelView, and the
    console registers none: even an admin with a valid token gets 404 there."""
    admin, _ = await make_user(db, Role.ADMIN)
    assert (await sign_in(web, admin.username)).status_code == 303
    token = await token_for(web, "/console/account")
    for path in (
        "/console/admin_users/create",
        "/console/admin_users/edit?pks=x",
        "/console/_api/admin_users/inline-edit",
        "/console/_api/admin_users/import",
        "/console/_api/admin_users/action?name=delete&pks=x",
        "/console/_api/admin_users/row-action?name=delete&pk=x",
    ):
        response = await web.post(path, data={"csrftoken": token})
        assert response.status_code == 404, (path, response.status_code)
