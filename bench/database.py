"""The benchmark's PostgreSQL: its own embedded server (or `DATABASE_URL`'s), fresh databases."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse, urlunparse

import asyncpg

from core.database import embedded_database_url

DATA_DIR = Path(".data/bench")
LEDGER_DB = "bench_alliance"
PGBENCH_DB = "bench_pgbench"


@dataclass(frozen=True, slots=True)
class Server:
    admin_url: str  # any database on the server, to create and drop ours
    embedded: bool
    bin_dir: Path | None  # where pgbench and psql are

    def url(self, database: str) -> str:
        parsed = urlparse(self.admin_url)
        return urlunparse(parsed._replace(path=f"/{database}"))

    def pgbench(self) -> str:
        if self.bin_dir is not None and (self.bin_dir / "pgbench").exists():
            return str(self.bin_dir / "pgbench")
        found = shutil.which("pgbench")
        if found is None:
            raise SystemExit("pgbench not found (pgserver's bin/ or PATH)")
        return found

    def host_args(self, database: str) -> list[str]:
        """libpq connection options for pgbench."""
        parsed = urlparse(self.url(database))
        host = parsed.hostname or parse_qs(parsed.query).get("host", [""])[0]
        args = ["-h", host, "-U", parsed.username or "postgres"]
        if parsed.port:
            args += ["-p", str(parsed.port)]
        return [*args, database]

    def env(self) -> dict[str, str]:
        password = urlparse(self.admin_url).password
        return {**os.environ, **({"PGPASSWORD": password} if password else {})}


def start() -> Server:
    """`DATABASE_URL` if set, else the benchmark's own embedded server in .data/bench/."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return Server(url.replace("postgresql+asyncpg://", "postgresql://"), False, None)
    import pgserver

    admin = embedded_database_url(DATA_DIR)
    bin_dir = Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"
    return Server(admin, True, bin_dir)


async def recreate(server: Server, database: str) -> str:
    conn = await asyncpg.connect(server.admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {database}")
    finally:
        await conn.close()
    return server.url(database)


async def describe(server: Server) -> dict[str, str]:
    """The PostgreSQL version and the settings that matter for throughput."""
    names = (
        "server_version",
        "max_connections",
        "shared_buffers",
        "effective_cache_size",
        "work_mem",
        "maintenance_work_mem",
        "wal_level",
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "max_wal_size",
        "checkpoint_timeout",
        "wal_buffers",
        "random_page_cost",
        "jit",
    )
    conn = await asyncpg.connect(server.admin_url)
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(names)
        )
        version = await conn.fetchval("SELECT version()")
    finally:
        await conn.close()
    settings = {
        row["name"]: f"{row['setting']}{' ' + row['unit'] if row['unit'] else ''}" for row in rows
    }
    return {"version": str(version), **dict(sorted(settings.items()))}
