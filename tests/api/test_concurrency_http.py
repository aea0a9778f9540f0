"""RELIABILITY L1 over HTTP with signed requests: the races of tests/exchange/test_concurrency.py
driven through the whole merchant API (gateway, RFC 9421 verification, nonces, rate limit,
idempotency, routes, problems, response signing) instead of calling the ledger.

- 200 concurrent `POST /v1/redemptions` of 10 against a member holding 100, each under its own
  Idempotency-Key -> exactly 10 answers 201 and 190 answers 409 `insufficient_points`, nothing
  else (no 5xx, no 429); the balance is 0; the redeemed points add up to exactly 100; the books
  balance for that member.
- 200 concurrent `POST /v1/issuances` of 10 against an issuer whose liability limit fits N of
  them -> exactly N answers 201 and 200 - N answers 409 `liability_limit_exceeded`; the exposure
  is exactly the limit, never over it.

Every request is signed by the partner's Ed25519 key with a fresh nonce (tests/api/conftest.py's
`call`) and verified by the gateway before any route runs (test_verification_meta.py shows the
gateway refuses what it cannot verify). The app runs in process behind httpx's ASGI transport,
which has no connection pool to queue requests behind: all 200 are in flight at once and contend
for the database pool (TEST_POOL_MAX, 40 by default), so up to that many transactions race for
the member's account lock or the issuer's headroom. Each round records the peak of requests in
flight and of pool connections busy, and asserts the requests overlapped.

Each race fails if the lock under it does not hold: with the member account read without its
row lock, the lots' CHECK constraint turns the overdrafts into about 40 answers 500; with the
issuer's headroom checked without the slot locks, 3 to 9 issuances too many are answered 201.

Rounds: the environment variable L1_ROUNDS, as for the ledger-level races, with a default of 2
here rather than 5. The ledger-level races (where the locks are) already run 5 rounds at CI; over
HTTP two rounds show that the API stack neither serialises the requests nor loses the outcome of
a race (a 5xx, a wrong code, a success answered as a refusal) at two headroom sizes, for about a
second per race of signing and verifying 200 requests on a shared CI machine.
`L1_ROUNDS=100` runs 100 rounds of each (the nightly tier).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.types import ASGIApp, Receive, Scope, Send

from core.database import Database
from exchange.reconcile import verify
from tests.api.conftest import AUTHORITY, Partner, call, make_partner
from tests.api.test_error_codes import assert_problem, enrol, issuance, post
from tests.api.writes import transactions_of_merchant
from tests.exchange.helpers import assert_books_balance, measured, obligations_between

ROUNDS = int(os.environ.get("L1_ROUNDS", "2"))
RACERS = 200
POINTS = 10
HELD = 100
# Headroom sizes for the issuance race, one per round in turn: none aligned to the pool size.
LIMIT_SIZES = (37, 150, 1, 190, 80)


@dataclass
class InFlight:
    """An ASGI wrapper that counts the requests in the app at once and the pool connections busy
    when each arrives and leaves: the evidence that the requests really raced."""

    app: ASGIApp
    db: Database
    now: int = 0
    peak: int = 0
    peak_busy: int = 0
    statuses: Counter[int] = field(default_factory=Counter)

    def busy(self) -> int:
        pool = self.db.pool
        return pool.get_size() - pool.get_idle_size()

    def reset(self) -> None:
        self.peak = self.peak_busy = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.peak_busy = max(self.peak_busy, self.busy())
        try:
            await self.app(scope, receive, send)
        finally:
            self.peak_busy = max(self.peak_busy, self.busy())
            self.now -= 1


@pytest.fixture
async def in_flight(app, db) -> InFlight:
    return InFlight(app, db)


@pytest.fixture
async def client(in_flight):
    """As tests/api/conftest.py's, through the counter, and a server error comes back as the
    500 a partner would see (counted, and failing the test) instead of being raised into it."""
    transport = httpx.ASGITransport(app=in_flight, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://{AUTHORITY}", timeout=120
    ) as client:
        yield client


def by_status(responses: list[httpx.Response]) -> dict[int, list[httpx.Response]]:
    grouped: dict[int, list[httpx.Response]] = {}
    for response in responses:
        grouped.setdefault(response.status_code, []).append(response)
    return grouped


def report(name: str, responses: list[httpx.Response], seconds: float, flight: InFlight) -> None:
    """One line per race, shown with `-s` (or in the captured output of a failure)."""
    statuses = dict(sorted(Counter(r.status_code for r in responses).items()))
    print(  # noqa: T201
        f"\n{name}: {statuses} in {seconds:.2f} s; peak {flight.peak} requests in flight, "
        f"{flight.peak_busy} pool connections busy"
    )


async def race(
    client: httpx.AsyncClient, partner: Partner, clock, flight: InFlight, path: str, bodies
) -> tuple[list[httpx.Response], float]:
    """Every body POSTed at once, each signed with its own nonce under its own key."""
    flight.reset()
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(call(client, partner, clock, "POST", path, json_body=body) for body in bodies)
    )
    return list(responses), time.perf_counter() - started


async def lot_floor(db: Database, member_id: str) -> int:
    async with db.connection() as conn:
        lowest: int = await conn.fetchval(
            "SELECT coalesce(min(remaining_points), 0) FROM lots WHERE member_id = $1", member_id
        )
    return lowest


async def redeemed_points(db: Database, merchant_id: str) -> int:
    async with db.connection() as conn:
        total: int = await conn.fetchval(
            """SELECT coalesce(sum(points), 0) FROM transactions
               WHERE merchant_id = $1 AND kind = 'redemption'""",
            merchant_id,
        )
    return total


@pytest.mark.parametrize("round_no", range(ROUNDS))
async def test_200_signed_concurrent_redemptions_of_10_from_100_make_exactly_10(
    db, client, clock, in_flight, round_no
):
    tea, books, shop = [await make_partner(db) for _ in range(3)]
    member = await enrol(client, shop, clock)
    # The gateway verifies signatures in this app: the shop's key id with another private key.
    forged = Partner(shop.merchant_id, shop.key_id, Ed25519PrivateKey.generate())
    assert_problem(
        await post(client, forged, clock, "/v1/redemptions", issuance(member, POINTS)),
        401,
        "signature_invalid",
    )
    # 100 points in four lots of two issuers, so the redemptions span lots and owe two issuers.
    for issuer in (tea, books, tea, books):
        issued = await post(client, issuer, clock, "/v1/issuances", issuance(member, HELD // 4))
        assert issued.status_code == 201, issued.text

    responses, seconds = await race(
        client, shop, clock, in_flight, "/v1/redemptions", [issuance(member, POINTS)] * RACERS
    )
    report(f"redemptions, round {round_no}", responses, seconds, in_flight)

    grouped = by_status(responses)
    assert sorted(grouped) == [201, 409], Counter(r.status_code for r in responses)
    successes, refusals = grouped[201], grouped[409]
    assert (len(successes), len(refusals)) == (HELD // POINTS, RACERS - HELD // POINTS)
    for refusal in refusals:
        assert_problem(refusal, 409, "insufficient_points")
    bodies = [response.json() for response in successes]
    assert {(b["kind"], b["merchant_id"], b["member_id"]) for b in bodies} == {
        ("redemption", shop.merchant_id, member)
    }
    assert sum(b["points"] for b in bodies) == HELD
    assert sorted(b["balance_after"] for b in bodies) == list(range(0, HELD, POINTS))
    assert len({b["transaction_id"] for b in bodies}) == len(bodies)
    # The requests overlapped in the app and in the database, not one after another.
    assert in_flight.peak > 1
    assert in_flight.peak_busy > 1

    balance = await call(client, shop, clock, "GET", f"/v1/members/{member}/balance")
    assert balance.status_code == 200, balance.text
    assert (balance.json()["available"], balance.json()["held"]) == (0, 0)
    assert await lot_floor(db, member) == 0
    assert await redeemed_points(db, shop.merchant_id) == HELD
    assert await transactions_of_merchant(db, shop.merchant_id) == HELD // POINTS
    for issuer in (tea, books):  # each issuer owes the shop exactly the 50 points it issued
        owed = await obligations_between(db, issuer.merchant_id, shop.merchant_id)
        assert owed["points"] == HELD // 2
    await assert_books_balance(db, [member])
    assert await verify(db) == []


@pytest.mark.parametrize("round_no", range(ROUNDS))
async def test_200_signed_concurrent_issuances_never_pass_the_liability_limit(
    db, client, clock, in_flight, round_no
):
    fits = LIMIT_SIZES[round_no % len(LIMIT_SIZES)]
    tea = await make_partner(db, liability_limit=POINTS * fits)
    # 20 members, 10 issuances each: the race is on the issuer's headroom and, ten at a time,
    # on each member's account too.
    members = [await enrol(client, tea, clock) for _ in range(20)]

    bodies = [issuance(members[index % len(members)], POINTS) for index in range(RACERS)]
    responses, seconds = await race(client, tea, clock, in_flight, "/v1/issuances", bodies)
    report(f"issuances, limit fits {fits}, round {round_no}", responses, seconds, in_flight)

    grouped = by_status(responses)
    assert set(grouped) <= {201, 409}, Counter(r.status_code for r in responses)
    successes, refusals = grouped.get(201, []), grouped.get(409, [])
    assert (len(successes), len(refusals)) == (fits, RACERS - fits)
    for refusal in refusals:
        assert_problem(refusal, 409, "liability_limit_exceeded")
    assert sum(response.json()["points"] for response in successes) == POINTS * fits
    assert in_flight.peak > 1
    assert in_flight.peak_busy > 1

    exposed = await measured(db, clock, tea.merchant_id)
    assert exposed.total == POINTS * fits  # the whole limit, and not a point over it
    assert exposed.headroom == 0
    assert await transactions_of_merchant(db, tea.merchant_id) == fits
    one_more = await post(client, tea, clock, "/v1/issuances", issuance(members[0], 1))
    assert_problem(one_more, 409, "liability_limit_exceeded")
    balances = [
        (await call(client, tea, clock, "GET", f"/v1/members/{member}/balance")).json()
        for member in members
    ]
    assert sum(balance["available"] for balance in balances) == POINTS * fits
    await assert_books_balance(db, members)
    assert await verify(db) == []
