"""The shapes of PROTOCOL.md v1 as pydantic models: request bodies (strict, closed) and responses.

Request models forbid unknown fields, so a client can never slip in `merchant_id`, `balance` or
`fee` (mass assignment), and take JSON integers only for points (no floats, strings or booleans).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from core.limits import (
    BATCH_OPERATIONS_MAX,
    EXTERNAL_REF_LENGTH_MAX,
    HOLD_LIFETIME_S_MAX,
    IDEMPOTENCY_KEY_LENGTH_MAX,
    POINTS_PER_OPERATION_MAX,
    REFERENCE_LENGTH_MAX,
)

# Ids and values the examples share, so that the document reads as one story.
EXAMPLE_MERCHANT = "mer_01M83EN0G4VG6YBAA2RT43RZFD"
EXAMPLE_MEMBER = "mbr_01M83EN0HFTX701RRDJ1VMCJ20"
EXAMPLE_ISSUANCE = "txn_01M83EN0HZPM4H5CR8EQNKBRRN"
EXAMPLE_HOLD = "hld_01M83EN0JXPK2XJ5CC3MQCF3D1"
EXAMPLE_AT = "2026-06-01T12:00:00.000000Z"
EXAMPLE_TRANSACTION: dict[str, Any] = {
    "transaction_id": EXAMPLE_ISSUANCE,
    "kind": "issuance",
    "merchant_id": EXAMPLE_MERCHANT,
    "member_id": EXAMPLE_MEMBER,
    "currency": "AP",
    "points": 500,
    "reference": "till-7/receipt-1042",
    "created_at": EXAMPLE_AT,
    "settlement_value": 0,
    "balance_after": 500,
    "reverses": None,
}
EXAMPLE_REDEMPTION: dict[str, Any] = {
    **EXAMPLE_TRANSACTION,
    "transaction_id": "txn_01M83EN0JDXY5BG41ZK53W2MBD",
    "kind": "redemption",
    "points": 120,
    "reference": "till-3/receipt-77",
    "settlement_value": 114,
    "balance_after": 380,
}
EXAMPLE_REVERSAL: dict[str, Any] = {
    **EXAMPLE_TRANSACTION,
    "transaction_id": "txn_01M83EN0KKK4WCRTE07YJFG8CD",
    "kind": "reversal",
    "points": 20,
    "reference": "refund-1042",
    "balance_after": 360,
    "reverses": EXAMPLE_ISSUANCE,
    "requested_points": 20,
    "shortfall_points": 0,
}
EXAMPLE_HOLD_VIEW: dict[str, Any] = {
    "hold_id": EXAMPLE_HOLD,
    "status": "active",
    "merchant_id": EXAMPLE_MERCHANT,
    "member_id": EXAMPLE_MEMBER,
    "currency": "AP",
    "points": 80,
    "reference": "order-9",
    "created_at": EXAMPLE_AT,
    "expires_at": "2026-06-01T12:15:00.000000Z",
}
JSON_INTEGER = "a JSON integer, written without a fraction or an exponent (120, not 120.0)"
Points = Annotated[
    StrictInt,
    Field(ge=1, le=POINTS_PER_OPERATION_MAX, examples=[120], description=f"Points: {JSON_INTEGER}"),
]
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
"""Ids are opaque, but always short and plain: anything else cannot name a resource. A string
id (in a path, or a body's `member_id`) that fails it is answered not_found without a lookup
(exchange.api.validation.names_only_impossible_ids), as an unknown id would be."""
TEXT_PATTERN = r"^[^\x00]*$"
"""Free text may hold any character but NUL, which PostgreSQL text cannot store."""

MemberId = Annotated[StrictStr, Field(pattern=ID_PATTERN, examples=[EXAMPLE_MEMBER])]
Reference = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=REFERENCE_LENGTH_MAX,
        pattern=TEXT_PATTERN,
        examples=["till-7/receipt-1042"],
    ),
]
IdempotencyKey = Annotated[
    StrictStr, Field(min_length=1, max_length=IDEMPOTENCY_KEY_LENGTH_MAX, pattern=r"^[!-~]+$")
]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberCreate(Closed):
    """The merchant's reference for the member (a loyalty card number, an account id)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"external_ref": "card-000042"}]})

    external_ref: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=EXTERNAL_REF_LENGTH_MAX,
            pattern=TEXT_PATTERN,
            examples=["card-000042"],
        ),
    ]


class IssuanceCreate(Closed):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"member_id": EXAMPLE_MEMBER, "points": 500, "reference": "till-7/receipt-1042"},
                {
                    "member_id": EXAMPLE_MEMBER,
                    "points": 50,
                    "reference": "promo-2026-06",
                    "expires_at": "2026-12-31T16:00:00Z",
                },
            ]
        }
    )

    member_id: MemberId
    points: Points
    reference: Reference
    expires_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339; default: the alliance's points lifetime"
    )


class RedemptionCreate(Closed):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"member_id": EXAMPLE_MEMBER, "points": 120, "reference": "till-3/receipt-77"}
            ]
        }
    )

    member_id: MemberId
    points: Points
    reference: Reference


class HoldCreate(Closed):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"member_id": EXAMPLE_MEMBER, "points": 80, "reference": "order-9"},
                {
                    "member_id": EXAMPLE_MEMBER,
                    "points": 80,
                    "reference": "order-9",
                    "expires_in_seconds": 900,
                },
            ]
        }
    )

    member_id: MemberId
    points: Points
    reference: Reference
    expires_in_seconds: Annotated[StrictInt, Field(ge=1, le=HOLD_LIFETIME_S_MAX)] | None = Field(
        default=None, description=f"Seconds, {JSON_INTEGER}; default: the alliance's hold lifetime"
    )


