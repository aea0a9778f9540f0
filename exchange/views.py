"""How ledger objects look to merchants: the JSON shapes of PROTOCOL.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from exchange.repository import HoldRow


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_OPTIONAL_TRANSACTION_FIELDS = (
    "requested_points",
    "shortfall_points",
    "hold_id",
    "target_currency",
    "target_points",
)


def transaction_view(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "transaction_id": row["transaction_id"],
        "kind": row["kind"],
        "merchant_id": row["merchant_id"],
        "member_id": row["member_id"],
        "currency": row["currency"],
        "points": row["points"],
        "reference": row["reference"],
        "created_at": rfc3339(row["created_at"]),
        "settlement_value": row["settlement_value"],
        "balance_after": row["balance_after"],
        "reverses": row["reverses"],
    }
    for field in _OPTIONAL_TRANSACTION_FIELDS:
        if row[field] is not None:
            view[field] = row[field]
    return view


def hold_view(hold: HoldRow, *, now: datetime) -> dict[str, Any]:
    status = hold.status
    if status == "active" and hold.expires_at <= now:
        status = "lapsed"
    view: dict[str, Any] = {
        "hold_id": hold.hold_id,
        "status": status,
        "merchant_id": hold.merchant_id,
        "member_id": hold.member_id,
        "currency": hold.currency,
        "points": hold.points,
        "reference": hold.reference,
        "created_at": rfc3339(hold.created_at),
        "expires_at": rfc3339(hold.expires_at),
    }
    if hold.captured_points is not None:
        view["captured_points"] = hold.captured_points
        view["capture_transaction_id"] = hold.capture_transaction_id
    return view
