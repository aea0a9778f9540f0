"""Batches: up to 1,000 operations in one signed request, each atomic and idempotent on its own.

A batch is a convenience for uploading a day of till receipts, not a transaction: each operation
commits or fails alone, under its own idempotency key, and its result (the transaction, or a
problem) stands in the same position of `results`. Retrying a batch retries each operation; those
that already ran replay their first result.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from core.errors import DomainError
from exchange.api.problems import problem
from exchange.api.schemas import BatchOperation, IssueOperation, RedeemOperation, ReverseOperation
from exchange.api.validation import fields_of
from exchange.service import Ledger, Outcome

_operation = TypeAdapter[IssueOperation | RedeemOperation | ReverseOperation](BatchOperation)


async def run(ledger: Ledger, merchant_id: str, operations: list[dict[str, Any]]) -> list[Any]:
    results: list[Any] = []
    for raw in operations:
        try:
            operation = _operation.validate_python(raw)
            outcome = await _apply(ledger, merchant_id, operation)
            results.append(outcome.body)
        except ValidationError as error:
            results.append(
                problem("validation_error", "this operation is malformed", fields=fields_of(error))
            )
        except DomainError as error:
            results.append(problem(error.code, error.detail, **error.extra))
    return results


async def _apply(
    ledger: Ledger, merchant_id: str, operation: IssueOperation | RedeemOperation | ReverseOperation
) -> Outcome:
    if isinstance(operation, IssueOperation):
        return await ledger.issue(
            merchant_id=merchant_id,
            idempotency_key=operation.idempotency_key,
            member_id=operation.member_id,
            points=operation.points,
            reference=operation.reference,
            expires_at=operation.expires_at,
        )
    if isinstance(operation, RedeemOperation):
        return await ledger.redeem(
            merchant_id=merchant_id,
            idempotency_key=operation.idempotency_key,
            member_id=operation.member_id,
            points=operation.points,
            reference=operation.reference,
        )
    return await ledger.reverse(
        merchant_id=merchant_id,
        idempotency_key=operation.idempotency_key,
        transaction_id=operation.transaction_id,
        reference=operation.reference,
        points=operation.points,
    )
