"""Settlement runs started from the console, run in the background as jobs.

A run over a large alliance's day takes minutes (10,000,000 obligations: several), longer than a
browser or a proxy waits for one request. So "Run settlement" starts a job in the worker that
took the request and answers at once; the job's phase, how far it is and a heartbeat go to
`settlement_jobs` every second, and the settlement page, on whichever worker serves it, shows
them until the job ends. The run itself is settlement's own unit of work (its advisory lock, its
one transaction): a job that dies with its worker leaves nothing half done, only a job row whose
heartbeat stopped, which the next start closes as interrupted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from console import audit
from console.limits import JOB_HEARTBEAT_S, JOB_STALE_S
from core.clock import Clock
from core.database import Database
from core.errors import DomainError
from core.ids import new_id
from settlement import service as settlement
from settlement.runs import RunInProgress

_log = logging.getLogger(__name__)

_JOB_COLUMNS = """job_id, started_by, started_at, cutoff, phase, done, total, heartbeat_at,
    finished_at, outcome, runs, detail,
    finished_at IS NULL AND heartbeat_at < clock_timestamp() - make_interval(secs => $1) AS stale"""


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    started_by: str
    started_at: datetime
    cutoff: datetime | None
    phase: str | None
    done: int | None
    total: int | None
    heartbeat_at: datetime
    finished_at: datetime | None
    outcome: str | None
    runs: list[str]
    detail: str | None
    stale: bool

    @property
    def running(self) -> bool:
        return self.finished_at is None and not self.stale

    @property
    def percent(self) -> int | None:
        """How far the current phase is, when it knows its total."""
        if not self.total or self.done is None:
            return None
        return min(100, self.done * 100 // self.total)


@dataclass(slots=True)
class _Progress:
    """The run's latest progress callback, read by the heartbeat."""

    phase: str | None = None
    done: int | None = None
    total: int | None = None

    def update(self, phase: str, done: int, total: int | None) -> None:
        self.phase, self.done, self.total = phase, done, total


class Jobs:
    """The jobs this worker runs; it keeps each task referenced until it ends."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(
        self,
        db: Database,
        clock: Clock,
        *,
        actor: str,
        cutoff: datetime | None,
        on_end: Callable[[], None] = lambda: None,
    ) -> str:
        """Record a job and start it; refused while another job is running anywhere. `on_end`
        is called when it ends, whatever the outcome (the dashboard drops its cached figures)."""
        job_id = new_id("job")
        async with db.transaction() as conn:
            await _close_stale(conn)
            try:
                async with conn.transaction():  # a savepoint: a refusal keeps the transaction
                    await conn.execute(
                        """INSERT INTO settlement_jobs (job_id, started_by, cutoff)
                           VALUES ($1, $2, $3)""",
                        job_id,
                        actor,
                        cutoff,
                    )
            except asyncpg.UniqueViolationError:
                raise RunInProgress(
                    "a settlement run started from the console is still running; "
                    "this page shows its progress"
                ) from None
            await audit.append(
                conn,
                actor=actor,
                action="settlement.run_started",
                target=job_id,
                at=clock.now(),
                details={"cutoff": audit.rfc3339(cutoff) if cutoff else None},
            )
        task = asyncio.create_task(_run(db, clock, job_id, actor=actor, cutoff=cutoff))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: on_end())
        return job_id


async def latest(db: Database) -> Job | None:
    """The job started last, running or not."""
    async with db.connection() as conn:
        row = await conn.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM settlement_jobs ORDER BY started_at DESC LIMIT 1",
            float(JOB_STALE_S),
        )
    return None if row is None else Job(**dict(row))


async def _close_stale(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """UPDATE settlement_jobs
              SET finished_at = clock_timestamp(), outcome = 'interrupted',
                  detail = 'its worker stopped before it ended; a run it had not finished was '
                           'rolled back, and the runs it finished are listed under Runs'
            WHERE finished_at IS NULL
              AND heartbeat_at < clock_timestamp() - make_interval(secs => $1)""",
        float(JOB_STALE_S),
    )


async def _run(
    db: Database, clock: Clock, job_id: str, *, actor: str, cutoff: datetime | None
) -> None:
    progress = _Progress()
    heartbeat = asyncio.create_task(_beat(db, job_id, progress))
    outcome, runs, detail, replayed = "failed", [], None, False
    try:
        # The server's pool bounds every statement; a run's statements span whole periods.
        async with db.for_batch_work() as batch:
            result = await settlement.run_settlement(
                batch, clock, cutoff=cutoff, progress=progress.update
            )
        outcome, runs = "settled", [run["run_id"] for run in result["runs"]]
        replayed = bool(result.get("replayed"))
    except DomainError as refusal:
        outcome, detail = "refused", refusal.detail
    except Exception:
        # The page says only that it failed; what failed is in the server's log.
        _log.exception("settlement job %s failed", job_id)
        detail = "the run failed and was rolled back; the server's log names the error"
    finally:
        heartbeat.cancel()
    try:
        await _finish(
            db,
            clock,
            job_id,
            actor=actor,
            cutoff=cutoff,
            outcome=outcome,
            runs=runs,
            detail=detail,
            replayed=replayed,
        )
    except Exception:
        # The job row keeps its last heartbeat and is closed as interrupted by the next start;
        # the runs it produced are settlement's own, committed, and listed under Runs.
        _log.exception("settlement job %s: its end not recorded", job_id)


async def _beat(db: Database, job_id: str, progress: _Progress) -> None:
    while True:
        try:
            async with db.connection() as conn:
                await conn.execute(
                    """UPDATE settlement_jobs
                          SET phase = $2, done = $3, total = $4, heartbeat_at = clock_timestamp()
                        WHERE job_id = $1 AND finished_at IS NULL""",
                    job_id,
                    progress.phase,
                    progress.done,
                    progress.total,
                )
        except (asyncpg.PostgresError, OSError, TimeoutError):
            _log.warning("settlement job %s: heartbeat not written", job_id, exc_info=True)
        await asyncio.sleep(JOB_HEARTBEAT_S)


async def _finish(
    db: Database,
    clock: Clock,
    job_id: str,
    *,
    actor: str,
    cutoff: datetime | None,
    outcome: str,
    runs: list[str],
    detail: str | None,
    replayed: bool,
) -> None:
    details: dict[str, Any] = {
        "job": job_id,
        "cutoff": audit.rfc3339(cutoff) if cutoff else None,
        "runs": runs,
        "replayed": replayed,
    }
    if detail is not None:
        details["detail"] = detail
    async with db.transaction() as conn:
        await conn.execute(
            """UPDATE settlement_jobs
                  SET finished_at = clock_timestamp(), heartbeat_at = clock_timestamp(),
                      outcome = $2, runs = $3, detail = $4
                WHERE job_id = $1 AND finished_at IS NULL""",
            job_id,
            outcome,
            runs,
            detail,
        )
        # The run committed on its own (settlement's unit of work); its audit entry follows it.
        await audit.append(
            conn,
            actor=actor,
            action="settlement.run" if outcome == "settled" else f"settlement.run_{outcome}",
            target=job_id,
            at=clock.now(),
            details=details,
        )
