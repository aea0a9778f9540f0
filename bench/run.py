"""`make bench`: the exchange measured against the machine's own limits, in the same run.

Steps: start PostgreSQL (the benchmark's own embedded server in .data/bench/, or DATABASE_URL's),
seed an alliance by COPY and check it with `alliance verify`, measure the limits (pgbench TPC-B
and -S, COPY), serve the exchange (`alliance serve --workers 2`) and drive it with the load
generator (`python -m bench.load`, a separate process signing every request), grow the ledger
tenfold and read balances again, then write bench/results/latest.{json,md} and the table in
bench/README.md.

Environment (all optional): BENCH_SCALE (1.0: 100,000 members, ~1.1M postings; the grown
ledger is 10x that), BENCH_GROWN_SCALE (default BENCH_SCALE), BENCH_RUNS (3), BENCH_DURATION
(seconds per run, 8), BENCH_CLIENTS ("8,32,64"), BENCH_PORT (8900), BENCH_PROFILE (1: also
profile the single-redemption path), BENCH_SETTLEMENT_OBLIGATIONS (1,000,000 x BENCH_SCALE:
settle that many and a quarter as many beside a bare GROUP BY; 0 skips), DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped]

from bench import database, report, seed, settlement as settlement_bench
from core.database import Database
from core.migrations import upgrade_to_head_async
from exchange.reconcile import verify

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROFILES = ROOT / "bench" / "profiles"
KEYS_FILE = database.DATA_DIR / "keys.json"
BASE_MEMBERS = 100_000
BATCH_SIZE = 1000
BATCH_CLIENTS = 4


@dataclass(frozen=True, slots=True)
class Config:
    scale: float = float(os.environ.get("BENCH_SCALE", "1"))
    grown_scale: float = float(
        os.environ.get("BENCH_GROWN_SCALE", os.environ.get("BENCH_SCALE", "1"))
    )
    runs: int = int(os.environ.get("BENCH_RUNS", "3"))
    duration: float = float(os.environ.get("BENCH_DURATION", "8"))
    clients: tuple[int, ...] = tuple(
        int(c) for c in os.environ.get("BENCH_CLIENTS", "8,32,64").split(",")
    )
    port: int = int(os.environ.get("BENCH_PORT", "8900"))
    profile: bool = os.environ.get("BENCH_PROFILE", "1") == "1"
    settlement_obligations: int = int(
        os.environ.get(
            "BENCH_SETTLEMENT_OBLIGATIONS",
            str(int(1_000_000 * float(os.environ.get("BENCH_SCALE", "1")))),
        )
    )

    @property
    def members(self) -> int:
        return int(BASE_MEMBERS * self.scale)

    @property
    def grown_members(self) -> int:
        return int(BASE_MEMBERS * 10 * self.grown_scale)


def log(message: str) -> None:
    sys.stdout.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --- limits: pgbench and COPY ---------------------------------------------------------------


def pgbench(server: database.Server, args: list[str]) -> dict[str, float]:
    command = [server.pgbench(), *args, *server.host_args(database.PGBENCH_DB)]
    out = subprocess.run(command, env=server.env(), capture_output=True, text=True, check=True)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    if tps is None:
        raise RuntimeError(f"pgbench said:\n{out.stdout}\n{out.stderr}")
    return {"tps": float(tps.group(1)), "latency_avg_ms": float(latency.group(1) if latency else 0)}


def pgbench_series(
    server: database.Server, cfg: Config, clients: int, select_only: bool
) -> dict[str, Any]:
    args = ["-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(int(cfg.duration))]
    if select_only:
        args.append("-S")
    runs = [pgbench(server, args) for _ in range(cfg.runs)]
    return {
        "tps": summary([r["tps"] for r in runs]),
        "latency_avg_ms": summary([r["latency_avg_ms"] for r in runs]),
    }


async def copy_limit(ledger_url: str, rows: int, runs: int) -> dict[str, Any]:
    """COPY `rows` issuance-shaped rows into a fresh table with the indexes of `transactions`."""
    conn = await asyncpg.connect(ledger_url)
    rates = []
    try:
        now = datetime.now(UTC)
        records = [
            (
                seed.member_id(n % 100_000),
                f"txn_C{n:025d}",
                "issuance",
                None,
                "AP",
                100,
                "till upload",
                now,
                0,
                100,
            )
            for n in range(rows)
        ]
        for _ in range(runs):
            await conn.execute("DROP TABLE IF EXISTS bench_copy")
            await conn.execute(
                "CREATE TABLE bench_copy (LIKE transactions INCLUDING DEFAULTS INCLUDING INDEXES)"
            )
            began = time.perf_counter()
            await conn.copy_records_to_table(
                "bench_copy", records=records, columns=seed.TABLE_COLUMNS["transactions"]
            )
            rates.append(rows / (time.perf_counter() - began))
        await conn.execute("DROP TABLE bench_copy")
    finally:
        await conn.close()
    return {"rows": rows, "rows_per_s": summary(rates)}


# --- the exchange under load ----------------------------------------------------------------


@dataclass
class MemoryWatch:
    """Samples the RSS of the server's process tree; keeps the peak."""

    pid: int
    peak_total: int = 0
    peak_process: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                root = psutil.Process(self.pid)
                rss = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
            except psutil.Error:
                rss = []
            if rss:
                self.peak_total = max(self.peak_total, sum(rss))
                self.peak_process = max(self.peak_process, max(rss))
            self.stop.wait(0.2)


