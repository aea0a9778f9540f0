"""Settlement measured against a bare SQL aggregate over the same obligations, in the same run.

For each size: a fresh database (`bench_settlement`) on the server of the URL given, migrated;
the alliance (settings, 12 merchants) through the real services and members with 90 days of
history by COPY, exactly as `bench/seed.py` seeds the main benchmark (so every row keeps the
ledger's invariants and the run's reconciliation passes), member chunk by member chunk until at
least the wanted number of cross-merchant obligations exist, none of them settled. Then, after
`VACUUM (ANALYZE)`:

- **the limit**: `SELECT debtor_id, creditor_id, sum(...), count(*) FROM obligations GROUP BY 1, 2`
  over the same rows (the bare netting aggregate, nothing else), run before the settlement (a
  warm-up, reported) and `AGGREGATE_RUNS` times after it; the median of the runs after it counts;
- **the measure**: one real settlement run over all of them, `settlement.service.settle_cutoff`
  (what `alliance settle --cutoff` calls): claim and net, the Merkle tree of every claimed
  transaction, signing, statements, settlement's checks and the whole ledger's reconciliation, in
  one database transaction; the time of each phase comes from the run's progress callback.

The ratio is aggregate seconds / settlement seconds: the share of a bare aggregate's speed that
settlement turns into signed, reconciled statements. The database is dropped afterwards.

    python -m bench.settlement                 # 1,000,000 obligations, and 250,000 to show growth
    BENCH_SETTLEMENT_OBLIGATIONS=200000 python -m bench.settlement
    python -m bench.settlement --only --obligations 10000000 \\
        --into-report bench/results/latest.json   # a size too large for every `make bench`
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m bench.settlement

Without DATABASE_URL (or TEST_DATABASE_URL), the benchmark's own embedded server in .data/bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg

from bench import database, seed
from core.clock import SystemClock
from core.database import Database
from core.migrations import upgrade_to_head_async
from settlement import service

BENCH_DB = "bench_settlement"
DEFAULT_OBLIGATIONS = 1_000_000
AGGREGATE_RUNS = 3
# seed.generate makes ~1.6 obligations per member; chunks of this many members are seeded until
# there are enough obligations.
SEED_CHUNK_MEMBERS = 100_000

AGGREGATE_SQL = """SELECT debtor_id, creditor_id, sum(points)::bigint AS points,
                          sum(gross_value)::bigint AS gross, sum(fee)::bigint AS fee,
                          count(*) AS obligations
                   FROM obligations GROUP BY debtor_id, creditor_id"""


def log(message: str) -> None:
    sys.stderr.write(f"[bench.settlement {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _server_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


async def _recreate(admin_url: str, name: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return _database(admin_url, name)


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def _obligation_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM obligations"))
    finally:
        await conn.close()


async def _seed(url: str, obligations: int) -> dict[str, Any]:
    """The alliance, then members chunk by chunk until there are `obligations` or more."""
    started = time.perf_counter()
    db = await Database.connect(url, min_size=1, max_size=4)
    try:
        now = seed.utc_now()
        with tempfile.TemporaryDirectory() as folder:
            partners = await seed.found_alliance(db, now, Path(folder) / "keys.json")
    finally:
        await db.close()
    merchant_ids = [p.merchant_id for p in partners]
    members = 0
    count = 0
    while count < obligations:
        # Aim straight for the target (1.6 per member), then top up in smaller steps.
        wanted = max(int((obligations - count) / 1.55), 1_000)
        step = min(wanted, SEED_CHUNK_MEMBERS)
        await seed.seed_members(
            url, start=members, stop=members + step, merchant_ids=merchant_ids, now=now
        )
        members += step
        count = await _obligation_count(url)
        log(f"seeded {members:,} members, {count:,} obligations")
    await seed.vacuum_analyze(url)
    return {
        "cutoff": now,
        "members": members,
        "seconds": time.perf_counter() - started,
        "rows": await seed.counts(url),
    }


async def _aggregate(url: str) -> tuple[float, int, int]:
    """Seconds of the bare aggregate, its (debtor, creditor) pairs, the obligations it counted."""
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        rows = await conn.fetch(AGGREGATE_SQL)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return seconds, len(rows), sum(int(row["obligations"]) for row in rows)


async def _settle(url: str, cutoff: Any) -> dict[str, Any]:
    """One real settlement run over every seeded obligation, timed phase by phase."""
    db = await Database.connect(url, min_size=2, max_size=4, statement_timeout_s=None)
    try:
        phases: dict[str, float] = {}
        first_seen: dict[str, float] = {}
        started = time.perf_counter()

        def progress(phase: str, done: int, total: int | None) -> None:
            now = time.perf_counter()
            first_seen.setdefault(phase, now)
            phases[phase] = now - first_seen[phase]

        result = await service.settle_cutoff(db, SystemClock(), cutoff, progress=progress)
        seconds = time.perf_counter() - started
        breaks = await service.verify(db)
    finally:
        await db.close()
    assert not result.replayed, "the period was settled before the benchmark"
    if breaks:
        raise SystemExit(f"the settled benchmark ledger does not verify: {breaks}")
    # A phase's time runs from its first report to the next phase's first report.
    order = sorted(first_seen, key=first_seen.__getitem__)
    ends = [first_seen[name] for name in order[1:]] + [started + seconds]
    return {
        "seconds": seconds,
        "phases_s": {
            "before_claim": (first_seen[order[0]] - started) if order else seconds,
            **{name: end - first_seen[name] for name, end in zip(order, ends, strict=True)},
        },
        "run_id": result.run.run_id,
        "obligations": result.run.obligations,
        "transactions": result.run.transactions,
        "merchants": result.merchants,
        "gross_total": result.run.gross_total,
        "fee_total": result.run.fee_total,
    }


async def measure_settlement(database_url: str, obligations: int) -> dict[str, Any]:
    """Seed at least `obligations` unsettled obligations in a fresh `bench_settlement` database
    on the server of `database_url` (any database there; asyncpg or SQLAlchemy form), settle
    them in one real run, and time the bare aggregate over the same rows. The database is
    dropped at the end. Returns the figures (seconds, rows/s, ratio)."""
    admin = _server_url(database_url)
    url = await _recreate(admin, BENCH_DB)
    try:
        await upgrade_to_head_async(url)
        seeded = await _seed(url, obligations)
        log(f"seeded in {seeded['seconds']:.1f} s: {seeded['rows']}")
        warm_up, _, _ = await _aggregate(url)
        settled = await _settle(url, seeded["cutoff"])
        log(f"settled {settled['obligations']:,} obligations in {settled['seconds']:.2f} s")
        timings = []
        for _ in range(AGGREGATE_RUNS):
            seconds, pairs, counted = await _aggregate(url)
            timings.append(seconds)
        aggregate_s = statistics.median(timings)
    finally:
        await _drop(admin, BENCH_DB)
    rows = seeded["rows"]["obligations"]
    assert settled["obligations"] == counted == rows, "the run and the aggregate saw every row"
    return {
        "obligations": rows,
        "transactions": settled["transactions"],
        "members": seeded["members"],
        "merchants": settled["merchants"],
        "pairs": pairs,
        "seed_seconds": round(seeded["seconds"], 1),
        "settlement_seconds": round(settled["seconds"], 3),
        "settlement_obligations_per_s": round(rows / settled["seconds"]),
        "settlement_phases_s": {k: round(v, 3) for k, v in settled["phases_s"].items()},
        "aggregate_seconds": round(aggregate_s, 3),
        "aggregate_seconds_runs": [round(t, 3) for t in timings],
        "aggregate_warm_up_seconds": round(warm_up, 3),
        "aggregate_obligations_per_s": round(rows / aggregate_s),
        # The share of the bare aggregate's speed that settlement achieves (1.0 = as fast).
        "ratio": round(aggregate_s / settled["seconds"], 4),
        "gross_total": settled["gross_total"],
        "fee_total": settled["fee_total"],
    }


async def measure_growth(database_url: str, sizes: list[int]) -> dict[str, Any]:
    """`measure_settlement` at each size, smallest first, and how time grows with size."""
    results = []
    for size in sorted(sizes):
        log(f"measuring {size:,} obligations")
        results.append(await measure_settlement(database_url, size))
    return {"sizes": results, "growth": growth_of(results)}


def growth_of(sizes: list[dict[str, Any]]) -> dict[str, float] | None:
    """How settlement and aggregate times grow from the smallest size measured to the largest."""
    if len(sizes) < 2:
        return None
    small, large = sizes[0], sizes[-1]
    return {
        "rows_factor": round(large["obligations"] / small["obligations"], 3),
        "settlement_time_factor": round(
            large["settlement_seconds"] / small["settlement_seconds"], 3
        ),
        "aggregate_time_factor": round(large["aggregate_seconds"] / small["aggregate_seconds"], 3),
    }


def add_to_report(measured: dict[str, Any], results_file: Path, *, requested: int) -> None:
    """Add sizes measured apart (a size too large for every `make bench`) to the latest report,
    marked as such, and render it again."""
    from bench import report

    results = json.loads(results_file.read_text())
    settlement = results.setdefault("settlement", {"sizes": []})
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for size in measured["sizes"]:
        size["measured_apart"] = when
        size["requested"] = requested
    sizes = sorted(settlement["sizes"] + measured["sizes"], key=lambda s: s["obligations"])
    settlement["sizes"] = sizes
    settlement["growth"] = growth_of([s for s in sizes if "measured_apart" not in s])
    # Measured apart, on the same machine as the report's own sizes, soon after them.
    growth_apart = growth_of(sizes)
    settlement["growth_apart"] = growth_apart and {**growth_apart, "measured_apart": when}
    report.write(results, results_file.parent)


def keep_sizes_measured_apart(settlement: dict[str, Any], previous_report: Path) -> None:
    """Carry into `settlement` the sizes of `previous_report` measured apart (each keeps its
    date) that are larger than any measured now: `make bench` does not redo a multi-hour size,
    and must not silently drop it from the report either. This run's growth stays its own; the
    growth to the kept size is the one measured with it (on its day's machine), not one mixing
    today's small sizes with another day's large one."""
    if not previous_report.exists():
        return
    previous = json.loads(previous_report.read_text()).get("settlement") or {}
    largest = max((size["obligations"] for size in settlement["sizes"]), default=0)
    kept = [
        size
        for size in previous.get("sizes", [])
        if "measured_apart" in size and size["obligations"] > largest
    ]
    if not kept:
        return
    settlement["sizes"] = sorted(settlement["sizes"] + kept, key=lambda s: s["obligations"])
    growth_apart = previous.get("growth_apart")
    if growth_apart is None and previous.get("growth"):  # a report from before growth_apart
        growth_apart = {**previous["growth"], "measured_apart": kept[-1]["measured_apart"]}
    settlement["growth_apart"] = growth_apart


def _url() -> str:
    """DATABASE_URL, else TEST_DATABASE_URL, else the benchmark's embedded server."""
    url = os.environ.get("DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if url:
        return _server_url(url)
    return database.start().admin_url


def main() -> None:
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    default = int(
        os.environ.get("BENCH_SETTLEMENT_OBLIGATIONS", str(int(DEFAULT_OBLIGATIONS * scale)))
    )
    parser = argparse.ArgumentParser(description="Settlement beside a bare GROUP BY.")
    parser.add_argument("--obligations", type=int, default=default, help="the largest size")
    parser.add_argument("--only", action="store_true", help="that size alone, not also N/4")
    parser.add_argument(
        "--into-report",
        type=Path,
        metavar="LATEST_JSON",
        help="add the sizes to this report (bench/results/latest.json) and render it again",
    )
    args = parser.parse_args()
    sizes = [args.obligations] if args.only else [max(args.obligations // 4, 1), args.obligations]
    measured = asyncio.run(measure_growth(_url(), sizes))
    if args.into_report is not None:
        add_to_report(measured, args.into_report, requested=args.obligations)
    sys.stdout.write(json.dumps(measured, indent=2) + "\n")


if __name__ == "__main__":
    main()
