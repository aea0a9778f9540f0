"""The ledger's use cases, each one unit of work: what the API, the CLI and the console call.

Every mutation runs in one READ COMMITTED transaction that (1) checks the acting merchant may
transact, (2) claims the idempotency key, (3) locks the member account(s) it touches, (4) applies
the rule, (5) records the idempotency result, and commits, or on any refusal rolls back whole.
A refusal by a rule of the ledger is then recorded under the key in a transaction of its own,
the key held throughout, so that a retry replays it (ADR 0013).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.clock import Clock, SystemClock
from core.database import Database
from core.errors import DomainError, NotFound, ValidationFailed
from core.ids import new_id
from core.limits import EXTERNAL_REF_LENGTH_MAX, PAGE_SIZE_DEFAULT
from exchange import bulk, convert, earn, expiry, idempotency, queries, refund, repository, spend
from exchange.context import Context, check_instant
from exchange.errors import AllianceNotConfigured, MerchantSuspended
from exchange.faults import after_commit
from exchange.views import rfc3339
from merchants import repository as merchant_repository
from merchants.models import ALLIANCE_POINT, AllianceSettings, MerchantStatus

UseCase = Callable[..., Awaitable[dict[str, Any]]]
"""A ledger use case: `(conn, ctx, **arguments)` to the body merchants see."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A mutation's result as merchants see it, and whether it is a replay of an earlier call."""

    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    external_ref: str
    created: bool


async def settings_at(conn: asyncpg.Connection, now: datetime) -> AllianceSettings:
    settings = await merchant_repository.settings_at(conn, now)
    if settings is None:
        raise AllianceNotConfigured("the alliance has no settings yet")
    return settings


def _check_external_ref(external_ref: str) -> None:
    if not isinstance(external_ref, str) or not 1 <= len(external_ref) <= EXTERNAL_REF_LENGTH_MAX:
        raise ValidationFailed(
            f"external_ref must be 1 to {EXTERNAL_REF_LENGTH_MAX} characters",
            fields={"external_ref": "bad length"},
        )


async def _get_or_create_member(
    conn: asyncpg.Connection, external_ref: str, now: datetime
) -> tuple[str, bool]:
    existing = await repository.member_by_ref(conn, external_ref)
    if existing is not None:
        return existing, False
    candidate = new_id("mbr")
    member_id = await repository.insert_member(
        conn, member_id=candidate, external_ref=external_ref, now=now
    )
    return member_id, member_id == candidate


async def _enrol(conn: asyncpg.Connection, ctx: Context, *, external_ref: str) -> dict[str, Any]:
    member_id, created = await _get_or_create_member(conn, external_ref, ctx.now)
    return {"member_id": member_id, "external_ref": external_ref, "created": created}


