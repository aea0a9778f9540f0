"""The report: bench/results/latest.json, latest.md, and the table in bench/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def spread(s: dict[str, float], unit: str = "") -> str:
    return f"**{fmt(s['median'])}**{unit} ({fmt(s['min'])}–{fmt(s['max'])})"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def rows(r: dict[str, Any]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Table rows and target verdicts."""
    app, limits = r["app"], r["limits"]
    table: list[list[str]] = []
    targets: list[dict[str, Any]] = []
    for clients, m in app["redeem"].items():
        tpcb = limits["tpcb"][clients]["tps"]
        table.append([
            f"signed single redemptions/s, members spread, {clients} clients",
            f"{spread(m['per_s'])}; p50 {fmt(m['p50_ms']['median'])} ms, "
            f"p99 {fmt(m['p99_ms']['median'])} ms ({fmt(m['p99_ms']['min'])}–"
            f"{fmt(m['p99_ms']['max'])})",
            f"pgbench TPC-B, {clients} clients: {spread(tpcb)} tps",
            f"{ratio(m['per_s']['median'], tpcb['median']):.1%}",
        ])  # fmt: skip
    for clients, m in app["issue_hot"].items():
        base = app["issue"][clients]["per_s"]
        table.append([
            f"signed single issuances/s, **one hot issuer**, {clients} clients",
            f"{spread(m['per_s'])}; p50 {fmt(m['p50_ms']['median'])} ms, "
            f"p99 {fmt(m['p99_ms']['median'])} ms",
            f"the same, issuers spread: {spread(base)}/s",
            f"{ratio(m['per_s']['median'], base['median']):.1%}",
        ])  # fmt: skip
    for clients, m in app["issue"].items():
        tpcb = limits["tpcb"][clients]["tps"]
        table.append([
            f"signed single issuances/s, issuers spread, {clients} clients",
            f"{spread(m['per_s'])}; p50 {fmt(m['p50_ms']['median'])} ms, "
            f"p99 {fmt(m['p99_ms']['median'])} ms",
            f"pgbench TPC-B, {clients} clients: {spread(tpcb)} tps",
            f"{ratio(m['per_s']['median'], tpcb['median']):.1%}",
        ])  # fmt: skip
    bal, sel = app["balance"], limits["select_only"]["32"]["tps"]
    table.append([
        "signed balance reads/s, 32 clients",
        f"{spread(bal['per_s'])}; p50 {fmt(bal['p50_ms']['median'])} ms, "
        f"p99 {fmt(bal['p99_ms']['median'])} ms",
        f"pgbench -S, 32 clients: {spread(sel)} tps",
        f"{ratio(bal['per_s']['median'], sel['median']):.1%}",
    ])  # fmt: skip
    batch, copy = app["batch"], limits["copy"]
    table.append([
        f"batch issuance via /v1/batches ({r['config']['batch_size']:,} ops/request, "
        f"{r['config']['batch_clients']} clients), ops/s",
        spread(batch["per_s"]),
        f"COPY of {copy['rows']:,} rows into a table with the indexes of `transactions`: "
        f"{spread(copy['rows_per_s'])} rows/s",
        f"{ratio(batch['per_s']['median'], copy['rows_per_s']['median']):.1%}",
    ])  # fmt: skip
    grown = app.get("balance_grown")
    base_p99 = bal["p99_ms"]
    base_n, grown_n = r["sizes"]["postings"], r.get("sizes_grown", {}).get("postings", 0)
    if grown is not None:
        table.append([
            f"balance-read p99, {grown_n:,} ledger entries (postings)",
            f"{spread(grown['p99_ms'], ' ms')}; {fmt(grown['per_s']['median'])} reads/s",
            f"balance-read p99 at {base_n:,} entries: {spread(base_p99, ' ms')}",
            f"{ratio(grown['p99_ms']['median'], base_p99['median']):.2f}×",
        ])  # fmt: skip
    mem = r["memory"]
    table.append([
        f"peak RSS of the server under load ({mem['processes']})",
        f"**{mem['peak_rss_total_mib']:,.0f} MiB** (largest process "
        f"{mem['peak_rss_process_mib']:,.0f} MiB)",
        f"machine memory {r['machine']['memory_gib']} GiB",
        f"{mem['peak_rss_total_mib'] / 1024 / r['machine']['memory_gib']:.2%}",
    ])  # fmt: skip
    settlement = r.get("settlement")
    for size in settlement["sizes"] if settlement else []:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in size["settlement_phases_s"].items())
        apart = (
            f" (measured apart, {size['measured_apart']}: `python -m bench.settlement --only "
            f"--obligations {size.get('requested', size['obligations'])} --into-report "
            "bench/results/latest.json`)"
            if "measured_apart" in size
            else ""
        )
        table.append([
            f"settlement of {size['obligations']:,} obligations: one run (claim, net, Merkle "
            f"over {size['transactions']:,} transactions, sign, statements, reconcile), s{apart}",
            f"**{fmt(size['settlement_seconds'])}** s, "
            f"{fmt(size['settlement_obligations_per_s'])} obligations/s ({phases})",
            f"bare `GROUP BY` over the same obligations: **{fmt(size['aggregate_seconds'])}** s, "
            f"{fmt(size['aggregate_obligations_per_s'])} rows/s",
            f"{size['ratio']:.2%}",
        ])  # fmt: skip
    growths = _growths(settlement)
    for label, growth in growths:
        table.append([
            f"settlement time growth, {growth['rows_factor']:.2f}× the obligations ({label})",
            f"**{growth['settlement_time_factor']:.2f}×** the time",
            f"the aggregate: {growth['aggregate_time_factor']:.2f}× the time",
            f"{growth['settlement_time_factor'] / growth['rows_factor']:.2f} per unit of growth",
        ])  # fmt: skip

    red32 = app["redeem"].get("32")
    if red32 is not None:
        share = ratio(red32["per_s"]["median"], limits["tpcb"]["32"]["tps"]["median"])
        targets.append({
            "target": "signed single redemptions ≥ 35% of TPC-B tps at 32 clients",
            "value": f"{share:.1%}",
            "met": share >= 0.35,
        })  # fmt: skip
        p99 = red32["p99_ms"]["median"]
        targets.append({
            "target": "signed single redemptions p99 < 100 ms at 32 clients",
            "value": f"{fmt(p99)} ms",
            "met": p99 < 100,
        })  # fmt: skip
    for clients, m in app["issue_hot"].items():
        share = ratio(m["per_s"]["median"], app["issue"][clients]["per_s"]["median"])
        targets.append({
            "target": f"hot issuer ≥ 80% of the spread figure ({clients} clients)",
            "value": f"{share:.1%}",
            "met": share >= 0.80,
        })  # fmt: skip
    targets.append({
        "target": "batch issuance ≥ 40,000 ops/s",
        "value": f"{fmt(batch['per_s']['median'])} ops/s",
        "met": batch["per_s"]["median"] >= 40_000,
    })  # fmt: skip
    if settlement:
        largest = settlement["sizes"][-1]
        targets.append({
            "target": f"settlement ≥ 50% of the bare aggregate's rows/s "
            f"({largest['obligations']:,} obligations)",
            "value": f"{largest['ratio']:.2%}",
            "met": largest["ratio"] >= 0.5,
        })  # fmt: skip
    for label, growth in growths:
        per_unit = growth["settlement_time_factor"] / growth["rows_factor"]
        targets.append({
            "target": "settlement time grows linearly with the obligations (≤ 1.2 per unit; "
            f"{label})",
            "value": f"{per_unit:.2f}",
            "met": per_unit <= 1.2,
        })  # fmt: skip
    if grown is not None:
        flat = ratio(grown["p99_ms"]["median"], base_p99["median"])
        targets.append({
            "target": f"balance-read p99 at {grown_n:,} entries within 1.5× of p99 at "
            f"{base_n:,}",
            "value": f"{flat:.2f}×",
            "met": flat <= 1.5,
        })  # fmt: skip
    return table, targets


