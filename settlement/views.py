"""Runs and statements as the API and the console show them (PROTOCOL.md's statement fields)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from asyncpg import Record

from exchange.views import rfc3339
from settlement.repository import RunRow


def _b64(raw: bytes) -> str:
    return base64.b64encode(bytes(raw)).decode()


def direction(net: int) -> str:
    return "receive" if net > 0 else "pay" if net < 0 else "none"


def run_view(run: RunRow) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "period": {
            "date": run.period_date.isoformat(),
            "start": rfc3339(run.period_start) if run.period_start else None,
            "end": rfc3339(run.period_end),
            "kind": run.kind,
        },
        "currency": run.currency,
        "minor_units": run.minor_units,
        "obligations": run.obligations,
        "transactions": run.transactions,
        "gross_total": run.gross_total,
        "fee_total": run.fee_total,
        "fee_residue": str(run.fee_residue),
        "merkle_root": _b64(run.merkle_root),
        "root_signature": _b64(run.root_signature),
        "key_id": run.signing_key_id,
        "created_at": rfc3339(run.created_at),
    }


def line_view(line: Record) -> dict[str, Any]:
    return {
        "counterparty_id": line["counterparty_id"],
        "accepted_points": line["accepted_points"],
        "redeemed_elsewhere_points": line["redeemed_elsewhere_points"],
        "receivable": line["receivable"],
        "payable": line["payable"],
        "fees": line["fees"],
        "net": line["net"],
        "obligations": line["obligations"],
    }


def statement_view(row: Record, lines: Sequence[Record]) -> dict[str, Any]:
    return {
        "statement_id": row["statement_id"],
        "merchant_id": row["merchant_id"],
        "run_id": row["run_id"],
        "period": {
            "date": row["period_date"].isoformat(),
            "start": rfc3339(row["period_start"]) if row["period_start"] else None,
            "end": rfc3339(row["period_end"]),
            "kind": row["run_kind"],
        },
        "currency": row["currency"],
        "minor_units": row["minor_units"],
        "issued_points": row["issued_points"],
        "redeemed_points": row["redeemed_points"],
        "reversed_points": row["reversed_points"],
        "receivable": row["receivable"],
        "payable": row["payable"],
        "fees": row["fees"],
        "net": row["net"],
        "direction": direction(row["net"]),
        "lines": [line_view(line) for line in lines],
        "transactions": row["transactions"],
        "merkle": {
            "root": _b64(row["merkle_root"]),
            "merchant_root": _b64(row["merchant_root"]),
            "signature": _b64(row["root_signature"]),
            "key_id": row["signing_key_id"],
            "algorithm": "ed25519",
        },
        "created_at": rfc3339(row["created_at"]),
    }
