"""Sign-in is throttled per client address, on top of the per-account lockout: one client that
sprays guesses over many usernames is refused before any password is checked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from console import users
from console.errors import SignInFailed, SignInThrottled
from console.limits import SIGNIN_ADDRESS_FAILURES_MAX, SIGNIN_ADDRESS_WINDOW_S
from console.security import client_address_key
from console.users import Role
from core.clock import FixedClock
from core.database import Database
from tests.console.conftest import PASSWORD, make_user, sign_in
from tests.factories import unique


def an_address() -> str:
    """An IPv6 address in a /64 no other test uses (2001:db8::/32 is for documentation)."""
    block = uuid.uuid4().hex
    return f"2001:db8:{block[:4]}:{block[4:8]}::{block[8:12]}"


@pytest.fixture
async def client_at(app: object) -> AsyncIterator[object]:
    """A browser at a given client address (what the server sees as request.client)."""
    opened: list[httpx.AsyncClient] = []

    def at(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))  # type: ignore[arg-type]
        client = httpx.AsyncClient(transport=transport, base_url="http://console.test")
        opened.append(client)
        return client

    yield at
    for client in opened:
        await client.aclose()


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """A lower limit, for the tests that count attempts (each one costs an Argon2 hash)."""
    monkeypatch.setattr(users, "SIGNIN_ADDRESS_FAILURES_MAX", 4)
    return 4


async def test_an_address_with_too_many_failures_gets_429_even_with_the_right_password(
    client_at, db: Database, clock: FixedClock
):
    user, _ = await make_user(db, Role.OPERATOR)
    address = an_address()
    sprayer = client_at(address)
    # Guesses spread over many usernames: no account gets near its own lockout.
    for _ in range(SIGNIN_ADDRESS_FAILURES_MAX):
        refused = await sign_in(sprayer, unique("guess"), "not the password at all")
        assert refused.status_code == 400
        assert "Sign-in failed" in refused.text

    throttled = await sign_in(sprayer, user.username, PASSWORD)
    assert throttled.status_code == 429
    assert "Too many failed sign-ins from your address" in throttled.text
    retry_after = int(throttled.headers["Retry-After"])
    assert 0 < retry_after <= SIGNIN_ADDRESS_WINDOW_S
    assert "alliance_console_session" not in sprayer.cookies
    # The password was never looked at: the account has no failure, and no sign-in was audited.
    assert (await users.get_user(db, user.username)).failed_logins == 0
    async with db.connection() as conn:
        actions = await conn.fetch(
            "SELECT action, details FROM audit_log WHERE actor = $1 OR target = $2 ORDER BY seq",
            client_address_key(address),
            user.username,
        )
    assert [row["action"] for row in actions] == ["user.create", "signin.throttled"]
    assert actions[1]["details"]["failures"] == SIGNIN_ADDRESS_FAILURES_MAX

    # Another address (another /64) is not affected.
    elsewhere = await sign_in(client_at(an_address()), user.username)
    assert elsewhere.status_code == 303

    # Nor is the same address once its window is over.
    clock.advance(timedelta(seconds=retry_after))
    again = await sign_in(sprayer, user.username)
    assert again.status_code == 303
    assert (await sprayer.get("/console/")).status_code == 200


async def test_addresses_in_one_ipv6_64_share_a_count(client_at, db: Database, clock: FixedClock):
    user, _ = await make_user(db, Role.VIEWER)
    first = an_address()
    prefix = first.rsplit("::", 1)[0]
    for n in range(SIGNIN_ADDRESS_FAILURES_MAX):
        # A new address in the /64 for every guess.
        client = client_at(f"{prefix}:{n + 1:x}:0:0:1")
        assert (await sign_in(client, unique("guess"), "wrong password here")).status_code == 400
    assert (await sign_in(client_at(first), user.username)).status_code == 429


async def test_right_passwords_do_not_use_up_the_address(
    db: Database, clock: FixedClock, small_limit: int
):
    user, _ = await make_user(db, Role.VIEWER)
    address = client_address_key(an_address())
    for _ in range(small_limit + 2):
        await users.sign_in(
            db, username=user.username, password=PASSWORD, now=clock.now(), address=address
        )
    for _ in range(small_limit):
        with pytest.raises(SignInFailed):
            await users.sign_in(
                db, username=unique("nobody"), password=PASSWORD, now=clock.now(), address=address
            )
    with pytest.raises(SignInThrottled):
        await users.sign_in(
            db, username=user.username, password=PASSWORD, now=clock.now(), address=address
        )


async def test_concurrent_guesses_cannot_get_past_the_limit(
    db: Database, clock: FixedClock, small_limit: int
):
    address = client_address_key(an_address())
    guesses = small_limit + 12

    async def guess() -> str:
        try:
            await users.sign_in(
                db, username=unique("nobody"), password=PASSWORD, now=clock.now(), address=address
            )
        except SignInThrottled:
            return "throttled"
        except SignInFailed:
            return "failed"
        return "signed in"

    outcomes = await asyncio.gather(*(guess() for _ in range(guesses)))
    assert outcomes.count("failed") == small_limit
    assert outcomes.count("throttled") == guesses - small_limit
    async with db.connection() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'signin.throttled' AND actor = $1",
            address,
        )
    assert audited == 1


def test_the_address_key_is_the_ipv4_address_or_the_ipv6_64():
    assert client_address_key("198.51.100.7") == "198.51.100.7"
    assert client_address_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_address_key("2001:db8:1:2:bbbb:cccc:dddd:eeee") == "2001:db8:1:2::/64"
    assert client_address_key("2001:db8:1:3::1") != client_address_key("2001:db8:1:2::1")
    assert client_address_key(None) == "unknown"
    assert client_address_key("x" * 100) == "x" * 64
