"""The endpoints of PROTOCOL.md v1, each a thin call into the ledger's services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from core.limits import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from exchange.api import batches
from exchange.api.keyring import KeyRing
from exchange.api.problems import PROBLEM_CONTENT_TYPE
from exchange.api.schemas import (
    ID_PATTERN,
    Balance,
    BatchCreate,
    BatchResults,
    CaptureCreate,
    Hold,
    HoldCreate,
    IssuanceCreate,
    JsonWebKeySet,
    Member,
    MemberCreate,
    Problem,
    RedemptionCreate,
    ReversalCreate,
    Transaction,
    TransactionPage,
    VoidCreate,
)
from exchange.exchange_keys import jwk
from exchange.service import Ledger, Outcome

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_CONTENT_TYPE: {}}, "description": text}
    for status, text in (
        (401, "Authentication failed (signature_*, unknown_key, key_revoked, replayed_request)"),
        (403, "merchant_suspended"),
        (404, "not_found"),
        (409, "insufficient_points, liability_limit_exceeded, idempotency_key_in_flight, …"),
        (413, "payload_too_large"),
        (422, "validation_error, idempotency_key_reused"),
        (429, "rate_limited, with Retry-After"),
    )
}

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

IdempotencyKeyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="1–255 visible ASCII characters, scoped to the merchant; kept 7 days.",
    ),
]
ResourceId = Annotated[str, Path(pattern=ID_PATTERN)]
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"


async def current_merchant(request: Request) -> str:
    """The merchant the gateway authenticated (it refuses every unsigned /v1/ request)."""
    merchant_id: str = request.state.merchant_id
    return merchant_id


async def ledger_of(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


CurrentMerchant = Annotated[str, Depends(current_merchant)]
LedgerDep = Annotated[Ledger, Depends(ledger_of)]


def respond(outcome: Outcome, status: int) -> JSONResponse:
    headers = {"Idempotency-Replayed": "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=status, headers=headers)


@router.post(
    "/members",
    response_model=Member,
    status_code=201,
    responses={200: {"model": Member, "description": "The reference's existing member"}},
    summary="Find or enrol the member for an external reference",
)
async def enrol_member(
    body: MemberCreate, merchant: CurrentMerchant, ledger: LedgerDep, key: IdempotencyKeyHeader
) -> JSONResponse:
    outcome = await ledger.enrol(
        merchant_id=merchant, idempotency_key=key, external_ref=body.external_ref
    )
    return respond(outcome, 201 if outcome.body["created"] else 200)


@router.get("/members/{member_id}/balance", response_model=Balance, summary="A member's balance")
async def member_balance(
    member_id: ResourceId, merchant: CurrentMerchant, ledger: LedgerDep
) -> dict[str, Any]:
    return await ledger.balance(member_id=member_id)


@router.post("/issuances", response_model=Transaction, status_code=201, summary="Issue points")
async def issue(
    body: IssuanceCreate, merchant: CurrentMerchant, ledger: LedgerDep, key: IdempotencyKeyHeader
) -> JSONResponse:
    outcome = await ledger.issue(
        merchant_id=merchant,
        idempotency_key=key,
        member_id=body.member_id,
        points=body.points,
        reference=body.reference,
        expires_at=body.expires_at,
    )
    return respond(outcome, 201)


@router.post("/redemptions", response_model=Transaction, status_code=201, summary="Redeem points")
async def redeem(
    body: RedemptionCreate, merchant: CurrentMerchant, ledger: LedgerDep, key: IdempotencyKeyHeader
) -> JSONResponse:
    outcome = await ledger.redeem(
        merchant_id=merchant,
        idempotency_key=key,
        member_id=body.member_id,
        points=body.points,
        reference=body.reference,
    )
    return respond(outcome, 201)


@router.post("/holds", response_model=Hold, status_code=201, summary="Hold points")
async def hold(
    body: HoldCreate, merchant: CurrentMerchant, ledger: LedgerDep, key: IdempotencyKeyHeader
) -> JSONResponse:
    outcome = await ledger.hold(
        merchant_id=merchant,
        idempotency_key=key,
        member_id=body.member_id,
        points=body.points,
        reference=body.reference,
        expires_in_seconds=body.expires_in_seconds,
    )
    return respond(outcome, 201)


@router.post(
    "/holds/{hold_id}/capture",
    response_model=Transaction,
    status_code=201,
    summary="Capture a hold (all or part), as a redemption",
)
async def capture(
    hold_id: ResourceId,
    merchant: CurrentMerchant,
    ledger: LedgerDep,
    key: IdempotencyKeyHeader,
    body: CaptureCreate | None = None,
) -> JSONResponse:
    points = body.points if body else None
    outcome = await ledger.capture(
        merchant_id=merchant, idempotency_key=key, hold_id=hold_id, points=points
    )
    return respond(outcome, 201)


@router.post("/holds/{hold_id}/void", response_model=Hold, summary="Void a hold")
async def void(
    hold_id: ResourceId,
    merchant: CurrentMerchant,
    ledger: LedgerDep,
    key: IdempotencyKeyHeader,
    body: VoidCreate | None = None,
) -> JSONResponse:
    outcome = await ledger.void(merchant_id=merchant, idempotency_key=key, hold_id=hold_id)
    return respond(outcome, 200)


@router.post(
    "/transactions/{transaction_id}/reversals",
    response_model=Transaction,
    status_code=201,
    summary="Reverse an issuance or a redemption, in full or in part",
)
async def reverse(
    transaction_id: ResourceId,
    body: ReversalCreate,
    merchant: CurrentMerchant,
    ledger: LedgerDep,
    key: IdempotencyKeyHeader,
) -> JSONResponse:
    outcome = await ledger.reverse(
        merchant_id=merchant,
        idempotency_key=key,
        transaction_id=transaction_id,
        reference=body.reference,
        points=body.points,
    )
    return respond(outcome, 201)


@router.get(
    "/transactions/{transaction_id}", response_model=Transaction, summary="One of your transactions"
)
async def transaction(
    transaction_id: ResourceId, merchant: CurrentMerchant, ledger: LedgerDep
) -> dict[str, Any]:
    return await ledger.transaction(merchant_id=merchant, transaction_id=transaction_id)


@router.get(
    "/transactions", response_model=TransactionPage, summary="Your transactions, newest first"
)
async def transactions(
    merchant: CurrentMerchant,
    ledger: LedgerDep,
    member_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = PAGE_SIZE_DEFAULT,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> dict[str, Any]:
    return await ledger.transactions(
        merchant_id=merchant, member_id=member_id, limit=limit, cursor=cursor
    )


@router.post(
    "/batches",
    response_model=BatchResults,
    summary="Up to 1,000 operations, each on its own",
)
async def batch(
    body: BatchCreate, merchant: CurrentMerchant, ledger: LedgerDep, key: IdempotencyKeyHeader
) -> JSONResponse:
    async def produce() -> dict[str, Any]:
        return {"results": await batches.run(ledger, merchant, body.operations)}

    outcome = await ledger.once(
        merchant_id=merchant,
        idempotency_key=key,
        operation="batch",
        params={"operations": body.operations},
        produce=produce,
    )
    return respond(outcome, 200)


@router.get(
    "/exchange-keys",
    response_model=JsonWebKeySet,
    summary="The exchange's public keys (JWK set); unsigned",
)
async def exchange_keys_set(request: Request) -> dict[str, Any]:
    keyring: KeyRing = request.app.state.keyring
    keys = await keyring.published(request.app.state.clock.now())
    return {"keys": [jwk(key) for key in keys]}
