"""Batches: up to 1,000 operations in one signed request, each atomic and idempotent on its own.

A batch is a convenience for uploading a day of till receipts, not a transaction: each operation
commits or fails alone, under its own idempotency key, and its result (the transaction, or a
problem) stands in the same position of `results`. Retrying a batch retries each operation; those
that already ran replay their first result. Runs of consecutive issuances are written set-based
(`exchange.bulk`), with the results one-by-one issuance would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import TypeAdapter, ValidationError

from core.errors import DomainError
from exchange.api.problems import problem
from exchange.api.schemas import BatchOperation, IssueOperation, RedeemOperation, ReverseOperation
from exchange.api.validation import operation_problem
from exchange.bulk import IssueRequest
from exchange.service import Ledger, Outcome

_operation = TypeAdapter[IssueOperation | RedeemOperation | ReverseOperation](BatchOperation)

Parsed = IssueOperation | RedeemOperation | ReverseOperation | ValidationError


async def run(ledger: Ledger, merchant_id: str, operations: list[dict[str, Any]]) -> list[Any]:
    parsed = [_parse(raw) for raw in operations]
    results: list[Any] = []
    for segment in _segments(parsed):
        results += await _run_segment(ledger, merchant_id, segment)
    assert len(results) == len(operations)
    return results


def _parse(raw: dict[str, Any]) -> Parsed:
    try:
        return _operation.validate_python(raw)
    except ValidationError as error:
        return error


def _bulkable(operation: Parsed) -> bool:
    return isinstance(operation, IssueOperation)


def _segments(parsed: list[Parsed]) -> Iterator[list[Parsed]]:
    """Consecutive issuances with distinct keys go together (issued set-based, in order with
    the rest); every other operation goes alone. A repeated key starts a new segment, so that
    it replays what its first occurrence committed, as one request after another would."""
    segment: list[Parsed] = []
    keys: set[str] = set()
    for operation in parsed:
        if not _bulkable(operation):
            if segment:
                yield segment
            yield [operation]
            segment, keys = [], set()
            continue
        assert isinstance(operation, IssueOperation)
        if operation.idempotency_key in keys:
            yield segment
            segment, keys = [], set()
        segment.append(operation)
        keys.add(operation.idempotency_key)
    if segment:
        yield segment


async def _run_segment(ledger: Ledger, merchant_id: str, segment: list[Parsed]) -> list[Any]:
    if len(segment) > 1:
        issued = await ledger.issue_many(
            merchant_id=merchant_id,
            requests=[_issue_request(operation) for operation in segment],
        )
        if issued is not None:
            return [_body(result) for result in issued]
    return [await _one(ledger, merchant_id, operation) for operation in segment]


def _issue_request(operation: Parsed) -> IssueRequest:
    assert isinstance(operation, IssueOperation)
    return IssueRequest(
        idempotency_key=operation.idempotency_key,
        member_id=operation.member_id,
        points=operation.points,
        reference=operation.reference,
        expires_at=operation.expires_at,
    )


async def _one(ledger: Ledger, merchant_id: str, operation: Parsed) -> Any:
    if isinstance(operation, ValidationError):
        return operation_problem(operation)
    try:
        return _body(await _apply(ledger, merchant_id, operation))
    except DomainError as error:
        return _body(error)


def _body(result: Outcome | DomainError) -> Any:
    if isinstance(result, DomainError):
        return problem(result.code, result.detail, **result.extra)
    return result.body


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
