"""Every conversion between points, money and rates, with its rounding written down.

- Money value of points (obligations): points x point value, rounded half-to-even to the minor unit.
- Alliance fee: gross value x fee rate, rounded half-to-even to the minor unit.
- Partial cancellation of an obligation: cumulative and proportional, so that reversing all of a
  redemption in any number of parts cancels exactly what it made, never a unit more or less.
- Exposure (the liability limit): rounded up, so rounding never lets an issuer past its limit.
- Conversion between point currencies: rounded down, so conversion never creates a fraction of a
  point; a conversion that would yield zero points is refused.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal


def _to_int(value: Decimal, rounding: str) -> int:
    return int(value.quantize(Decimal(1), rounding=rounding))


def money_value(points: int, point_value: Decimal) -> int:
    """Gross money value, in minor units, of `points` at `point_value` minor units per point."""
    return _to_int(Decimal(points) * point_value, ROUND_HALF_EVEN)


def fee_of(gross_value: int, fee_rate: Decimal) -> int:
    return _to_int(Decimal(gross_value) * fee_rate, ROUND_HALF_EVEN)


def exposure_value(points: int, point_value: Decimal) -> int:
    return _to_int(Decimal(points) * point_value, ROUND_CEILING)


def value_rounded_down(points: int, point_value: Decimal) -> int:
    """The least by which taking `points` out of an issuer's outstanding lowers its exposure."""
    return _to_int(Decimal(points) * point_value, ROUND_FLOOR)


def proportional_share(total: int, part: int, whole: int) -> int:
    """`total` x part / whole, half-to-even; exact (== total) when part == whole."""
    if whole <= 0 or not 0 <= part <= whole:
        raise ValueError(f"part {part} of whole {whole} is not a share")
    return _to_int(Decimal(total) * Decimal(part) / Decimal(whole), ROUND_HALF_EVEN)


def converted_points(points: int, rate: Decimal) -> int:
    return _to_int(Decimal(points) * rate, ROUND_FLOOR)