def _fingerprintable(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as the idempotency fingerprint hashes them: instants in RFC 3339, UTC."""
    return {
        name: rfc3339(check_instant(value, name)) if isinstance(value, datetime) else value
        for name, value in arguments.items()
    }


def _issue_arguments(
    member_id: str, points: int, reference: str, expires_at: datetime | None, currency: str
) -> dict[str, Any]:
    """An issuance's arguments, as `issue` and `issue_many` fingerprint them alike."""
    return {
        "member_id": member_id,
        "points": points,
        "reference": reference,
        "expires_at": expires_at,
        "currency": currency,
    }


class Ledger:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock: Clock = clock or SystemClock()

    async def _context(self, conn: asyncpg.Connection, merchant_id: str) -> Context:
        now = self.clock.now()
        merchant, settings = await merchant_repository.merchant_and_settings_at(
            conn, merchant_id, now
        )
        if merchant is None:
            raise NotFound("no such merchant")
        if merchant.status is not MerchantStatus.ACTIVE:
            raise MerchantSuspended(f"the merchant is {merchant.status.value}")
        if settings is None:
            raise AllianceNotConfigured("the alliance has no settings yet")
        return Context(merchant=merchant, settings=settings, now=now)

    async def _idempotent(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        fingerprint: bytes,
        run: Callable[[asyncpg.Connection, Context], Awaitable[dict[str, Any]]],
    ) -> Outcome:
        """Claim the key in one transaction, replay its record or `run` and record the result.

        A refusal `run` meets (a rule of the ledger, `idempotency.recordable`) rolls its effects
        back and is recorded right after, in a transaction of its own, while the key is still
        held: a retry replays it (`idempotency.RefusalReplayed`), as it would a result.
        """
        async with self.db.connection() as conn:
            refused: tuple[DomainError, datetime] | None = None
            try:
                async with conn.transaction():
                    ctx = await self._context(conn, merchant_id)
                    stored = await idempotency.claim(
                        conn,
                        merchant_id=merchant_id,
                        key=idempotency_key,
                        fingerprint=fingerprint,
                        now=ctx.now,
                    )
                    if stored is not None:
                        return Outcome(stored, replayed=True)
                    try:
                        body = await run(conn, ctx)
                    except DomainError as error:
                        if idempotency.recordable(error):
                            await idempotency.keep(
                                conn, merchant_id=merchant_id, key=idempotency_key
                            )
                            refused = error, ctx.now
                        raise
                    await idempotency.record(
                        conn,
                        merchant_id=merchant_id,
                        key=idempotency_key,
                        fingerprint=fingerprint,
                        response=body,
                        now=ctx.now,
                    )
            except DomainError as error:
                if refused is not None and refused[0] is error:
                    await idempotency.record_refusal(
                        conn,
                        merchant_id=merchant_id,
                        key=idempotency_key,
                        fingerprint=fingerprint,
                        refusal=error,
                        now=refused[1],
                    )
                    after_commit()  # the refusal's record committed: a crash point too
                raise
        after_commit()  # a crash-test hook (exchange/faults.py): a no-op unless its variable is set
        return Outcome(body)

    async def _mutate(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        operation: str,
        use_case: UseCase,
        arguments: Mapping[str, Any],
    ) -> Outcome:
        """Run `use_case(conn, ctx, **arguments)` once per idempotency key, in one transaction."""

        async def run(conn: asyncpg.Connection, ctx: Context) -> dict[str, Any]:
            return await use_case(conn, ctx, **arguments)

        return await self._idempotent(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            fingerprint=idempotency.request_fingerprint(operation, _fingerprintable(arguments)),
            run=run,
        )

    async def once(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        operation: str,
        params: Mapping[str, Any],
        produce: Callable[[], Awaitable[dict[str, Any]]],
    ) -> Outcome:
        """Run `produce` at most once per key, for work spanning many transactions (a batch).

        The key is held (and a duplicate refused as in flight) while `produce` runs its own
        transactions; the result is recorded when it finishes. If the process dies midway nothing
        is recorded, and a retry runs `produce` again: its parts must be idempotent themselves.
        """

        async def run(conn: asyncpg.Connection, ctx: Context) -> dict[str, Any]:
            return await produce()

        return await self._idempotent(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            fingerprint=idempotency.request_fingerprint(operation, params),
            run=run,
        )

    # --- members and reads ---------------------------------------------------------------

    async def register_member(self, *, external_ref: str) -> Member:
        """The alliance-wide member for a reference: the same reference, the same member."""
        _check_external_ref(external_ref)
        async with self.db.transaction() as conn:
            member_id, created = await _get_or_create_member(conn, external_ref, self.clock.now())
        return Member(member_id, external_ref, created=created)

    async def enrol(self, *, merchant_id: str, idempotency_key: str, external_ref: str) -> Outcome:
        """`register_member` for a merchant's signed, idempotent request (POST /v1/members)."""
        _check_external_ref(external_ref)
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="enrol",
            use_case=_enrol,
            arguments={"external_ref": external_ref},
        )

    async def balance(self, *, member_id: str, currency: str = ALLIANCE_POINT) -> dict[str, Any]:
        async with self.db.connection() as conn:
            return await queries.balance(
                conn, member_id=member_id, currency=currency, now=self.clock.now()
            )

    async def transaction(self, *, merchant_id: str, transaction_id: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            return await queries.transaction(
                conn, merchant_id=merchant_id, transaction_id=transaction_id
            )

    async def transactions(
        self,
        *,
        merchant_id: str,
        member_id: str | None = None,
        limit: int = PAGE_SIZE_DEFAULT,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        async with self.db.connection() as conn:
            return await queries.transactions(
                conn, merchant_id=merchant_id, member_id=member_id, limit=limit, cursor=cursor
            )

    # --- mutations -----------------------------------------------------------------------

    async def issue(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        member_id: str,
        points: int,
        reference: str,
        expires_at: datetime | None = None,
        currency: str = ALLIANCE_POINT,
    ) -> Outcome:
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="issue",
            use_case=earn.issue,
            arguments=_issue_arguments(member_id, points, reference, expires_at, currency),
        )

    async def issue_many(
        self, *, merchant_id: str, requests: Sequence[bulk.IssueRequest]
    ) -> list[Outcome | DomainError] | None:
        """Issue alliance points for each request (distinct keys) in one transaction, each as
        `issue` would; None when they must be issued one by one instead (nothing was written).
        """

        def fingerprint(request: bulk.IssueRequest) -> bytes:
            arguments = _issue_arguments(
                request.member_id,
                request.points,
                request.reference,
                request.expires_at,
                ALLIANCE_POINT,
            )
            return idempotency.request_fingerprint("issue", _fingerprintable(arguments))

        try:
            async with self.db.transaction() as conn:
                ctx = await self._context(conn, merchant_id)
                results = await bulk.issue_run(conn, ctx, requests, fingerprint)
        except (bulk.NotBulkable, DomainError):
            return None  # one by one, each request meets the same refusal or its own
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            return None
        return [
            Outcome(result.body, replayed=result.replayed)
            if isinstance(result, bulk.Issued)
            else result
            for result in results
        ]

    async def redeem(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        member_id: str,
        points: int,
        reference: str,
        currency: str = ALLIANCE_POINT,
    ) -> Outcome:
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="redeem",
            use_case=spend.redeem,
            arguments={
                "member_id": member_id,
                "points": points,
                "reference": reference,
                "currency": currency,
            },
        )

    async def hold(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        member_id: str,
        points: int,
        reference: str,
        expires_in_seconds: int | None = None,
    ) -> Outcome:
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="hold",
            use_case=spend.hold,
            arguments={
                "member_id": member_id,
                "points": points,
                "reference": reference,
                "expires_in_seconds": expires_in_seconds,
            },
        )

    async def capture(
        self, *, merchant_id: str, idempotency_key: str, hold_id: str, points: int | None = None
    ) -> Outcome:
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="capture",
            use_case=spend.capture,
            arguments={"hold_id": hold_id, "points": points},
        )

    async def void(self, *, merchant_id: str, idempotency_key: str, hold_id: str) -> Outcome:
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="void",
            use_case=spend.void,
            arguments={"hold_id": hold_id},
        )

    async def reverse(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        transaction_id: str,
        reference: str,
        points: int | None = None,
    ) -> Outcome:
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="reverse",
            use_case=refund.reverse,
            arguments={"transaction_id": transaction_id, "points": points, "reference": reference},
        )

    async def convert(
        self,
        *,
        merchant_id: str,
        idempotency_key: str,
        member_id: str,
        points: int,
        source_currency: str,
        target_currency: str,
        reference: str,
    ) -> Outcome:
        return await self._mutate(
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            operation="convert",
            use_case=convert.convert,
            arguments={
                "member_id": member_id,
                "points": points,
                "reference": reference,
                "source_currency": source_currency,
                "target_currency": target_currency,
            },
        )

    # --- operator jobs -------------------------------------------------------------------

    async def expire(
        self, *, on_progress: Callable[[int, int], None] | None = None
    ) -> expiry.ExpiryReport:
        return await expiry.expire(self.db, self.clock, on_progress=on_progress)

    async def prune_idempotency_records(self) -> int:
        async with self.db.transaction() as conn:
            return await idempotency.prune(conn, self.clock.now())