def markdown(r: dict[str, Any]) -> str:
    table, targets = rows(r)
    m, pg, cfg = r["machine"], r["postgres"], r["config"]
    sizes, grown = r["sizes"], r.get("sizes_grown")
    lines = [
        f"Run of {r['generated_at']} ({r['elapsed_s'] / 60:.1f} min). Each figure: the **median**"
        f" of {cfg['runs']} runs of {cfg['duration_s']:g} s (min–max in brackets); the ratio is"
        " median / median.",
        "",
        "| measure | result | its limit, measured in the same run | ratio |",
        "| --- | --- | --- | --- |",
        *("| " + " | ".join(row) + " |" for row in table),
        "",
        "| target | this run | |",
        "| --- | --- | --- |",
        *(
            f"| {t['target']} | {t['value']} | {'met' if t['met'] else '**missed**'} |"
            for t in targets
        ),
        "",
        f"**Machine**: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}, "
        f"Python {m['python']}; load average at start {m['load_average_at_start']} (the machine "
        "is shared: other test suites may run during the benchmark).",
        "",
        f"**PostgreSQL**: {pg['version']}; {pg['where']}; "
        + ", ".join(f"{k} = {v}" for k, v in pg.items() if k not in ("version", "where"))
        + ". Stock settings: the exchange and pgbench run against the same server.",
        "",
        f"**Sizes** (BENCH_SCALE = {cfg['scale']:g}): {sizes['merchants']} merchants, "
        f"{sizes['members']:,} members, {sizes['transactions']:,} transactions, "
        f"{sizes['postings']:,} postings (ledger entries), {sizes['lots']:,} lots, "
        f"{sizes['obligations']:,} obligations; seeded by COPY in {sizes['seed_s']} s, "
        f"`alliance verify` {sizes['verify']} ({sizes['verify_s']} s)."
        + (
            f" Grown for the flatness row (BENCH_GROWN_SCALE = {cfg['grown_scale']:g}) to "
            f"{grown['members']:,} members, {grown['transactions']:,} transactions, "
            f"{grown['postings']:,} postings, in {grown['grow_s']} s."
            if grown
            else " The ledger was not grown (no flatness row)."
        ),
        "",
        f"**Setup**: `alliance serve --workers {cfg['server_workers']}` (pool 20 connections per "
        "worker, per-merchant rate limit lifted); the load generator is one separate process "
        "(`python -m bench.load`, aiohttp on uvloop) on the same 2 cores, signing every request "
        "(Ed25519, fresh nonce, Content-Digest, fresh Idempotency-Key). Errors seen: "
        + (
            ", ".join(
                f"{name} {k}: {v}"
                for name, mres in _series(r)
                for k, v in mres.get("errors", {}).items()
            )
            or "none"
        )
        + ".",
    ]
    cpu = cpu_rows(r)
    if cpu:
        lines += [
            "",
            f"**Where the CPU goes** (ms of CPU per operation, median of the runs; every operation"
            f" sent counts, warm-up included). The ceiling is what the machine's {m['cores']} "
            "cores allow if they did nothing else: cores × 1,000 / total ms.",
            "",
            "| series | server | PostgreSQL | load generator | total | ceiling | measured "
            "| of ceiling |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *("| " + " | ".join(row) + " |" for row in cpu),
        ]
    if "profile" in r:
        lines += ["", f"**Profile**: {r['profile']['summary']}"]
    return "\n".join(lines) + "\n"


