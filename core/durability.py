"""The durability guard (RELIABILITY.md D7): the exchange serves only on a PostgreSQL that keeps
what it commits and runs transactions at the isolation level the code was written for.

`unsafe_settings` is pure: it judges settings already read. `read_settings` reads them, over the
connection the app will use, from `pg_settings`, which shows what that session really gets
(postgresql.conf, `ALTER DATABASE … SET`, `ALTER ROLE … SET`, the client's `options`) and where
each value came from. `check` does both; `ensure_durable` raises `UnsafeDatabaseSettings`, whose
message names each unsafe setting, its value and source, the value required and how to fix it.

What is required, and why (ADR 0023):

- `fsync = on`: without it a crash of the host can lose committed transactions or corrupt the
  cluster. Only settable server-wide (postgresql.conf or `ALTER SYSTEM`, then a reload).
- `full_page_writes = on`: without it a page torn by a crash mid-write cannot be repaired from the
  WAL. Server-wide, like fsync.
- `synchronous_commit` in `on` or `remote_apply`: the values that wait for the commit record to be
  flushed to the local disk *and* (when `synchronous_standby_names` names standbys) at least as
  long as `on` does for the standbys. `off` acknowledges commits that a crash can still lose (up
  to three times `wal_writer_delay`); `local` never waits for a synchronous standby, and
  `remote_write` waits only until a standby has handed the record to its operating system, not
  flushed it, so a standby's host crash can lose what the primary already acknowledged. Both
  are weaker than `on` on a replicated server. Without synchronous standbys all four of on,
  remote_apply, remote_write and local flush locally and behave alike, but `local` and
  `remote_write` are refused there too: they would weaken the guarantee silently the day a
  standby is added, and the requirement (D7) is `on`.
- `default_transaction_isolation = read committed`: `Database.transaction()` begins with a bare
  `BEGIN`, so every ledger use case runs at the server's default level, and the locking design
  (ADR 0005, docs/ledger.md "Isolation and locking") depends on it being READ COMMITTED: each
  use case locks the member account row and then reads lots and holds in fresh snapshots that see
  what the previous lock holder committed. Under REPEATABLE READ or SERIALIZABLE the same code
  would fail with serialization errors the use cases do not retry (it would not be silently wrong,
  but it would refuse valid operations under contention). The places that want a stronger level
  ask for it explicitly (`alliance verify` and a settlement run open REPEATABLE READ
  transactions), so they do not depend on the default. `read uncommitted` behaves as READ
  COMMITTED in PostgreSQL but is still refused: the default must be the level the code names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import asyncpg

SERVER_WIDE_FIX: Final = (
    "set {name} = '{required}' in postgresql.conf (or, as a superuser, "
    "ALTER SYSTEM SET {name} = '{required}';), then reload: SELECT pg_reload_conf();"
)
"""How to fix a setting that comes from the server's configuration."""


@dataclass(frozen=True)
class Requirement:
    """A setting the exchange depends on and the values it accepts (the first: the one to set)."""

    name: str
    accepted: tuple[str, ...]
    risk: str

    @property
    def required(self) -> str:
        return self.accepted[0]


REQUIREMENTS: Final = (
    Requirement("fsync", ("on",), "a host crash can lose committed transactions or corrupt data"),
    Requirement(
        "full_page_writes", ("on",), "a page torn by a crash cannot be recovered from the WAL"
    ),
    Requirement(
        "synchronous_commit",
        ("on", "remote_apply"),
        "a commit is acknowledged before it is durable, so a crash can lose acknowledged points",
    ),
    Requirement(
        "default_transaction_isolation",
        ("read committed",),
        "the ledger's locking (ADR 0005) assumes READ COMMITTED; other levels abort valid work",
    ),
)
"""Every setting the guard checks, in the order it reports them."""

MISSING: Final = "(not reported by the server)"


@dataclass(frozen=True)
class Setting:
    """A setting as one session sees it: its value and where it came from (`pg_settings.source`:
    default, configuration file, database, user, database user, client, …)."""

    value: str
    source: str = "default"


