"""The settlement endpoints of the merchant API: statements (PROTOCOL.md v1) and the inclusion
proof of a transaction in a signed settlement root. A merchant only ever sees its own."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from core.database import Database
from core.errors import ValidationFailed
from core.limits import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from exchange.api.routes import CURSOR_PATTERN, PROBLEM_RESPONSES, CurrentMerchant, ResourceId
from exchange.api.schemas import EXAMPLE_AT, EXAMPLE_MERCHANT
from settlement import service

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

PERIOD = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EXAMPLE_COUNTERPARTY = "mer_01M83EN0G7HC2D8TJQ4MRN6XWS"
EXAMPLE_STATEMENT: dict[str, Any] = {
    "statement_id": "stm_01M83EN0P7W4R1X9ZK2D5QH3VA",
    "merchant_id": EXAMPLE_MERCHANT,
    "run_id": "run_01M83EN0P2Q8TQ3VZJ1G0M4B7C",
    "period": {
        "date": "2026-06-01",
        "start": "2026-05-31T16:00:00.000000Z",
        "end": "2026-06-01T16:00:00.000000Z",
        "kind": "daily",
    },
    "currency": "CNY",
    "minor_units": 2,
    "issued_points": 500,
    "redeemed_points": 120,
    "reversed_points": 0,
    "receivable": 120,
    "payable": 500,
    "fees": 6,
    "net": -386,
    "direction": "pay",
    "lines": [
        {
            "counterparty_id": EXAMPLE_COUNTERPARTY,
            "accepted_points": 120,
            "redeemed_elsewhere_points": 500,
            "receivable": 120,
            "payable": 500,
            "fees": 6,
            "net": -386,
            "obligations": 9,
        }
    ],
    "transactions": 42,
    "merkle": {
        "root": "q1Yx0m3Lr4Hh0q1Yx0m3Lr4Hh0q1Yx0m3Lr4Hh0q1Yw=",
        "merchant_root": "3Lr4Hh0q1Yx0m3Lr4Hh0q1Yx0m3Lr4Hh0q1Yx0m3Lr4=",
        "signature": "c2lnbmF0dXJl...",
        "key_id": "xk_01M83EN0A1B2C3D4E5F6G7H8J9",
        "algorithm": "ed25519",
    },
    "created_at": EXAMPLE_AT,
}


EXAMPLE_PROOF: dict[str, Any] = {
    "transaction_id": "txn_01M83KD86ECT65WDRXDEPZZQFH",
    "run_id": EXAMPLE_STATEMENT["run_id"],
    "statement_id": EXAMPLE_STATEMENT["statement_id"],
    "leaf_hash": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
    "leaf_index": 5,
    "merchant_leaves": 42,
    "merchant_path": ["5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9"],
    "merchant_root": EXAMPLE_STATEMENT["merkle"]["merchant_root"],
    "merchant_transactions": 42,
    "top_index": 1,
    "top_leaves": 4,
    "top_path": ["6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"],
    "root": EXAMPLE_STATEMENT["merkle"]["root"],
    "root_signature": EXAMPLE_STATEMENT["merkle"]["signature"],
    "key_id": EXAMPLE_STATEMENT["merkle"]["key_id"],
    "period_start": "2026-05-31T16:00:00+00:00",
    "period_end": "2026-06-01T16:00:00+00:00",
    "run_transactions": 120,
}


class StatementPeriod(BaseModel):
    date: str
    start: str | None
    end: str
    kind: str


class StatementLine(BaseModel):
    counterparty_id: str
    accepted_points: int
    redeemed_elsewhere_points: int
    receivable: int
    payable: int
    fees: int
    net: int
    obligations: int


class StatementMerkle(BaseModel):
    root: str
    merchant_root: str
    signature: str
    key_id: str
    algorithm: str


class Statement(BaseModel):
    """One merchant's figures for one settled period; net = receivable - payable - fees."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_STATEMENT]})

    statement_id: str
    merchant_id: str
    run_id: str
    period: StatementPeriod
    currency: str
    minor_units: int
    issued_points: int
    redeemed_points: int
    reversed_points: int
    receivable: int
    payable: int
    fees: int
    net: int
    direction: str
    lines: list[StatementLine]
    transactions: int
    merkle: StatementMerkle
    created_at: str


class StatementPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"data": [EXAMPLE_STATEMENT], "next_cursor": None}]}
    )

    data: list[Statement]
    next_cursor: str | None


class InclusionProof(BaseModel):
    """RFC 6962 audit paths: the transaction's leaf in its merchant's subtree, and that subtree's
    leaf in the run's signed top tree (docs/settlement.md shows how to check one)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_PROOF]})

    transaction_id: str
    run_id: str
    statement_id: str
    leaf_hash: str
    leaf_index: int
    merchant_leaves: int
    merchant_path: list[str]
    merchant_root: str
    merchant_transactions: int
    top_index: int
    top_leaves: int
    top_path: list[str]
    root: str
    root_signature: str
    key_id: str
    period_start: str | None
    period_end: str
    run_transactions: int


def _db(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


def _period(text: str | None) -> date | None:
    if text is None:
        return None
    if PERIOD.match(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValidationFailed("period is a date, YYYY-MM-DD", fields={"period": "invalid"})


@router.get("/statements", response_model=StatementPage, summary="Your settlement statements")
async def statements(
    request: Request,
    merchant: CurrentMerchant,
    period: Annotated[str | None, Query(description="YYYY-MM-DD")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)] = PAGE_SIZE_DEFAULT,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> dict[str, Any]:
    """This merchant's statements, newest period first; `period` (a business date, YYYY-MM-DD)
    narrows them to one day's runs (a day can have an intraday run and a nightly one)."""
    return await service.statements_page(
        _db(request), merchant, period=_period(period), limit=limit, cursor=cursor
    )


@router.get("/statements/{statement_id}", response_model=Statement, summary="One statement")
async def statement(
    request: Request, statement_id: ResourceId, merchant: CurrentMerchant
) -> dict[str, Any]:
    """One of this merchant's statements; another merchant's answers 404 like a missing one."""
    return await service.statement(_db(request), merchant, statement_id)


@router.get(
    "/transactions/{transaction_id}/proof",
    response_model=InclusionProof,
    summary="Proof that one of your settled transactions is in its run's signed Merkle root",
)
async def proof(
    request: Request, transaction_id: ResourceId, merchant: CurrentMerchant
) -> dict[str, Any]:
    """The audit paths placing one of this merchant's settled transactions under the run's root,
    and the exchange's signature over that root. 404 until the transaction's period is settled."""
    return await service.inclusion_proof(_db(request), merchant, transaction_id)