def cpu_rows(r: dict[str, Any]) -> list[list[str]]:
    """CPU time per operation by process, and the ceiling the machine's cores put on the rate:
    cores x 1,000 / (ms of CPU per operation), were nothing else running."""
    cores = r["machine"]["cores"] or 1
    table: list[list[str]] = []
    for name, m in _series(r):
        cpu = m.get("cpu_ms_per_op")
        if not cpu:
            continue
        parts = [cpu["server"], cpu["postgres"], cpu["load_generator"]]
        known = [part for part in parts if part is not None]
        total = sum(known)
        ceiling = ratio(cores * 1000, total)
        table.append([
            name.replace("_", " "),
            *("n/a" if part is None else f"{part:.3f}" for part in parts),
            f"{total:.3f}",
            f"{fmt(ceiling)}/s",
            f"{fmt(m['per_s']['median'])}/s",
            f"{ratio(m['per_s']['median'], ceiling):.0%}",
        ])  # fmt: skip
    return table


def _series(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for name, value in r["app"].items():
        if "per_s" in value:
            found.append((name, value))
        else:
            found += [(f"{name} x{c}", v) for c, v in value.items()]
    return found


def write(r: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _, targets = rows(r)
    r["targets"] = targets
    (directory / "latest.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    text = markdown(r)
    (directory / "latest.md").write_text("# Benchmark: latest run\n\n" + text)
    if README.exists():
        readme = README.read_text()
        if START in readme and END in readme:
            head, _, rest = readme.partition(START)
            _, _, tail = rest.partition(END)
            README.write_text(f"{head}{START}\n{text}{END}{tail}")


def _growths(settlement: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The run's own growth, and the growth to a size measured apart, each labelled."""
    if not settlement:
        return []
    growths = []
    if settlement.get("growth"):
        growths.append(("this run's sizes", settlement["growth"]))
    apart = settlement.get("growth_apart")
    if apart:
        growths.append((f"to the size measured apart, {apart['measured_apart']}", apart))
    return growths
