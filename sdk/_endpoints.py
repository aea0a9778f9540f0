"""Each endpoint of PROTOCOL.md as a `Call`: its method, path, body and how to read its answer.

The sync and async clients send these; neither knows a path or a field name itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sdk._constants import BATCH_OPERATIONS_MAX
from sdk._core import Call, segment
from sdk._errors import UnexpectedResponseError, problem_error
from sdk._keys import parse_jwks
from sdk._models import (
    Balance,
    BatchOperation,
    BatchResult,
    ExchangeKey,
    Hold,
    Member,
    Page,
    Statement,
    Transaction,
    format_instant,
    json_object,
)

T = TypeVar("T")


def enrol_member(*, external_ref: str, idempotency_key: str | None) -> Call[Member]:
    return Call(
        "POST",
        "/v1/members",
        Member.from_json,
        body={"external_ref": external_ref},
        idempotency_key=idempotency_key,
    )


def get_balance(*, member_id: str) -> Call[Balance]:
    return Call("GET", f"/v1/members/{segment(member_id, 'member_id')}/balance", Balance.from_json)


def issue(
    *,
    member_id: str,
    points: int,
    reference: str,
    expires_at: datetime | None,
    idempotency_key: str | None,
) -> Call[Transaction]:
    body: dict[str, Any] = {"member_id": member_id, "points": points, "reference": reference}
    if expires_at is not None:
        body["expires_at"] = format_instant(expires_at)
    return Call(
        "POST", "/v1/issuances", Transaction.from_json, body=body, idempotency_key=idempotency_key
    )


def redeem(
    *, member_id: str, points: int, reference: str, idempotency_key: str | None
) -> Call[Transaction]:
    body = {"member_id": member_id, "points": points, "reference": reference}
    return Call(
        "POST", "/v1/redemptions", Transaction.from_json, body=body, idempotency_key=idempotency_key
    )


def hold(
    *,
    member_id: str,
    points: int,
    reference: str,
    expires_in_seconds: int | None,
    idempotency_key: str | None,
) -> Call[Hold]:
    body: dict[str, Any] = {"member_id": member_id, "points": points, "reference": reference}
    if expires_in_seconds is not None:
        body["expires_in_seconds"] = expires_in_seconds
    return Call("POST", "/v1/holds", Hold.from_json, body=body, idempotency_key=idempotency_key)


def capture(*, hold_id: str, points: int | None, idempotency_key: str | None) -> Call[Transaction]:
    body = {} if points is None else {"points": points}
    return Call(
        "POST",
        f"/v1/holds/{segment(hold_id, 'hold_id')}/capture",
        Transaction.from_json,
        body=body,
        idempotency_key=idempotency_key,
    )


def void(*, hold_id: str, idempotency_key: str | None) -> Call[Hold]:
    return Call(
        "POST",
        f"/v1/holds/{segment(hold_id, 'hold_id')}/void",
        Hold.from_json,
        body={},
        idempotency_key=idempotency_key,
    )


def reverse(
    *, transaction_id: str, reference: str, points: int | None, idempotency_key: str | None
) -> Call[Transaction]:
    body: dict[str, Any] = {"reference": reference}
    if points is not None:
        body["points"] = points
    return Call(
        "POST",
        f"/v1/transactions/{segment(transaction_id, 'transaction_id')}/reversals",
        Transaction.from_json,
        body=body,
        idempotency_key=idempotency_key,
    )


def get_transaction(*, transaction_id: str) -> Call[Transaction]:
    path = f"/v1/transactions/{segment(transaction_id, 'transaction_id')}"
    return Call("GET", path, Transaction.from_json)


def list_transactions(
    *, member_id: str | None, limit: int | None, cursor: str | None
) -> Call[Page[Transaction]]:
    return Call(
        "GET",
        "/v1/transactions",
        _page_of(Transaction.from_json),
        params={"member_id": member_id, "limit": limit, "cursor": cursor},
    )


def batch(
    operations: Sequence[BatchOperation], *, idempotency_key: str | None
) -> Call[list[BatchResult]]:
    if not 1 <= len(operations) <= BATCH_OPERATIONS_MAX:
        raise ValueError(
            f"a batch holds 1 to {BATCH_OPERATIONS_MAX} operations, not {len(operations)}; "
            "batch_all() splits longer lists"
        )
    ops = list(operations)

    def parse(data: Any) -> list[BatchResult]:
        results = json_object(data, "batch answer").get("results")
        if not isinstance(results, list) or len(results) != len(ops):
            raise UnexpectedResponseError("the batch answer does not have one result per operation")
        return [_batch_result(op, result) for op, result in zip(ops, results, strict=True)]

    return Call(
        "POST",
        "/v1/batches",
        parse,
        body={"operations": [op.to_json() for op in ops]},
        idempotency_key=idempotency_key,
    )


def list_statements(
    *, period: str | None, limit: int | None, cursor: str | None
) -> Call[Page[Statement]]:
    return Call(
        "GET",
        "/v1/statements",
        _page_of(Statement.from_json),
        params={"period": period, "limit": limit, "cursor": cursor},
    )


def get_statement(*, statement_id: str) -> Call[Statement]:
    path = f"/v1/statements/{segment(statement_id, 'statement_id')}"
    return Call("GET", path, Statement.from_json)


def get_exchange_keys() -> Call[list[ExchangeKey]]:
    """Unsigned, and its answer is too: it is what the other answers are checked against."""
    return Call("GET", "/v1/exchange-keys", parse_jwks, signed=False)


def chunks(operations: Sequence[BatchOperation], size: int) -> list[Sequence[BatchOperation]]:
    """`operations` in consecutive slices of at most `size` (1 to 1,000)."""
    if not 1 <= size <= BATCH_OPERATIONS_MAX:
        raise ValueError(f"a batch holds 1 to {BATCH_OPERATIONS_MAX} operations")
    return [operations[start : start + size] for start in range(0, len(operations), size)]


def _page_of(item: Callable[[Any], T]) -> Callable[[Any], Page[T]]:
    def parse(data: Any) -> Page[T]:
        return Page.parse(data, item)

    return parse


def _batch_result(operation: BatchOperation, result: Any) -> BatchResult:
    obj = json_object(result, "batch result")
    if "transaction_id" in obj:
        return BatchResult(operation, Transaction.from_json(obj), None)
    status = obj.get("status")
    if type(status) is not int or "code" not in obj:
        raise UnexpectedResponseError("a batch result is neither a transaction nor a problem")
    error = problem_error(status=status, problem=obj, idempotency_key=operation.idempotency_key)
    return BatchResult(operation, None, error)
