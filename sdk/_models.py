"""The exchange's resources as typed, immutable values, and the batch operations a client sends.

Plain dataclasses (no pydantic, so the SDK installs with its HTTP client and `cryptography` only).
Each resource keeps the whole JSON object it was read from in `raw`: PROTOCOL.md lets the exchange
add fields, and a newer field is then readable before this SDK names it. Points and money are
`int`; instants are timezone-aware `datetime`s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sdk._errors import APIStatusError, UnexpectedResponseError

T = TypeVar("T")
Json = Mapping[str, Any]


def new_idempotency_key() -> str:
    """A fresh idempotency key: a random UUID (36 visible ASCII characters)."""
    return str(uuid.uuid4())


# --- Resources ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the alliance: the same `external_ref` is the same member at every merchant."""

    member_id: str
    external_ref: str | None
    created: bool
    """True when this call enrolled the member, False when the reference already had one."""
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Member:
        obj = json_object(data, "member")
        return cls(
            member_id=_str(obj, "member_id"),
            external_ref=_optional_str(obj, "external_ref"),
            created=obj.get("created") is True,
            raw=obj,
        )


@dataclass(frozen=True, slots=True)
class NextExpiry:
    points: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    member_id: str
    available: int
    """Points the member can spend now."""
    held: int
    """Points reserved by active holds."""
    next_expiry: NextExpiry | None
    """The next lot of points to expire, or None."""
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Balance:
        obj = json_object(data, "balance")
        expiry = obj.get("next_expiry")
        next_expiry = None
        if expiry is not None:
            expiry_obj = json_object(expiry, "next_expiry")
            next_expiry = NextExpiry(
                points=_int(expiry_obj, "points"), at=_datetime(expiry_obj, "at")
            )
        return cls(
            member_id=_str(obj, "member_id"),
            available=_int(obj, "available"),
            held=_int(obj, "held"),
            next_expiry=next_expiry,
            raw=obj,
        )


@dataclass(frozen=True, slots=True)
class Transaction:
    """A committed movement of points: an issuance, redemption, reversal, expiry, conversion…"""

    transaction_id: str
    kind: str
    merchant_id: str | None
    member_id: str
    points: int
    reference: str | None
    created_at: datetime
    settlement_value: int
    """Money (minor units) this adds to the merchant's receivables after the alliance fee;
    negative for a reversal that takes some back; 0 when none."""
    balance_after: int
    """The member's available points right after it committed."""
    reverses: str | None
    """For a reversal: the transaction it reverses."""
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Transaction:
        obj = json_object(data, "transaction")
        return cls(
            transaction_id=_str(obj, "transaction_id"),
            kind=_str(obj, "kind"),
            merchant_id=_optional_str(obj, "merchant_id"),
            member_id=_str(obj, "member_id"),
            points=_int(obj, "points"),
            reference=_optional_str(obj, "reference"),
            created_at=_datetime(obj, "created_at"),
            settlement_value=_int(obj, "settlement_value"),
            balance_after=_int(obj, "balance_after"),
            reverses=_optional_str(obj, "reverses"),
            raw=obj,
        )


@dataclass(frozen=True, slots=True)
class Hold:
    """Points reserved for a later capture (a redemption) or void."""

    hold_id: str
    status: str
    """`active`, `captured`, `voided` or `lapsed`."""
    points: int
    expires_at: datetime
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Hold:
        obj = json_object(data, "hold")
        return cls(
            hold_id=_str(obj, "hold_id"),
            status=_str(obj, "status"),
            points=_int(obj, "points"),
            expires_at=_datetime(obj, "expires_at"),
            raw=obj,
        )


@dataclass(frozen=True, slots=True)
class StatementPeriod:
    start: datetime | None
    """None for a period with no earlier end (the alliance's first settlement)."""
    end: datetime
    date: str | None
    """The business date (YYYY-MM-DD) the period closes, when the exchange gives it."""


@dataclass(frozen=True, slots=True)
class StatementLine:
    """This merchant's position against one counterparty. PROTOCOL.md fixes no fields for a
    line, so each is None when absent; `raw` has the line as sent."""

    counterparty_id: str | None
    receivable: int | None
    payable: int | None
    raw: Json = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Statement:
    """A merchant's settlement statement for one period. `net` = `receivable` − `payable` −
    `fees`, positive when the alliance pays the merchant."""

    statement_id: str
    merchant_id: str
    period: StatementPeriod
    issued_points: int
    redeemed_points: int
    receivable: int
    payable: int
    fees: int
    net: int
    lines: tuple[StatementLine, ...]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Statement:
        obj = json_object(data, "statement")
        period = json_object(obj.get("period"), "period")
        return cls(
            statement_id=_str(obj, "statement_id"),
            merchant_id=_str(obj, "merchant_id"),
            period=StatementPeriod(
                start=_optional_datetime(period, "start"),
                end=_datetime(period, "end"),
                date=_optional_str(period, "date"),
            ),
            issued_points=_int(obj, "issued_points"),
            redeemed_points=_int(obj, "redeemed_points"),
            receivable=_int(obj, "receivable"),
            payable=_int(obj, "payable"),
            fees=_int(obj, "fees"),
            net=_int(obj, "net"),
            lines=tuple(_statement_line(line) for line in _list(obj, "lines")),
            raw=obj,
        )


