"""What every ledger operation knows about its caller and the moment it runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import ValidationFailed
from core.limits import POINTS_PER_OPERATION_MAX, REFERENCE_LENGTH_MAX
from merchants.models import AllianceSettings, Merchant


@dataclass(frozen=True, slots=True)
class Context:
    merchant: Merchant
    settings: AllianceSettings
    now: datetime


def check_points(points: int, field: str = "points") -> None:
    if isinstance(points, bool) or not isinstance(points, int):
        raise ValidationFailed(f"{field} must be an integer", fields={field: "not an integer"})
    if not 1 <= points <= POINTS_PER_OPERATION_MAX:
        raise ValidationFailed(
            f"{field} must be between 1 and {POINTS_PER_OPERATION_MAX}",
            fields={field: "out of range"},
        )


INSTANT_YEARS = range(1970, 10_000)


def check_instant(value: datetime, field: str) -> datetime:
    """An aware instant whose UTC form exists (year 1970 to 9999); returned in UTC."""
    try:
        in_utc = value.astimezone(UTC) if value.tzinfo is not None else None
    except OverflowError:
        in_utc = None
    if in_utc is None or in_utc.year not in INSTANT_YEARS:
        raise ValidationFailed(
            f"{field} must be an RFC 3339 instant with a time zone, between 1970 and 9999",
            fields={field: "out of range"},
        )
    return in_utc


def check_reference(reference: str | None, *, required: bool = True) -> None:
    if reference is None:
        if required:
            raise ValidationFailed("reference is required", fields={"reference": "missing"})
        return
    if not 1 <= len(reference) <= REFERENCE_LENGTH_MAX:
        raise ValidationFailed(
            f"reference must be 1 to {REFERENCE_LENGTH_MAX} characters",
            fields={"reference": "bad length"},
        )
