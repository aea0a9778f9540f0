"""RELIABILITY D1: `kill -9` of PostgreSQL (the postmaster and every backend) under load loses no
acknowledged operation and leaves balanced books.

The test runs a PostgreSQL of its own, never the shared test server: the binaries of the `pgserver`
wheel, started directly (not through `pg_ctl`) so that the postmaster is this process's child, in
a short directory under /tmp (a Unix socket path must stay under 108 bytes), with no TCP listener.
A real `alliance serve` uses it; four clients send keyed issuances and redemptions and retry each
unanswered or 503 answer with the same Idempotency-Key (tests/api/test_worker_kill.py's D2
clients). `POSTGRES_KILLS` times, at a random moment, the postmaster is stopped (SIGSTOP, so that
it forks nothing more), every process under it is listed and all get SIGKILL at once; PostgreSQL
is then started again on the same data directory, with its stale postmaster.pid left as a crash
leaves it (the new postmaster finds the old pid dead and takes the lock over), and crash recovery
replays the WAL. The server is not restarted: its pool reconnects by itself (503 meanwhile); if
it were not ready again within READY_AFTER_RESTART_S, the test fails.

Afterwards, as in D2: every acknowledged operation is in the ledger exactly once under the
transaction id the client was told, every key has exactly one outcome, the members' balances are
what the clients were told, and `verify()` finds no break (Σ = 0, balances = postings = lots).

Why it can fail: with `synchronous_commit = off` a commit is acknowledged while its WAL record is
still in shared memory, which the kill throws away, so an acknowledged operation would be missing
after recovery (the app refuses to start on such a server, core/durability.py, so that is not run;
deleting one acknowledged transaction by hand before the checks was seen to fail them).

How many: `POSTGRES_KILLS` (CI 2; nightly ≥20); `POSTGRES_KILL_SEED` replays a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from core.database import Database
from core.migrations import upgrade_to_head_async
from tests.api.conftest import Partner, make_partner
from tests.api.test_two_servers import Server, start, stop, wait_until_ready
from tests.api.test_worker_kill import (
    REQUEST_TIMEOUT_S,
    Current,
    Operation,
    assert_books_balance,
    check_balances,
    check_each_key_has_one_outcome,
    check_retries_replay,
    funded_member,
    new_alliance,
    till,
)

KILLS = int(os.environ.get("POSTGRES_KILLS", "2"))
"""Kills of PostgreSQL under load (nightly: 20 or more)."""
SEED = int(os.environ.get("POSTGRES_KILL_SEED", str(random.randrange(2**32))))
"""The kill schedule's seed, printed on failure; set it to replay one."""

POSTGRES_READY_TIMEOUT_S = 60.0
READY_AFTER_RESTART_S = 30.0
"""How long the server may take to serve again once PostgreSQL is back."""
OPERATIONS_BETWEEN_KILLS = 3
"""Acknowledged operations after each recovery before the next kill may come: kills under load."""
DATABASE = "alliance"


# --- a PostgreSQL of the test's own -------------------------------------------------------------