def _statement_line(data: Any) -> StatementLine:
    obj = json_object(data, "statement line")
    counterparty = obj.get("counterparty_id")
    receivable, payable = obj.get("receivable"), obj.get("payable")
    return StatementLine(
        counterparty_id=counterparty if isinstance(counterparty, str) else None,
        receivable=receivable if type(receivable) is int else None,
        payable=payable if type(payable) is int else None,
        raw=obj,
    )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, newest first; pass `next_cursor` back for the next (None: the last)."""

    data: list[T]
    next_cursor: str | None

    @classmethod
    def parse(cls, data: Any, item: Callable[[Any], T]) -> Page[T]:
        obj = json_object(data, "page")
        return cls(
            data=[item(entry) for entry in _list(obj, "data")],
            next_cursor=_optional_str(obj, "next_cursor"),
        )


@dataclass(frozen=True, slots=True)
class ExchangeKey:
    """One of the exchange's public keys (a JWK of `GET /v1/exchange-keys`)."""

    key_id: str
    public_key: bytes
    """The raw 32-byte Ed25519 public key."""
    raw: Json = field(repr=False, compare=False)


# --- Batches -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueOperation:
    """`issue` in a batch. Its own `idempotency_key` (random unless given) makes it safe to send
    again, alone or in another batch."""

    member_id: str
    points: int
    reference: str
    expires_at: datetime | None = None
    idempotency_key: str = field(default_factory=new_idempotency_key)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "op": "issue",
            "idempotency_key": self.idempotency_key,
            "member_id": self.member_id,
            "points": self.points,
            "reference": self.reference,
        }
        if self.expires_at is not None:
            body["expires_at"] = format_instant(self.expires_at)
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class RedeemOperation:
    """`redeem` in a batch."""

    member_id: str
    points: int
    reference: str
    idempotency_key: str = field(default_factory=new_idempotency_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "redeem",
            "idempotency_key": self.idempotency_key,
            "member_id": self.member_id,
            "points": self.points,
            "reference": self.reference,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ReverseOperation:
    """`reverse` in a batch: all that is not yet reversed, or `points` of it."""

    transaction_id: str
    reference: str
    points: int | None = None
    idempotency_key: str = field(default_factory=new_idempotency_key)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "op": "reverse",
            "idempotency_key": self.idempotency_key,
            "transaction_id": self.transaction_id,
            "reference": self.reference,
        }
        if self.points is not None:
            body["points"] = self.points
        return body


BatchOperation = IssueOperation | RedeemOperation | ReverseOperation


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one batch operation: its transaction, or the problem that refused it (each
    operation commits or fails on its own)."""

    operation: BatchOperation
    transaction: Transaction | None
    error: APIStatusError | None
    """The refusal (e.g. an `InsufficientPointsError`), when refused."""

    @property
    def ok(self) -> bool:
        return self.error is None


# --- Reading JSON ------------------------------------------------------------------------------


def format_instant(instant: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as PROTOCOL.md writes times. A naive datetime is refused: its
    instant is ambiguous."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("a datetime sent to the exchange must be timezone-aware")
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_object(data: Any, what: str) -> Json:
    if not isinstance(data, Mapping):
        raise UnexpectedResponseError(f"the exchange sent a {what} that is not a JSON object")
    return data


def _list(obj: Json, name: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise UnexpectedResponseError(f"{name!r} is missing or not a list")
    return value


def _str(obj: Json, name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise UnexpectedResponseError(f"{name!r} is missing or not a string")
    return value


def _optional_str(obj: Json, name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise UnexpectedResponseError(f"{name!r} is not a string")
    return value


def _int(obj: Json, name: str) -> int:
    value = obj.get(name)
    if type(value) is not int:  # a JSON true is a Python bool, an int subclass: not points
        raise UnexpectedResponseError(f"{name!r} is missing or not an integer")
    return value


def _optional_datetime(obj: Json, name: str) -> datetime | None:
    return None if obj.get(name) is None else _datetime(obj, name)


def _datetime(obj: Json, name: str) -> datetime:
    text = _str(obj, name)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise UnexpectedResponseError(f"{name!r} is not an RFC 3339 time: {text!r}") from None
    if instant.tzinfo is None:
        raise UnexpectedResponseError(f"{name!r} has no UTC offset: {text!r}")
    return instant
