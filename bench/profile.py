"""A profile of the single-redemption path: one server process under pyinstrument.

The exchange runs as `python -m pyinstrument -m uvicorn --factory server.main:app_factory`
(the app `alliance serve` runs, in one process so that one profile sees every request) while
the load generator sends signed redemptions from 8 clients; on SIGINT uvicorn stops and
pyinstrument writes its session, rendered to bench/profiles/redemption.{txt,html} and a flat
list of the functions with the most own time, redemption-flat.txt.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import run as bench_run

PROFILES = Path(__file__).resolve().parent / "profiles"
CLIENTS = 8
DURATION_S = 15


def run(ledger_url: str, port: int, keys_file: Path, members: int) -> dict[str, Any]:
    PROFILES.mkdir(parents=True, exist_ok=True)
    session = PROFILES / "redemption.pyisession"
    command = [
        sys.executable, "-m", "pyinstrument", "-r", "session", "-o", str(session),
        "-m", "uvicorn", "--factory", "server.main:app_factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        env=bench_run.server_env(ledger_url, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=bench_run.ROOT,
    )
    try:
        bench_run.wait_ready(port, server)
        cfg = bench_run.Config(duration=DURATION_S, port=port)
        meters = bench_run.CpuMeters(server.pid, postgres_pid=None)
        result = bench_run.load(cfg, "redeem", CLIENTS, members, meters)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
    render = [sys.executable, "-m", "pyinstrument", f"--load={session}"]
    subprocess.run([*render, "-r", "html", "-o", str(PROFILES / "redemption.html")], check=True)
    subprocess.run(
        [*render, "-r", "text", "--no-color", "--unicode", "-o", str(PROFILES / "redemption.txt")],
        check=True,
    )
    subprocess.run(
        [*render, "-r", "text", "--no-color", "-p", "flat=true", "-p", "flat_time=self",
         "-o", str(PROFILES / "redemption-flat.txt")],
        check=True,
    )  # fmt: skip
    session.unlink(missing_ok=True)
    top = (PROFILES / "redemption-flat.txt").read_text().splitlines()
    return {
        "load": result,
        "files": ["bench/profiles/redemption.txt", "bench/profiles/redemption.html",
                  "bench/profiles/redemption-flat.txt"],
        "top_self_time": [line.strip() for line in top if line.strip()][:25],
        "summary": (
            f"{result['operations_per_s']:.0f} redemptions/s from {CLIENTS} clients into one "
            "profiled server process; see bench/profiles/redemption.txt (call tree), "
            "redemption-flat.txt (own time) and bench/README.md (the top costs, named)."
        ),
    }  # fmt: skip