def _binaries() -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgserver asks platformdirs for a runtime dir
        from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]
    path: Path = POSTGRES_BIN_PATH
    return path


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Postgres:
    """One cluster in `root/data`, its socket in `root`; the postmaster is this process's child.
    As root (PostgreSQL refuses to run as root) it runs as pgserver's `pgserver` user."""

    def __init__(self, root: Path) -> None:
        self.root, self.pgdata, self.log = root, root / "data", root / "postgres.log"
        self.bin = _binaries()
        self.user = "pgserver" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        self.killed: list[psutil.Process] = []  # every process a kill reached, to check on
        if self.user is not None:
            shutil.chown(root, self.user, self.user)
            # That user must reach the binaries, which a private checkout (a 0700 parent
            # directory, as `mktemp -d` makes) hides from it: run a copy inside `root`, laid
            # out as in site-packages (their rpath is $ORIGIN/../../../pgserver.libs).
            site = self.bin.parent.parent.parent
            for part in ("pgserver/pginstall", "pgserver.libs"):
                shutil.copytree(site / part, root / "site" / part, symlinks=True)
            self.bin = root / "site" / self.bin.relative_to(site)

    @property
    def server_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{DATABASE}?host={self.root}"

    def init(self) -> None:
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
            user=self.user,
        )

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.pgdata),
                    "-k",
                    str(self.root),
                    "-h",
                    "",
                    "-c",
                    "max_connections=40",
                    "-c",
                    "fsync=on",
                    "-c",
                    "synchronous_commit=on",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                user=self.user,
                start_new_session=True,
            )

    async def ready(self) -> None:
        deadline = time.monotonic() + POSTGRES_READY_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"PostgreSQL exited ({self.process.returncode}):\n{self.output()}")
            try:
                conn = await asyncpg.connect(self.server_url, timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL not ready:\n{self.output()}")
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            return

    def kill9(self) -> int:
        """SIGKILL the postmaster and every process under it, at once; returns how many died.
        The postmaster is stopped first so that it forks nothing between the listing and the
        kill (its children call setsid(), so a process-group kill would miss them)."""
        assert self.process is not None
        assert self.process.poll() is None
        postmaster = psutil.Process(self.process.pid)
        postmaster.send_signal(signal.SIGSTOP)
        children = postmaster.children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGKILL)
        postmaster.send_signal(signal.SIGKILL)
        self.process.wait(timeout=15)
        self.killed.extend(children)
        deadline = time.monotonic() + 15
        while not all(_gone(child) for child in children):
            assert time.monotonic() < deadline, "a PostgreSQL backend outlived its kill -9"
            time.sleep(0.01)
        return 1 + len(children)

    def stop(self) -> None:
        """Fast shutdown; kill -9 if it does not end in time. Never leaves a process behind."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        for process in self.killed:
            if not _gone(process):  # pragma: no cover - kill9 waits for each
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()

    def output(self) -> str:
        if not self.log.exists():
            return ""
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@contextlib.contextmanager
def own_postgres() -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="pgkill-", dir="/tmp"))
    postgres = Postgres(root)
    try:
        postgres.init()
        postgres.start()
        yield postgres
    finally:
        try:
            postgres.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


async def create_database(postgres: Postgres) -> None:
    admin = await asyncpg.connect(postgres.server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()


# --- D1 -----------------------------------------------------------------------------------------


def served_again(server: Server) -> bool:
    deadline = time.monotonic() + READY_AFTER_RESTART_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return True
        time.sleep(0.05)
    return False


async def chaos(
    postgres: Postgres,
    server: Server,
    acknowledged: list[Operation],
    rng: random.Random,
) -> list[tuple[int, float]]:
    """KILLS times: once the clients have had answers since the last recovery, wait a random
    while, kill PostgreSQL, restart it after a random pause. Returns (processes killed,
    seconds until the server served again) for each kill."""
    kills: list[tuple[int, float]] = []
    for _ in range(KILLS):
        since = len(acknowledged)
        deadline = time.monotonic() + 60
        while len(acknowledged) < since + OPERATIONS_BETWEEN_KILLS:
            assert time.monotonic() < deadline, "the clients got no answers after a recovery"
            await asyncio.sleep(0.01)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        killed = postgres.kill9()
        down = time.monotonic()
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        postgres.start()
        await postgres.ready()
        recovered = await asyncio.to_thread(served_again, server)
        assert recovered, f"the server did not serve again on its own:\n{server.output()}"
        kills.append((killed, round(time.monotonic() - down, 2)))
    return kills


async def run_under_kills(
    server: Server, postgres: Postgres, partners: list[Partner], rng: random.Random
) -> tuple[list[str], list[Operation], list[tuple[int, float]]]:
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        members = [await funded_member(client, server.url, partners[0], 100) for _ in range(4)]
    current = Current(server.url)
    chaos_over = asyncio.Event()
    acknowledged: list[Operation] = []
    clients = [
        asyncio.create_task(
            till(
                number,
                partners[number % 2],
                members,
                current,
                chaos_over,
                random.Random(rng.random()),
                acknowledged,
            )
        )
        for number in range(4)
    ]
    try:
        kills = await chaos(postgres, server, acknowledged, rng)
    except BaseException:
        for task in clients:
            task.cancel()
        raise
    finally:
        chaos_over.set()
        finished = await asyncio.gather(*clients, return_exceptions=True)
    failures = [result for result in finished if isinstance(result, BaseException)]
    if failures:
        raise failures[0]
    await check_retries_replay(current, acknowledged)
    return members, acknowledged, kills


async def test_kill_9_of_postgres_under_load_loses_no_acknowledged_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rng = random.Random(SEED)
    started = time.monotonic()
    try:
        with own_postgres() as postgres:
            await postgres.ready()
            await create_database(postgres)
            await upgrade_to_head_async(postgres.url)
            db = await new_alliance(postgres.url)
            try:
                partners = [await make_partner(db) for _ in range(2)]
            finally:
                await db.close()  # its connections die with the kills; checks use a new pool

            server = start("d1", postgres.url, tmp_path)
            try:
                wait_until_ready(server)
                members, operations, kills = await run_under_kills(server, postgres, partners, rng)
            finally:
                stop(server)
                if server.process.poll() is None:  # pragma: no cover - stop() kills
                    server.process.kill()
                    server.process.wait(timeout=15)

            db = await Database.connect(postgres.url, min_size=1, max_size=2)
            try:
                await check_each_key_has_one_outcome(db, operations)
                await check_balances(db, members, operations)
                await assert_books_balance(db)
            finally:
                await db.close()
    except BaseException as error:
        error.add_note(f"to run this kill schedule again: POSTGRES_KILL_SEED={SEED}")
        raise

    assert len(kills) == KILLS
    in_flight = [op for op in operations if op.dropped or op.waits]
    assert in_flight, "no kill caught an operation in flight: the test proved nothing"
    refused = sum(op.outcome == "refused" for op in operations)
    print(  # noqa: T201  (shown with -s: what the kills met)
        f"D1: {len(operations)} operations ({refused} refused), {KILLS} kills of PostgreSQL"
        f" (processes killed, s until served again) {kills}; {len(in_flight)} retried;"
        f" server reconnected by itself; {time.monotonic() - started:.1f} s; seed {SEED}"
    )