@dataclass(frozen=True, slots=True)
class CpuMeters:
    """Whose CPU time a load run costs: the server's process tree, and PostgreSQL's when it is
    the benchmark's own embedded server (its postmaster and every backend)."""

    server_pid: int
    postgres_pid: int | None

    def seconds(self) -> dict[str, float | None]:
        return {
            "server": _tree_cpu_s(self.server_pid),
            "postgres": None if self.postgres_pid is None else _tree_cpu_s(self.postgres_pid),
        }


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process tree so far, including children that have exited: those are in
    their parent's children_user/children_system once reaped (PostgreSQL's autovacuum workers
    and backends come and go during a run; without them the sum could go backwards)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def postgres_pid(server: database.Server) -> int | None:
    if not server.embedded:
        return None  # another server: its processes may serve others too
    pid_file = database.DATA_DIR / "postgres" / "postmaster.pid"
    return int(pid_file.read_text().split()[0])


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_env(ledger_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": ledger_url,
        "ALLIANCE_PORT": str(port),
        # The benchmark measures the exchange, not its per-merchant rate limit.
        "ALLIANCE_RATE_LIMIT_PER_S": "1000000",
        "ALLIANCE_RATE_LIMIT_BURST": "1000000",
    }


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError("the server exited at start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become ready")


