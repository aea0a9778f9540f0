"""Pure unit tests of exchange/rounding.py and exchange/ledger.py: no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from core.errors import InvariantViolation
from exchange.ledger import (
    Lot,
    OriginalObligation,
    Posting,
    Take,
    available_points,
    cancellations_for,
    check_balanced,
    consumption_order,
    consumption_postings,
    issuer_account,
    member_account,
    obligations_for,
    plan_clawback,
    plan_consumption,
    plan_restoration,
    restoration_postings,
)
from exchange.rounding import (
    converted_points,
    exposure_value,
    fee_of,
    money_value,
    proportional_share,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def lot(lot_id, issuer="A", points=10, issued=-1, expires=None):
    """A lot issued `issued` days from NOW, expiring `expires` days from NOW (None: never)."""
    return Lot(
        lot_id=lot_id,
        issuer_id=issuer,
        remaining_points=points,
        issued_at=NOW + issued * DAY,
        expires_at=None if expires is None else NOW + expires * DAY,
    )


# --- rounding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "value", "expected"),
    [
        (1, "0.5", 0),
        (3, "0.5", 2),
        (5, "0.5", 2),
        (7, "0.5", 4),
        (3, "2.5", 8),
        (1, "2.5", 2),
        (10, "0.01", 0),
        (50, "0.01", 0),
        (150, "0.01", 2),
        (250, "0.01", 2),
        (123, "1", 123),
        (0, "3.7", 0),
        (10**12, "1", 10**12),
    ],
)
def test_money_value_rounds_half_to_even(points, value, expected):
    assert money_value(points, Decimal(value)) == expected


@pytest.mark.parametrize(
    ("gross", "rate", "expected"),
    [
        (10, "0.05", 0),
        (30, "0.05", 2),
        (50, "0.05", 2),
        (70, "0.05", 4),
        (90, "0.05", 4),
        (19, "0.05", 1),
        (0, "0.05", 0),
        (8, "0.3", 2),
        (100, "0", 0),
        (-30, "0.05", -2),
    ],
)
def test_fee_rounds_half_to_even(gross, rate, expected):
    assert fee_of(gross, Decimal(rate)) == expected


@pytest.mark.parametrize(
    ("points", "value", "expected"),
    [(1, "0.5", 1), (3, "0.5", 2), (1, "0.01", 1), (100, "1", 100), (7, "1.001", 8), (0, "2", 0)],
)
def test_exposure_value_rounds_up_so_no_issuer_slips_past_its_limit(points, value, expected):
    assert exposure_value(points, Decimal(value)) == expected


@pytest.mark.parametrize(
    ("points", "rate", "expected"),
    [(7, "2.5", 17), (17, "0.4", 6), (2, "0.4", 0), (3, "0.333333333333", 0), (10, "1", 10)],
)
def test_converted_points_round_down(points, rate, expected):
    assert converted_points(points, Decimal(rate)) == expected


@pytest.mark.parametrize(
    ("total", "part", "whole", "expected"),
    [
        (8, 1, 3, 3),
        (8, 2, 3, 5),
        (8, 3, 3, 8),
        (2, 1, 3, 1),
        (2, 2, 3, 1),
        (5, 1, 2, 2),
        (7, 0, 3, 0),
    ],
)
def test_proportional_share_is_half_even_and_exact_for_the_whole(total, part, whole, expected):
    assert proportional_share(total, part, whole) == expected


@pytest.mark.parametrize(("part", "whole"), [(4, 3), (-1, 3), (0, 0), (1, -2)])
def test_proportional_share_refuses_what_is_not_a_share(part, whole):
    with pytest.raises(ValueError, match="is not a share"):
        proportional_share(10, part, whole)


@given(total=st.integers(0, 10**15), whole=st.integers(1, 10**6))
def test_proportional_share_of_the_whole_is_the_total(total, whole):
    assert proportional_share(total, whole, whole) == total


@given(
    total=st.integers(0, 10**9),
    whole=st.integers(1, 10**4),
    data=st.data(),
)
def test_proportional_share_is_monotonic_and_bounded(total, whole, data):
    part = data.draw(st.integers(0, whole))
    share = proportional_share(total, part, whole)
    assert 0 <= share <= total
    if part < whole:
        assert share <= proportional_share(total, part + 1, whole)


# --- lots and consumption --------------------------------------------------------------------


def test_lot_is_unavailable_from_the_instant_of_expiry():
    expiring = Lot(1, "A", 10, NOW - DAY, NOW)
    assert expiring.is_live(NOW - timedelta(microseconds=1))
    assert not expiring.is_live(NOW)
    assert not Lot(2, "A", 0, NOW - DAY, None).is_live(NOW)
    assert Lot(3, "A", 1, NOW - DAY, None).is_live(NOW + 10_000 * DAY)


def test_consumption_order_soonest_expiry_then_oldest_issue_then_lowest_id_never_last():
    lots = [
        lot(1, expires=None, issued=-9),
        lot(2, expires=30, issued=-1),
        lot(3, expires=10, issued=-1),
        lot(4, expires=30, issued=-2),
        lot(5, expires=30, issued=-2),
        lot(6, expires=None, issued=-10),
    ]
    ordered = [item.lot_id for item in sorted(lots, key=consumption_order)]
    assert ordered == [3, 4, 5, 2, 6, 1]


def test_never_expiring_lot_comes_after_one_expiring_in_the_far_future():
    far = lot(2, expires=100_000, issued=0)
    never = lot(1, expires=None, issued=-5)
    assert sorted([never, far], key=consumption_order) == [far, never]


def test_plan_consumption_takes_in_order_and_splits_the_last_lot():
    lots = [lot(1, "A", 10, expires=20), lot(2, "B", 10, expires=5), lot(3, "C", 10, expires=9)]
    assert plan_consumption(lots, 15, NOW) == [Take(2, "B", 10), Take(3, "C", 5)]


def test_plan_consumption_skips_expired_and_empty_lots():
    lots = [
        Lot(1, "A", 10, NOW - 2 * DAY, NOW),  # expired at the instant
        Lot(2, "B", 0, NOW - 2 * DAY, NOW + DAY),
        Lot(3, "C", 10, NOW - 2 * DAY, NOW + 2 * DAY),
    ]
    assert plan_consumption(lots, 10, NOW) == [Take(3, "C", 10)]


def test_plan_consumption_refuses_more_than_there_is_or_nothing():
    lots = [lot(1, points=5, expires=3)]
    with pytest.raises(InvariantViolation):
        plan_consumption(lots, 6, NOW)
    with pytest.raises(InvariantViolation):
        plan_consumption(lots, 0, NOW)


def test_available_points_is_live_lots_less_holds():
    lots = [lot(1, points=10, expires=3), Lot(2, "A", 7, NOW - DAY, NOW), lot(3, points=5)]
    assert available_points(lots, held_points=4, now=NOW) == 11


@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=8),
    data=st.data(),
)
def test_plan_consumption_takes_exactly_what_is_asked_from_the_first_lots(sizes, data):
    lots = [lot(i + 1, f"I{i % 3}", size, expires=i + 1) for i, size in enumerate(sizes)]
    points = data.draw(st.integers(1, sum(sizes)))
    takes = plan_consumption(lots, points, NOW)
    assert sum(take.points for take in takes) == points
    assert all(0 < take.points <= sizes[take.lot_id - 1] for take in takes)
    assert [take.lot_id for take in takes] == list(range(1, len(takes) + 1))
    assert all(take.points == sizes[take.lot_id - 1] for take in takes[:-1])


# --- restoration and clawback ----------------------------------------------------------------


def test_plan_restoration_gives_back_the_last_consumed_first():
    consumed = [Take(1, "A", 10), Take(2, "B", 5)]
    assert plan_restoration(consumed, {}, 7) == [Take(2, "B", 5), Take(1, "A", 2)]
    assert plan_restoration(consumed, {2: 5, 1: 2}, 8) == [Take(1, "A", 8)]
    with pytest.raises(InvariantViolation):
        plan_restoration(consumed, {2: 5, 1: 2}, 9)


@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=6), data=st.data())
def test_restoration_in_any_parts_gives_back_exactly_what_was_consumed(sizes, data):
    consumed = [Take(i + 1, f"I{i}", size) for i, size in enumerate(sizes)]
    left = sum(sizes)
    restored: dict[int, int] = {}
    while left:
        part = data.draw(st.integers(1, left))
        for take in plan_restoration(consumed, restored, part):
            restored[take.lot_id] = restored.get(take.lot_id, 0) + take.points
        left -= part
    assert restored == {take.lot_id: take.points for take in consumed}


def test_plan_clawback_takes_only_what_is_left_and_available():
    live = Lot(1, "A", 30, NOW - DAY, NOW + DAY)
    assert plan_clawback(requested_points=100, lot=live, member_available_points=80, now=NOW) == (
        plan_clawback(requested_points=100, lot=live, member_available_points=30, now=NOW)
    )
    clawed = plan_clawback(requested_points=100, lot=live, member_available_points=20, now=NOW)
    assert (clawed.taken_points, clawed.shortfall_points) == (20, 80)
    negative = plan_clawback(requested_points=10, lot=live, member_available_points=-5, now=NOW)
    assert (negative.taken_points, negative.shortfall_points) == (0, 10)
    full = plan_clawback(requested_points=25, lot=live, member_available_points=100, now=NOW)
    assert (full.taken_points, full.shortfall_points) == (25, 0)


def test_plan_clawback_of_an_expired_lot_takes_its_remaining_points():
    expired = Lot(1, "A", 30, NOW - DAY, NOW)
    clawed = plan_clawback(requested_points=50, lot=expired, member_available_points=0, now=NOW)
    assert (clawed.taken_points, clawed.shortfall_points) == (30, 20)


# --- obligations -----------------------------------------------------------------------------


def test_obligations_one_per_foreign_issuer_none_for_own_points():
    takes = [Take(1, "A", 30), Take(2, "SHOP", 25), Take(3, "B", 40), Take(4, "A", 20)]
    drafts = obligations_for(
        takes, acceptor_id="SHOP", point_value=Decimal(1), fee_rate=Decimal("0.05")
    )
    assert [(d.debtor_id, d.creditor_id, d.points, d.gross_value, d.fee) for d in drafts] == [
        ("A", "SHOP", 50, 50, 2),
        ("B", "SHOP", 40, 40, 2),
    ]
    assert [d.settlement_value for d in drafts] == [48, 38]
    assert (
        obligations_for(
            [Take(1, "SHOP", 5)],
            acceptor_id="SHOP",
            point_value=Decimal(1),
            fee_rate=Decimal("0.05"),
        )
        == []
    )


def test_obligation_fee_is_taken_from_the_rounded_gross():
    [draft] = obligations_for(
        [Take(1, "A", 3)], acceptor_id="B", point_value=Decimal("2.5"), fee_rate=Decimal("0.3")
    )
    assert (draft.gross_value, draft.fee, draft.settlement_value) == (8, 2, 6)


def original(points=3, gross=8, fee=2, cancelled=(0, 0, 0)):
    return OriginalObligation(
        obligation_id=1,
        debtor_id="A",
        creditor_id="B",
        points=points,
        gross_value=gross,
        fee=fee,
        cancelled_points=cancelled[0],
        cancelled_gross_value=cancelled[1],
        cancelled_fee=cancelled[2],
    )


def test_cancellations_round_cumulatively_so_one_plus_one_plus_one_adds_up():
    cancelled = (0, 0, 0)
    parts = []
    for _ in range(3):
        [draft] = cancellations_for([original(cancelled=cancelled)], [Take(1, "A", 1)])
        parts.append((draft.points, draft.gross_value, draft.fee))
        cancelled = (
            cancelled[0] - draft.points,
            cancelled[1] - draft.gross_value,
            cancelled[2] - draft.fee,
        )
    assert parts == [(-1, -3, -1), (-1, -2, 0), (-1, -3, -1)]
    assert cancelled == (3, 8, 2)


def test_cancellation_beyond_the_original_is_an_invariant_violation():
    with pytest.raises(InvariantViolation):
        cancellations_for([original(cancelled=(3, 8, 2))], [Take(1, "A", 1)])


def test_cancellation_ignores_restored_points_of_other_issuers():
    assert cancellations_for([original()], [Take(9, "B", 3)]) == []
    [draft] = cancellations_for([original()], [Take(9, "B", 3), Take(1, "A", 3)])
    assert (draft.points, draft.gross_value, draft.fee, draft.reverses_obligation_id) == (
        -3,
        -8,
        -2,
        1,
    )


def cancel_in_parts(points, value, rate, parts):
    """Cancel a redemption's obligation in `parts`; each part's (points, gross, fee) draft."""
    [draft] = obligations_for(
        [Take(1, "A", points)], acceptor_id="B", point_value=value, fee_rate=rate
    )
    done = (0, 0, 0)
    rows = []
    for part in parts:
        ob = original(points, draft.gross_value, draft.fee, cancelled=done)
        [cancel] = cancellations_for([ob], [Take(1, "A", part)])
        rows.append((cancel.points, cancel.gross_value, cancel.fee))
        done = (done[0] - cancel.points, done[1] - cancel.gross_value, done[2] - cancel.fee)
    return draft, rows


split = st.integers(1, 200).flatmap(
    lambda points: st.tuples(
        st.just(points),
        st.lists(st.integers(1, points), max_size=points).map(lambda cuts: _parts(points, cuts)),
    )
)


def _parts(points, cuts):
    marks = sorted({0, points, *cuts})
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


values = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(50), places=2)
rates = st.decimals(min_value=Decimal(0), max_value=Decimal("0.99"), places=2)


@settings(max_examples=300)
@given(case=split, value=values, rate=rates)
def test_cancellations_in_any_parts_add_up_to_exactly_the_original(case, value, rate):
    points, parts = case
    draft, rows = cancel_in_parts(points, value, rate, parts)
    assert sum(row[0] for row in rows) == -points
    assert sum(row[1] for row in rows) == -draft.gross_value
    assert sum(row[2] for row in rows) == -draft.fee
    for _, gross, fee in rows:
        assert gross <= 0
        assert fee <= 0


def test_cancellations_of_a_sub_unit_point_value_add_up_in_uneven_parts():
    # 1,100 points at 0.01: gross 11, fee 0.55 -> 1. Parts 550 + 1 + 549 cancel exactly.
    _, rows = cancel_in_parts(1100, Decimal("0.01"), Decimal("0.05"), [550, 1, 549])
    assert [row[0] for row in rows] == [-550, -1, -549]
    assert sum(row[1] for row in rows) == -11
    assert sum(row[2] for row in rows) == -1


# --- postings --------------------------------------------------------------------------------


def test_consumption_and_restoration_postings_balance_and_mirror_each_other():
    takes = [Take(1, "A", 4), Take(2, "B", 6)]
    out = consumption_postings("m1", "AP", takes)
    back = restoration_postings("m1", "AP", takes)
    assert out == [
        Posting(member_account("m1"), "AP", -4, 1),
        Posting(issuer_account("A"), "AP", 4),
        Posting(member_account("m1"), "AP", -6, 2),
        Posting(issuer_account("B"), "AP", 6),
    ]
    assert [p.amount for p in back] == [-p.amount for p in out]
    check_balanced(out)
    check_balanced(back)
    check_balanced(out + back)


def test_check_balanced_refuses_unbalanced_or_zero_postings():
    with pytest.raises(InvariantViolation, match="unbalanced"):
        check_balanced([Posting("member:m", "AP", 5, 1), Posting("issuer:A", "AP", -4)])
    with pytest.raises(InvariantViolation, match="unbalanced"):
        check_balanced([Posting("member:m", "AP", 5, 1), Posting("issuer:A", "X1", -5)])
    with pytest.raises(InvariantViolation, match="zero posting"):
        check_balanced([Posting("member:m", "AP", 0, 1)])
    check_balanced([])
    check_balanced(
        [
            Posting("member:m", "AP", -7, 1),
            Posting("issuer:A", "AP", 7),
            Posting("member:m", "X1", 17, 2),
            Posting("issuer:A", "X1", -17),
        ]
    )
