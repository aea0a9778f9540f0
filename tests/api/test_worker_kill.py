"""RELIABILITY I4 and D2: a crash at any point leaves the books balanced, and a retry finishes the
work. Real `alliance serve` processes (tests/api/test_two_servers.py), real sockets, real kills.

- I4: a worker ends itself right after a COMMIT, before its answer (the test hook
  `ALLIANCE_FAULT_EXIT_AFTER_COMMIT`, exchange/faults.py). The client's connection drops; its
  retry with the same Idempotency-Key, on a server that lives, returns the original transaction,
  and the ledger holds it once.
- D2: clients keep sending keyed operations while the worker is killed (`kill -9`, or the hook
  at a random commit) and restarted; each client retries every unanswered operation with its key
  until answered. Every key ends in exactly one state (applied once, or refused once), the
  members' balances are what the clients were told, and `verify()` finds no break.

How many: `WORKER_KILL_POINTS` injected points at each of the 1st and the 3rd commit for I4
(CI 3; nightly 100, so 200 points) and `WORKER_KILL_KILLS` kills in D2 (CI 3; nightly 50).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import SystemClock
from core.database import Database
from exchange.faults import EXIT_AFTER_COMMIT_VARIABLE, EXIT_STATUS
from exchange.reconcile import verify
from merchants import repository as merchant_repository
from tests.api.conftest import Partner, make_partner, signed_headers
from tests.api.test_two_servers import Server, start, stop, wait_until_ready
from tests.conftest import migrated_database
from tests.factories import DEFAULT_SETTINGS, unique

POINTS = int(os.environ.get("WORKER_KILL_POINTS", "3"))
"""Injected crash points for each N of I4 (nightly: 100)."""
KILLS = int(os.environ.get("WORKER_KILL_KILLS", "3"))
"""Worker kills under load in D2 (nightly: 50)."""
SEED = int(os.environ.get("WORKER_KILL_SEED", str(random.randrange(2**32))))
"""The kill schedule's seed, printed on failure; set it to replay one."""

CLOCK = SystemClock()  # the servers read the system clock; so does the signature
REQUEST_TIMEOUT_S = 10.0
CONVERGE_TIMEOUT_S = 90.0
"""How long one operation may stay unanswered across kills and restarts before the test fails."""
STARTING_POINTS = 1_000


# --- processes ---------------------------------------------------------------------------------


