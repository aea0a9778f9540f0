"""A real `alliance serve` process on a free port, as a partner's SDK meets it: real sockets, the
real clock, the real database. (The approach of tests/api/test_two_servers.py.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.conftest import PROJECT_ROOT

READY_TIMEOUT_S = 60.0


@dataclass
class Server:
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


def alliance_env(database_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "ALLIANCE_LOG_JSON": "true", **extra}


def start(database_url: str, log: Path, env: Mapping[str, str] | None = None) -> Server:
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*alliance_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=dict(env or alliance_env(database_url)),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(process, port, log)


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
            pytest.fail(f"the exchange exited ({server.process.returncode}):\n{server.output()}")
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.05)  # polling for readiness, not timing a behaviour
    pytest.fail(f"the exchange is not ready after {READY_TIMEOUT_S} s:\n{server.output()}")


@contextlib.contextmanager
def serving(database_url: str, log: Path) -> Iterator[Server]:
    server = start(database_url, log)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(server)
