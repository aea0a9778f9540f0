"""RELIABILITY: two `alliance serve` processes on one database: a nonce used on one is refused on
the other. Real processes, sockets and clock: what a partner behind a load balancer sees."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.clock import SystemClock
from core.database import Database
from merchants import repository as merchant_repository
from tests.api.conftest import make_partner, signed_headers
from tests.conftest import PROJECT_ROOT
from tests.factories import DEFAULT_SETTINGS, unique

READY_TIMEOUT_S = 60.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def alliance_command() -> list[str]:
    """The `alliance` console script of this interpreter's environment (the project's venv)."""
    script = Path(sys.executable).with_name("alliance")
    if script.exists():
        return [str(script)]
    found = shutil.which("alliance")
    assert found is not None, "the `alliance` command is not installed (pip install -e .)"
    return [found]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(name: str, database_url: str, logs: Path) -> Server:
    port = free_port()
    log = logs / f"{name}.log"
    env = {**os.environ, "DATABASE_URL": database_url, "ALLIANCE_LOG_JSON": "true"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*alliance_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(name, process, port, log)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=15)


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"server {server.name} exited ({server.process.returncode}):\n{server.output()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"server {server.name} not ready after {READY_TIMEOUT_S} s:\n{server.output()}")


@contextlib.contextmanager
def two_servers(database_url: str, logs: Path) -> Iterator[tuple[Server, Server]]:
    servers: list[Server] = []
    try:
        servers.append(start("a", database_url, logs))
        servers.append(start("b", database_url, logs))
        for server in servers:
            wait_until_ready(server)
        yield servers[0], servers[1]
    finally:
        for server in servers:
            stop(server)


async def count_members(db: Database) -> int:
    async with db.connection() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM members")
        return count


async def test_a_nonce_used_on_one_server_is_refused_on_the_other(fresh_database_url, tmp_path):
    db = await Database.connect(fresh_database_url, min_size=1, max_size=2)
    try:
        async with db.transaction() as conn:
            await merchant_repository.insert_settings(conn, DEFAULT_SETTINGS)
        partner = await make_partner(db)
        clock = SystemClock()  # the servers read the system clock; so does the signature
        path = "/v1/members"
        body = json.dumps({"external_ref": unique("card")}).encode()
        key = {"idempotency-key": unique("key")}

        with two_servers(fresh_database_url, tmp_path) as (a, b):
            headers = signed_headers(
                partner, clock, method="POST", path=path, body=body, headers=key
            )
            async with httpx.AsyncClient(timeout=10) as client:
                first = await client.post(f"{a.url}{path}", content=body, headers=headers)
                assert first.status_code in (200, 201), f"{first.text}\n{a.output()}"
                members = await count_members(db)

                # Byte for byte the same request, same nonce, to the other process.
                replayed = await client.post(f"{b.url}{path}", content=body, headers=headers)
                assert replayed.status_code == 401, f"{replayed.text}\n{b.output()}"
                assert replayed.headers["content-type"] == "application/problem+json"
                assert replayed.json()["code"] == "replayed_request"
                assert await count_members(db) == members

                # Signed again with a fresh nonce (same key, same body): B accepts it, and answers
                # with what A stored for that key.
                fresh = signed_headers(
                    partner, clock, method="POST", path=path, body=body, headers=key
                )
                again = await client.post(f"{b.url}{path}", content=body, headers=fresh)
                assert again.status_code == first.status_code, f"{again.text}\n{b.output()}"
                assert again.json() == first.json()
                assert again.headers.get("idempotency-replayed") == "true"

                # And a new request, new key and nonce, is simply served by B.
                new_body = json.dumps({"external_ref": unique("card")}).encode()
                new = signed_headers(
                    partner,
                    clock,
                    method="POST",
                    path=path,
                    body=new_body,
                    headers={"idempotency-key": unique("key")},
                )
                served = await client.post(f"{b.url}{path}", content=new_body, headers=new)
                assert served.status_code == 201, f"{served.text}\n{b.output()}"
                assert await count_members(db) == members + 1
    finally:
        await db.close()