class CaptureCreate(Closed):
    model_config = ConfigDict(json_schema_extra={"examples": [{"points": 50}, {}]})

    points: Points | None = Field(
        default=None, description=f"Points, {JSON_INTEGER}; default: all the hold reserves"
    )


class VoidCreate(Closed):
    model_config = ConfigDict(json_schema_extra={"examples": [{}]})


class ReversalCreate(Closed):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"points": 20, "reference": "refund-1042"}, {"reference": "refund-1043"}]
        }
    )

    points: Points | None = Field(
        default=None, description=f"Points, {JSON_INTEGER}; default: all not yet reversed"
    )
    reference: Reference


class IssueOperation(IssuanceCreate):
    op: Literal["issue"]
    idempotency_key: IdempotencyKey


class RedeemOperation(RedemptionCreate):
    op: Literal["redeem"]
    idempotency_key: IdempotencyKey


class ReverseOperation(ReversalCreate):
    op: Literal["reverse"]
    idempotency_key: IdempotencyKey
    transaction_id: Annotated[StrictStr, Field(pattern=ID_PATTERN)]


BatchOperation = Annotated[
    IssueOperation | RedeemOperation | ReverseOperation, Field(discriminator="op")
]


class BatchCreate(Closed):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "operations": [
                        {
                            "op": "issue",
                            "idempotency_key": "till-7/2026-06-01/1",
                            "member_id": EXAMPLE_MEMBER,
                            "points": 500,
                            "reference": "till-7/receipt-1042",
                        },
                        {
                            "op": "redeem",
                            "idempotency_key": "till-7/2026-06-01/2",
                            "member_id": EXAMPLE_MEMBER,
                            "points": 120,
                            "reference": "till-7/receipt-1043",
                        },
                        {
                            "op": "reverse",
                            "idempotency_key": "till-7/2026-06-01/3",
                            "transaction_id": EXAMPLE_ISSUANCE,
                            "points": 20,
                            "reference": "refund-1042",
                        },
                    ]
                }
            ]
        }
    )

    operations: Annotated[
        list[dict[str, Any]],
        Field(
            min_length=1,
            max_length=BATCH_OPERATIONS_MAX,
            description=(
                "Each an object with `op` (`issue`, `redeem`, `reverse`), its own "
                "`idempotency_key`, and the fields of the single endpoint."
            ),
        ),
    ]


# --- responses (documentation and contract tests) -----------------------------------------


class Member(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"member_id": EXAMPLE_MEMBER, "external_ref": "card-000042", "created": True}
            ]
        }
    )

    member_id: str
    external_ref: str
    created: bool


class NextExpiry(BaseModel):
    points: int
    at: str


class Balance(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "member_id": EXAMPLE_MEMBER,
                    "currency": "AP",
                    "available": 360,
                    "held": 80,
                    "next_expiry": {"points": 360, "at": "2027-06-01T12:00:00.000000Z"},
                },
                {
                    "member_id": EXAMPLE_MEMBER,
                    "currency": "AP",
                    "available": 0,
                    "held": 0,
                    "next_expiry": None,
                },
            ]
        }
    )

    member_id: str
    currency: str
    available: int
    held: int
    next_expiry: NextExpiry | None


class Transaction(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [EXAMPLE_TRANSACTION, EXAMPLE_REDEMPTION, EXAMPLE_REVERSAL]},
    )

    transaction_id: str
    kind: Literal["issuance", "redemption", "reversal", "expiry", "conversion"]
    merchant_id: str | None
    member_id: str
    currency: str
    points: int
    reference: str | None
    created_at: str
    settlement_value: int
    balance_after: int
    reverses: str | None


class Hold(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [EXAMPLE_HOLD_VIEW, {**EXAMPLE_HOLD_VIEW, "status": "voided"}]
        },
    )

    hold_id: str
    status: Literal["active", "captured", "voided", "lapsed"]
    points: int
    expires_at: str


class TransactionPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "data": [EXAMPLE_REVERSAL, EXAMPLE_TRANSACTION],
                    "next_cursor": "WyIyMDI2LTA2LTAxVDEyOjAwOjAwKzAwOjAwIl0",
                },
                {"data": [], "next_cursor": None},
            ]
        }
    )

    data: list[Transaction]
    next_cursor: str | None


class Problem(BaseModel):
    """An RFC 9457 problem. Some codes add members: `fields` (validation_error: the offending
    fields), `available` and `held` (insufficient_points), `hold_status` (hold_not_active),
    `reversed_points` and `original_points` (reversal_exceeds_original), `retry_after_s`
    (rate_limited)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://alliance.example/problems/insufficient_points",
                    "title": "Insufficient points",
                    "status": 409,
                    "detail": "the member has 315 points available, 1000 asked",
                    "code": "insufficient_points",
                    "available": 315,
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str
    code: str


class BatchResults(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        EXAMPLE_TRANSACTION,
                        {
                            "type": "https://alliance.example/problems/insufficient_points",
                            "title": "Insufficient points",
                            "status": 409,
                            "detail": "the member has 0 points available, 120 asked",
                            "code": "insufficient_points",
                            "available": 0,
                        },
                        EXAMPLE_REVERSAL,
                    ]
                }
            ]
        }
    )

    results: list[dict[str, Any]]


class JsonWebKey(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class JsonWebKeySet(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "keys": [
                        {
                            "kty": "OKP",
                            "crv": "Ed25519",
                            "x": "aR8yYiwspoyNy3Byj0Ihcf7BDcc46eoxAA6IdUNA3F0",
                            "kid": "xk_01M83EN0HJKAAZ1783MGKFY8R6",
                            "alg": "EdDSA",
                            "use": "sig",
                        }
                    ]
                }
            ]
        }
    )

    keys: list[JsonWebKey]