@contextmanager
def serving(
    ledger_url: str, port: int, watch: list[MemoryWatch], postgres: int | None
) -> Iterator[CpuMeters]:
    command = [str(ROOT / ".venv" / "bin" / "alliance"), "serve", "--workers", "2"]
    process = subprocess.Popen(
        command,
        env=server_env(ledger_url, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    memory = MemoryWatch(process.pid)
    thread = threading.Thread(target=memory.run, daemon=True)
    try:
        wait_ready(port, process)
        thread.start()
        yield CpuMeters(process.pid, postgres)
    finally:
        memory.stop.set()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        watch.append(memory)


def load(
    cfg: Config, kind: str, clients: int, members: int, meters: CpuMeters, **options: Any
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.load", "--url", f"http://127.0.0.1:{cfg.port}",
        "--keys", str(KEYS_FILE), "--kind", kind, "--clients", str(clients),
        "--duration", str(cfg.duration), "--members", str(members),
    ]  # fmt: skip
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    before, generator_before = meters.seconds(), children_cpu_s()
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    after, generator_after = meters.seconds(), children_cpu_s()
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    sent = max(result["operations_sent"], 1)
    spent = {name: _delta(before[name], after[name]) for name in before}
    spent["load_generator"] = generator_after - generator_before
    result["cpu_ms_per_op"] = {
        name: None if seconds is None else 1000 * seconds / sent for name, seconds in spent.items()
    }
    return result


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def load_series(
    cfg: Config, kind: str, clients: int, members: int, meters: CpuMeters, **options: Any
) -> dict[str, Any]:
    runs = [
        load(cfg, kind, clients, members, meters, seed=n + 1, **options) for n in range(cfg.runs)
    ]
    errors: dict[str, int] = {}
    for run in runs:
        for code, count in run["errors"].items():
            errors[code] = errors.get(code, 0) + count
    return {
        "per_s": summary([r["operations_per_s"] for r in runs]),
        "p50_ms": summary([r["p50_ms"] for r in runs]),
        "p99_ms": summary([r["p99_ms"] for r in runs]),
        "operations": sum(r["operations"] for r in runs),
        "errors": errors,
        "cpu_ms_per_op": {
            name: None
            if runs[0]["cpu_ms_per_op"][name] is None
            else statistics.median(r["cpu_ms_per_op"][name] for r in runs)
            for name in runs[0]["cpu_ms_per_op"]
        },
    }


# --- the run ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def seed_ledger(server: database.Server, cfg: Config) -> tuple[str, dict[str, Any]]:
    ledger_url = await database.recreate(server, database.LEDGER_DB)
    await upgrade_to_head_async(ledger_url)
    db = await Database.connect(ledger_url)
    try:
        now = seed.utc_now()
        partners = await seed.found_alliance(db, now, KEYS_FILE)
        began = time.perf_counter()
        await seed.seed_members(
            ledger_url,
            start=0,
            stop=cfg.members,
            merchant_ids=[p.merchant_id for p in partners],
            now=now,
            on_progress=lambda done, total: log(f"  seeded {done:,}/{total:,} members"),
        )
        seconds = time.perf_counter() - began
        await seed.vacuum_analyze(ledger_url)
        began = time.perf_counter()
        breaks = await verify(db)
        verify_s = time.perf_counter() - began
    finally:
        await db.close()
    if breaks:
        raise SystemExit(f"alliance verify failed on the seeded ledger: {breaks}")
    sizes = await seed.counts(ledger_url)
    log(f"seeded {sizes} in {seconds:.0f} s; alliance verify passed in {verify_s:.0f} s")
    return ledger_url, {
        "merchants": seed.MERCHANT_COUNT,
        **sizes,
        "seed_s": round(seconds, 1),
        "verify": "passed",
        "verify_s": round(verify_s, 1),
    }


async def grow_ledger(ledger_url: str, cfg: Config) -> dict[str, Any]:
    merchant_ids = [p.merchant_id for p in seed.load_partners(KEYS_FILE)]
    began = time.perf_counter()
    await seed.seed_members(
        ledger_url,
        start=cfg.members,
        stop=cfg.grown_members,
        merchant_ids=merchant_ids,
        now=seed.utc_now(),
        on_progress=lambda done, total: log(f"  grew {done:,}/{total:,} members"),
    )
    await seed.vacuum_analyze(ledger_url)
    sizes = await seed.counts(ledger_url)
    log(f"grew to {sizes} in {time.perf_counter() - began:.0f} s")
    return {**sizes, "grow_s": round(time.perf_counter() - began, 1)}


def measure(cfg: Config, step: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
    log(what)
    result = step()
    log(f"  -> {json.dumps(result)}")
    return result


async def main() -> None:
    cfg = Config()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "scale": cfg.scale,
            "grown_scale": cfg.grown_scale,
            "runs": cfg.runs,
            "duration_s": cfg.duration,
            "clients": list(cfg.clients),
            "server_workers": 2,
            "batch_size": BATCH_SIZE,
            "batch_clients": BATCH_CLIENTS,
        },
        "machine": machine(),
    }
    server = database.start()
    results["postgres"] = await database.describe(server)
    results["postgres"]["where"] = (
        "embedded (pgserver), .data/bench/" if server.embedded else "DATABASE_URL"
    )
    log(f"PostgreSQL: {results['postgres']['version']}")

    ledger_url, results["sizes"] = await seed_ledger(server, cfg)

    # Limits first, with the exchange stopped, so they have the machine to themselves.
    await database.recreate(server, database.PGBENCH_DB)
    log("pgbench -i -s 10")
    subprocess.run(
        [server.pgbench(), "-i", "-q", "-s", "10", *server.host_args(database.PGBENCH_DB)],
        env=server.env(), check=True, capture_output=True,
    )  # fmt: skip
    limits: dict[str, Any] = {"tpcb": {}, "select_only": {}}
    for clients in cfg.clients:
        limits["tpcb"][str(clients)] = measure(
            cfg, partial(pgbench_series, server, cfg, clients, False), f"TPC-B, {clients} cl."
        )
    limits["select_only"]["32"] = measure(
        cfg, lambda: pgbench_series(server, cfg, 32, True), "pgbench -S, 32 clients"
    )
    results["limits"] = limits

    app: dict[str, Any] = {"redeem": {}, "issue": {}, "issue_hot": {}}
    watches: list[MemoryWatch] = []
    members = cfg.members
    postgres = postgres_pid(server)
    with serving(ledger_url, cfg.port, watches, postgres) as meters:
        for clients in cfg.clients:
            app["redeem"][str(clients)] = measure(
                cfg,
                partial(load_series, cfg, "redeem", clients, members, meters),
                f"redeem x{clients}",
            )
        for clients in cfg.clients:
            app["issue"][str(clients)] = measure(
                cfg,
                partial(load_series, cfg, "issue", clients, members, meters),
                f"issue x{clients}",
            )
            app["issue_hot"][str(clients)] = measure(
                cfg,
                partial(load_series, cfg, "issue", clients, members, meters, hot=True),
                f"issue, hot issuer, x{clients}",
            )
        app["balance"] = measure(
            cfg, lambda: load_series(cfg, "balance", 32, members, meters), "balance reads x32"
        )
        app["batch"] = measure(
            cfg,
            lambda: load_series(
                cfg, "batch", BATCH_CLIENTS, members, meters, count=1, batch_size=BATCH_SIZE
            ),
            f"batches of {BATCH_SIZE}, {BATCH_CLIENTS} clients",
        )
    batch_rows = BATCH_CLIENTS * BATCH_SIZE
    log(f"COPY {batch_rows} rows")
    limits["copy"] = await copy_limit(ledger_url, batch_rows, cfg.runs)
    log(f"  -> {json.dumps(limits['copy'])}")
    results["sizes_at_1x"] = await seed.counts(ledger_url)

    if cfg.grown_members > cfg.members:
        results["sizes_grown"] = await grow_ledger(ledger_url, cfg)
        grown = cfg.grown_members
        with serving(ledger_url, cfg.port, watches, postgres) as meters:
            app["balance_grown"] = measure(
                cfg,
                lambda: load_series(cfg, "balance", 32, grown, meters),
                "balance reads x32, grown",
            )
    results["app"] = app
    if cfg.settlement_obligations > 0:
        sizes = [max(cfg.settlement_obligations // 4, 1), cfg.settlement_obligations]
        log(f"settlement of {sizes[0]:,} and {sizes[1]:,} obligations beside a bare GROUP BY")
        results["settlement"] = await settlement_bench.measure_growth(server.admin_url, sizes)
        settlement_bench.keep_sizes_measured_apart(results["settlement"], RESULTS / "latest.json")
    results["memory"] = {
        "peak_rss_total_mib": round(max(w.peak_total for w in watches) / 2**20, 1),
        "peak_rss_process_mib": round(max(w.peak_process for w in watches) / 2**20, 1),
        "processes": "uvicorn supervisor + 2 workers",
    }
    results["elapsed_s"] = round(time.perf_counter() - started, 1)

    if cfg.profile:
        from bench import profile

        log("profiling the single-redemption path (pyinstrument, 1 worker)")
        results["profile"] = profile.run(ledger_url, cfg.port, KEYS_FILE, cfg.members)

    report.write(results, RESULTS)
    log(f"done in {time.perf_counter() - started:.0f} s: {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    asyncio.run(main())