class Fleet:
    """Every server a test starts, each stopped (and reaped) when the test ends, pass or fail."""

    def __init__(self, database_url: str, logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.database_url, self.logs, self.monkeypatch = database_url, logs, monkeypatch
        self.servers: list[Server] = []

    def start(self, name: str, *, exit_after_commit: int | None = None) -> Server:
        """A server, not yet ready; with the test hook set to end it after that many commits."""
        with self.monkeypatch.context() as patch:  # `start` copies os.environ for the child
            if exit_after_commit is None:
                patch.delenv(EXIT_AFTER_COMMIT_VARIABLE, raising=False)
            else:
                patch.setenv(EXIT_AFTER_COMMIT_VARIABLE, str(exit_after_commit))
            server = start(name, self.database_url, self.logs)
        self.servers.append(server)
        return server

    def ready(self, name: str, *, exit_after_commit: int | None = None) -> Server:
        server = self.start(name, exit_after_commit=exit_after_commit)
        wait_until_ready(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                stop(server)
            if server.process.poll() is None:  # pragma: no cover - stop() kills after 15 s
                server.process.kill()
                server.process.wait(timeout=15)


@contextlib.contextmanager
def fleet(database_url: str, logs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    servers = Fleet(database_url, logs, monkeypatch)
    try:
        yield servers
    finally:
        servers.stop_all()


def exit_status(server: Server, timeout_s: float = 15.0) -> int:
    try:
        return server.process.wait(timeout=timeout_s)
    except Exception:
        pytest.fail(f"server {server.name} did not exit:\n{server.output()}")


# --- signed requests ---------------------------------------------------------------------------


async def post(
    client: httpx.AsyncClient, url: str, partner: Partner, path: str, body: Any, key: str
) -> httpx.Response:
    """One signed POST under an idempotency key; a fresh signature and nonce on every attempt."""
    raw = json.dumps(body).encode()
    headers = signed_headers(
        partner, CLOCK, method="POST", path=path, body=raw, headers={"idempotency-key": key}
    )
    return await client.post(f"{url}{path}", content=raw, headers=headers)


async def answered(
    client: httpx.AsyncClient, url: str, partner: Partner, path: str, body: Any, key: str
) -> httpx.Response:
    response = await post(client, url, partner, path, body, key)
    assert response.status_code in (200, 201), response.text
    return response


async def fetch_one(db: Database, sql: str, *args: Any) -> Any:
    async with db.connection() as conn:
        return await conn.fetchval(sql, *args)


async def transaction_ids(db: Database, merchant_id: str, reference: str) -> list[str]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT transaction_id FROM transactions WHERE merchant_id = $1 AND reference = $2",
            merchant_id,
            reference,
        )
    return [row["transaction_id"] for row in rows]


async def stored_record(db: Database, merchant_id: str, key: str) -> tuple[Any, bool] | None:
    async with db.connection() as conn:
        rows = await conn.fetch(
            """SELECT response, refused FROM idempotency_records
               WHERE merchant_id = $1 AND idempotency_key = $2""",
            merchant_id,
            key,
        )
    assert len(rows) <= 1
    return (json.loads(rows[0]["response"]), rows[0]["refused"]) if rows else None


async def posted_points(db: Database, member_id: str) -> int:
    points: int | None = await fetch_one(
        db, "SELECT sum(posted_points) FROM member_accounts WHERE member_id = $1", member_id
    )
    return points or 0


async def assert_books_balance(db: Database) -> None:
    breaks = await verify(db)
    assert breaks == [], f"the ledger does not reconcile after the crashes: {breaks}"


async def new_alliance(database_url: str) -> Database:
    db = await Database.connect(database_url, min_size=1, max_size=4)
    async with db.transaction() as conn:
        await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
    return db


@pytest.fixture(autouse=True)
def no_inherited_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook reaches only the servers a test starts with it, never one it starts without."""
    monkeypatch.delenv(EXIT_AFTER_COMMIT_VARIABLE, raising=False)


# --- I4: killed right after COMMIT, before the answer --------------------------------------------


@dataclass
class Alliance:
    """A database of its own, one partner, and a server that is never killed (where retries go,
    as a load balancer sends them to a live worker)."""

    database_url: str
    db: Database
    partner: Partner
    survivor: Server
    logs: Path


@pytest.fixture(scope="module")
async def alliance(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Alliance]:
    logs = tmp_path_factory.mktemp("worker-kill")
    async with migrated_database() as database_url:
        db = await new_alliance(database_url)
        try:
            partner = await make_partner(db)
            with (
                pytest.MonkeyPatch.context() as monkeypatch,
                fleet(database_url, logs, monkeypatch) as servers,
            ):
                monkeypatch.delenv(EXIT_AFTER_COMMIT_VARIABLE, raising=False)
                survivor = servers.ready("survivor")
                yield Alliance(database_url, db, partner, survivor, logs)
            await assert_books_balance(db)
        finally:
            await db.close()


async def funded_member(
    client: httpx.AsyncClient, url: str, partner: Partner, points: int = STARTING_POINTS
) -> str:
    """A new member, issued `points` by `partner`, both answered by the server at `url`."""
    enrolled = await answered(
        client, url, partner, "/v1/members", {"external_ref": unique("card")}, unique("key")
    )
    member_id: str = enrolled.json()["member_id"]
    await answered(
        client,
        url,
        partner,
        "/v1/issuances",
        {"member_id": member_id, "points": points, "reference": unique("start")},
        unique("key"),
    )
    return member_id


async def enrolled_member(client: httpx.AsyncClient, alliance: Alliance) -> str:
    return await funded_member(client, alliance.survivor.url, alliance.partner)


@dataclass
class Target:
    """The request the worker dies on: where it goes, and the references it writes."""

    path: str
    body: dict[str, Any]
    references: list[str]
    points_change: int  # on the member's balance, once applied


SHAPES = ("issue", "redeem", "batch-mixed", "batch-issuances")
"""What the worker dies on, in turn. In a mixed batch it dies after the first operation
committed, in the middle of the batch; in a batch of issuances only (written set-based, uncounted
by the hook) it dies after the batch's own record committed."""


def target_request(shape: str, member_id: str) -> Target:
    def operation(op: str, points: int) -> dict[str, Any]:
        return {
            "op": op,
            "idempotency_key": unique("op"),
            "member_id": member_id,
            "points": points,
            "reference": unique(op),
        }

    if shape == "issue":
        reference = unique("receipt")
        body = {"member_id": member_id, "points": 25, "reference": reference}
        return Target("/v1/issuances", body, [reference], 25)
    if shape == "redeem":
        reference = unique("basket")
        body = {"member_id": member_id, "points": 40, "reference": reference}
        return Target("/v1/redemptions", body, [reference], -40)
    if shape == "batch-mixed":
        operations = [operation("issue", 10), operation("redeem", 30), operation("issue", 5)]
    else:
        assert shape == "batch-issuances"
        operations = [operation("issue", 10), operation("issue", 20)]
    change = sum(op["points"] if op["op"] == "issue" else -op["points"] for op in operations)
    return Target(
        "/v1/batches", {"operations": operations}, [op["reference"] for op in operations], change
    )


def transactions_in(batch: bool, body: dict[str, Any]) -> list[dict[str, Any]]:
    if batch:
        results: list[dict[str, Any]] = body["results"]
        assert all("transaction_id" in result for result in results), body
        return results
    return [body]


@pytest.mark.parametrize("nth", [1, 3], ids=["1st-commit", "3rd-commit"])
async def test_a_retry_after_a_worker_died_past_commit_returns_the_original_transaction(
    alliance: Alliance, nth: int
):
    """WORKER_KILL_POINTS workers, each dying right after its Nth commit, on each shape in turn
    (from a different one for each N, so that CI's 3 points per N still meet all four)."""
    db, partner = alliance.db, alliance.partner
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        member_id = await enrolled_member(client, alliance)
        expected_balance = STARTING_POINTS
        for point in range(POINTS):
            shape = SHAPES[(point + (0 if nth == 1 else 2)) % len(SHAPES)]
            batch = shape.startswith("batch")
            doomed = Fleet(alliance.database_url, alliance.logs, pytest.MonkeyPatch())
            try:
                worker = doomed.ready(f"i4-{nth}-{point}-{shape}", exit_after_commit=nth)
                # The commits before the Nth are answered as usual.
                for _ in range(nth - 1):
                    await answered(
                        client,
                        worker.url,
                        partner,
                        "/v1/issuances",
                        {"member_id": member_id, "points": 1, "reference": unique("warm-up")},
                        unique("key"),
                    )
                    expected_balance += 1
                target = target_request(shape, member_id)
                key = unique("key")
                with pytest.raises(httpx.TransportError):  # committed, then no answer at all
                    await post(client, worker.url, partner, target.path, target.body, key)
                assert exit_status(worker) == EXIT_STATUS, worker.output()
            finally:
                doomed.stop_all()

            # What the dead worker committed, before anyone retries.
            committed = {
                reference: await transaction_ids(db, partner.merchant_id, reference)
                for reference in target.references
            }
            assert all(len(ids) <= 1 for ids in committed.values()), committed
            recorded = await stored_record(db, partner.merchant_id, key)
            if batch:  # the worker died after a commit: an operation's, or the batch's record
                assert any(committed.values()) or recorded is not None, (shape, committed)
            else:  # one operation: it committed whole, with its record, before the worker died
                assert len(committed[target.references[0]]) == 1, committed
                assert recorded is not None

            retry = await post(
                client, alliance.survivor.url, partner, target.path, target.body, key
            )
            assert retry.status_code == (200 if batch else 201), (shape, retry.text)
            answers = transactions_in(batch, retry.json())
            assert [answer["reference"] for answer in answers] == target.references
            for answer in answers:
                held = await transaction_ids(db, partner.merchant_id, answer["reference"])
                # Exactly one transaction for the reference (a re-applied retry would make 2),
                # and the answer names it; what the dead worker had committed is kept as it was.
                assert held == [answer["transaction_id"]], (answer, held)
                assert committed[answer["reference"]] in ([], held), (committed, held)
            if not batch:  # (a batch's record may not have been written when it died)
                assert retry.headers.get("idempotency-replayed") == "true"
            stored = await stored_record(db, partner.merchant_id, key)
            assert stored == (retry.json(), False)

            again = await post(
                client, alliance.survivor.url, partner, target.path, target.body, key
            )
            assert again.status_code == retry.status_code
            assert again.headers.get("idempotency-replayed") == "true"
            assert again.json() == retry.json()

            expected_balance += target.points_change
            assert await posted_points(db, member_id) == expected_balance

    await assert_books_balance(db)


# --- D2: kill -9 under load, restart, every retry converges -------------------------------------


@dataclass
class Operation:
    client: int
    partner: Partner
    kind: str  # issue or redeem
    member_id: str
    points: int
    reference: str
    key: str = field(default_factory=lambda: unique("d2"))
    outcome: str = ""  # applied or refused
    answer: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    dropped: int = 0  # attempts sent to a worker that died before answering
    unreachable: int = 0  # attempts that found no worker listening (between a kill and restart)
    waits: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return "/v1/issuances" if self.kind == "issue" else "/v1/redemptions"

    @property
    def body(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "points": self.points, "reference": self.reference}


@dataclass
class Current:
    """Where the live worker listens (each restart takes a fresh port)."""

    url: str


RETRYABLE = {"idempotency_key_in_flight", "rate_limited", "service_unavailable"}


async def until_answered(client: httpx.AsyncClient, current: Current, op: Operation) -> None:
    """What a partner's till does: the same key until an answer that is final."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while True:
        assert time.monotonic() < deadline, f"never answered: {op}"
        op.attempts += 1
        try:
            response = await post(client, current.url, op.partner, op.path, op.body, op.key)
        except httpx.ConnectError:
            op.unreachable += 1
            await asyncio.sleep(0.05)
            continue
        except httpx.TransportError as error:
            op.dropped += 1
            op.waits.append(type(error).__name__)
            await asyncio.sleep(0.05)
            continue
        body = response.json()
        if response.status_code == 201:
            op.outcome, op.answer = "applied", body
            return
        code = body.get("code")
        if response.status_code == 409 and code == "insufficient_points":
            op.outcome, op.answer = "refused", body
            return
        unexpected = f"{op.kind} {op.key}: unexpected {response.status_code} {response.text}"
        assert response.status_code in (409, 429, 503), unexpected
        assert code in RETRYABLE or response.status_code == 503, unexpected
        op.waits.append(str(code))
        await asyncio.sleep(0.05)


async def till(
    number: int,
    partner: Partner,
    members: list[str],
    current: Current,
    chaos_over: asyncio.Event,
    rng: random.Random,
    done: list[Operation] | None = None,
) -> list[Operation]:
    """One client: keyed operations one after another, for as long as the kills go on; each
    answered one is appended to `done` as it is answered (a new list if none is given)."""
    done = [] if done is None else done
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        while not chaos_over.is_set():
            issue = rng.random() < 0.55
            op = Operation(
                client=number,
                partner=partner,
                kind="issue" if issue else "redeem",
                member_id=rng.choice(members),
                points=rng.randint(1, 40) if issue else rng.randint(1, 60),
                reference=unique("d2-ref"),
            )
            await until_answered(client, current, op)
            done.append(op)
    return done


async def chaos(
    servers: Fleet, first: Server, current: Current, rng: random.Random
) -> list[tuple[str, int]]:
    """KILLS times: let the worker serve a little, kill it (SIGKILL, unless the test hook ended
    it at a commit first), start another. Returns how each died."""
    deaths: list[tuple[str, int]] = []
    worker = first
    for kill in range(KILLS):
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)
        while time.monotonic() < deadline and worker.process.poll() is None:
            await asyncio.sleep(0.01)
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
        status = await asyncio.to_thread(exit_status, worker)
        assert status in (-signal.SIGKILL, EXIT_STATUS), f"{status}:\n{worker.output()}"
        deaths.append(("sigkill" if status == -signal.SIGKILL else "after-commit", status))
        last = kill == KILLS - 1
        hooked = None if last or rng.random() < 0.5 else rng.randint(1, 30)
        worker = servers.start(f"d2-{kill + 1}", exit_after_commit=hooked)
        await asyncio.to_thread(wait_until_ready, worker)
        current.url = worker.url
    return deaths


async def test_kill_9_of_workers_under_load_leaves_balanced_books_and_every_retry_converges(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rng = random.Random(SEED)
    db = await new_alliance(fresh_database_url)
    try:
        partners = [await make_partner(db) for _ in range(2)]
        with fleet(fresh_database_url, tmp_path, monkeypatch) as servers:
            worker = servers.ready("d2-0", exit_after_commit=None)
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
                members = [
                    await funded_member(client, worker.url, partners[0], 100) for _ in range(4)
                ]

            current = Current(worker.url)
            chaos_over = asyncio.Event()
            tills = [
                asyncio.create_task(
                    till(
                        number,
                        partners[number % 2],
                        members,
                        current,
                        chaos_over,
                        random.Random(rng.random()),
                    )
                )
                for number in range(4)
            ]
            try:
                deaths = await chaos(servers, worker, current, rng)
            except BaseException:
                for task in tills:  # no worker may be left to answer them
                    task.cancel()
                raise
            finally:
                chaos_over.set()
                finished = await asyncio.gather(*tills, return_exceptions=True)
            failures = [result for result in finished if isinstance(result, BaseException)]
            if failures:
                raise failures[0]
            operations = [op for done in finished for op in done]

            await check_each_key_has_one_outcome(db, operations)
            await check_balances(db, members, operations)
            await check_retries_replay(current, operations)
        await assert_books_balance(db)
    except BaseException as error:
        error.add_note(f"to run this kill schedule again: WORKER_KILL_SEED={SEED}")
        raise
    finally:
        await db.close()

    assert len(deaths) == KILLS
    dropped = [op for op in operations if op.dropped]
    assert dropped, "no kill caught an operation in flight: the test proved nothing"
    unreachable = sum(op.unreachable > 0 for op in operations)
    refused = sum(op.outcome == "refused" for op in operations)
    print(  # noqa: T201  (shown with -s: what the kills met)
        f"D2: {len(operations)} operations ({refused} refused), {KILLS} kills {deaths};"
        f" retried: {len(dropped)} after a drop in flight, {unreachable} after finding no"
        f" worker; seed {SEED}"
    )


async def check_each_key_has_one_outcome(db: Database, operations: list[Operation]) -> None:
    for op in operations:
        merchant_id = op.partner.merchant_id
        stored = await stored_record(db, merchant_id, op.key)
        held = await transaction_ids(db, merchant_id, op.reference)
        if op.outcome == "applied":
            # Applied once: the answer the client kept is the one stored, naming the only
            # transaction of its reference (a retry that re-applied would make two).
            assert stored == (op.answer, False), op
            assert held == [op.answer["transaction_id"]], (op, held)
        else:
            assert op.outcome == "refused", op
            # Refused once: recorded as refused, nothing applied.
            assert stored is not None, op
            assert stored[1] is True, (op, stored)
            assert stored[0]["code"] == op.answer["code"] == "insufficient_points", op
            assert held == [], (op, held)
    keys = {(op.partner.merchant_id, op.key) for op in operations}
    assert len(keys) == len(operations)


async def check_balances(db: Database, members: list[str], operations: list[Operation]) -> None:
    """The ledger holds exactly what the clients were told was accepted."""
    for member_id in members:
        told = 100 + sum(
            op.answer["points"] if op.kind == "issue" else -op.answer["points"]
            for op in operations
            if op.member_id == member_id and op.outcome == "applied"
        )
        assert await posted_points(db, member_id) == told, member_id
    merchants = list({op.partner.merchant_id for op in operations})
    applied = sum(op.outcome == "applied" for op in operations)
    in_ledger = await fetch_one(
        db,
        """SELECT count(*) FROM transactions
           WHERE merchant_id = ANY($1::text[]) AND reference LIKE 'd2-ref%'""",
        merchants,
    )
    assert in_ledger == applied


async def check_retries_replay(current: Current, operations: list[Operation]) -> None:
    """Asked again, the live worker answers each retried operation as it did the first time."""
    retried = [op for op in operations if op.attempts > 1][:50]
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        for op in retried:
            again = await post(client, current.url, op.partner, op.path, op.body, op.key)
            assert again.headers.get("idempotency-replayed") == "true", again.text
            assert again.json() == op.answer
            assert again.status_code == (201 if op.outcome == "applied" else 409)