@dataclass(frozen=True)
class UnsafeSetting:
    name: str
    value: str
    source: str
    required: str
    accepted: tuple[str, ...]
    risk: str

    def describe(self, database: str = "<database>", role: str = "<role>") -> str:
        """Three lines: the setting, its value, where it came from and what is required; the
        risk; the fix."""
        others = "".join(f" or {value!r}" for value in self.accepted[1:])
        return (
            f"{self.name} = {self.value!r} (source: {self.source}); required: "
            f"{self.required!r}{others}\n"
            f"      risk: {self.risk}\n"
            f"      fix: {self.fix(database, role)}"
        )

    def fix(self, database: str, role: str) -> str:
        """How to fix it, by where the unsafe value came from (`pg_settings.source`)."""
        by_source = {
            "database": f'ALTER DATABASE "{database}" RESET {self.name};',
            "user": f'ALTER ROLE "{role}" RESET {self.name};',
            "database user": f'ALTER ROLE "{role}" IN DATABASE "{database}" RESET {self.name};',
            "client": (
                f"remove -c {self.name}=... from the connection's options "
                "(DATABASE_URL's options= or the PGOPTIONS environment variable)"
            ),
            "command line": f"remove -c {self.name}=... from the server's start command",
        }
        server_wide = SERVER_WIDE_FIX.format(name=self.name, required=self.required)
        return by_source.get(self.source, server_wide)


class UnsafeDatabaseSettings(RuntimeError):
    """The database would not keep what the exchange commits, or runs at the wrong isolation level.

    Not a `DomainError`: nothing is served, so the app does not start."""

    def __init__(self, unsafe: list[UnsafeSetting], *, database: str, role: str) -> None:
        self.unsafe = unsafe
        lines = [
            f"Refusing to start: PostgreSQL database {database!r} (as role {role!r}) has "
            f"{len(unsafe)} unsafe setting{'s' if len(unsafe) != 1 else ''} "
            "(RELIABILITY.md D7, ADR 0023):",
            *(f"  - {item.describe(database, role)}" for item in unsafe),
            "Fix them, then start the exchange again (new connections get the fixed settings).",
        ]
        super().__init__("\n".join(lines))


def unsafe_settings(settings: Mapping[str, Setting]) -> list[UnsafeSetting]:
    """The settings, of those `REQUIREMENTS` names, whose value is not accepted (a setting the
    server did not report counts as unsafe). Values compare case-insensitively."""
    unsafe: list[UnsafeSetting] = []
    for requirement in REQUIREMENTS:
        setting = settings.get(requirement.name, Setting(MISSING, "none"))
        if setting.value.strip().lower() not in requirement.accepted:
            unsafe.append(
                UnsafeSetting(
                    name=requirement.name,
                    value=setting.value,
                    source=setting.source,
                    required=requirement.required,
                    accepted=requirement.accepted,
                    risk=requirement.risk,
                )
            )
    return unsafe


async def read_settings(conn: asyncpg.Connection) -> dict[str, Setting]:
    """The checked settings as this session sees them."""
    rows = await conn.fetch(
        "SELECT name, setting, source FROM pg_settings WHERE name = ANY($1::text[])",
        [requirement.name for requirement in REQUIREMENTS],
    )
    return {row["name"]: Setting(row["setting"], row["source"]) for row in rows}


async def check(conn: asyncpg.Connection) -> list[UnsafeSetting]:
    """What is unsafe about the database `conn` is connected to; empty when all is well."""
    return unsafe_settings(await read_settings(conn))


async def ensure_durable(conn: asyncpg.Connection) -> None:
    """Raise `UnsafeDatabaseSettings` unless every checked setting is safe. Check over a
    connection of the pool that will serve: its settings are the ones transactions get."""
    unsafe = await check(conn)
    if unsafe:
        database, role = await conn.fetchrow("SELECT current_database(), current_user")
        raise UnsafeDatabaseSettings(unsafe, database=database, role=role)
