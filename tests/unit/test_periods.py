"""Calendar arithmetic of billing periods (domain/shared/periods.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.shared.periods import add_months, cycle_bounds


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_add_months_clamps_jan_31_to_feb_28_in_common_year() -> None:
    assert add_months(utc(2025, 1, 31), 1) == utc(2025, 2, 28)


def test_add_months_clamps_jan_31_to_feb_29_in_leap_year() -> None:
    assert add_months(utc(2024, 1, 31), 1) == utc(2024, 2, 29)


def test_add_months_from_anchor_returns_to_the_31st() -> None:
    anchor = utc(2025, 1, 31)
    assert add_months(anchor, 2) == utc(2025, 3, 31)
    assert add_months(anchor, 3) == utc(2025, 4, 30)
    assert add_months(anchor, 12) == utc(2026, 1, 31)


def test_add_months_crosses_year_and_keeps_time_and_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    anchor = datetime(2025, 11, 30, 13, 45, tzinfo=plus_two)
    assert add_months(anchor, 3) == datetime(2026, 2, 28, 13, 45, tzinfo=plus_two)
    assert add_months(anchor, 3).tzinfo is plus_two


def test_add_months_refuses_naive_anchor() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_months(datetime(2025, 1, 31), 1)  # noqa: DTZ001 - deliberately naive


def test_cycle_bounds_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cycle_bounds(utc(2025, 1, 31), datetime(2025, 2, 1))  # noqa: DTZ001


def test_cycle_bounds_refuses_naive_anchor_with_value_error() -> None:
    with pytest.raises(ValueError):
        cycle_bounds(datetime(2025, 1, 31), utc(2025, 2, 1))  # noqa: DTZ001


def test_cycle_bounds_refuses_time_before_anchor() -> None:
    with pytest.raises(ValueError, match="before the anchor"):
        cycle_bounds(utc(2025, 1, 31), utc(2025, 1, 30))


EXPECTED_31ST_BOUNDARIES = [
    utc(2025, 1, 31), utc(2025, 2, 28), utc(2025, 3, 31), utc(2025, 4, 30), utc(2025, 5, 31),
    utc(2025, 6, 30), utc(2025, 7, 31), utc(2025, 8, 31), utc(2025, 9, 30), utc(2025, 10, 31),
    utc(2025, 11, 30), utc(2025, 12, 31), utc(2026, 1, 31), utc(2026, 2, 28),
]


@pytest.mark.parametrize("k", range(13))
def test_cycle_bounds_31st_anchor_over_13_months(k: int) -> None:
    anchor = EXPECTED_31ST_BOUNDARIES[0]
    start, end = EXPECTED_31ST_BOUNDARIES[k], EXPECTED_31ST_BOUNDARIES[k + 1]
    for at in (start, start + timedelta(hours=12), end - timedelta(microseconds=1)):
        assert cycle_bounds(anchor, at) == (start, end)
    # the end is exclusive: it opens the next cycle
    assert cycle_bounds(anchor, end)[0] == end


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(2025, 1, 31), (utc(2025, 1, 31), utc(2025, 4, 30))),
        (utc(2025, 4, 29, 23), (utc(2025, 1, 31), utc(2025, 4, 30))),
        (utc(2025, 4, 30), (utc(2025, 4, 30), utc(2025, 7, 31))),
        (utc(2025, 9, 15), (utc(2025, 7, 31), utc(2025, 10, 31))),
        (utc(2026, 1, 31), (utc(2026, 1, 31), utc(2026, 4, 30))),
    ],
)
def test_cycle_bounds_three_month_periods(
    at: datetime, expected: tuple[datetime, datetime]
) -> None:
    start, end = cycle_bounds(utc(2025, 1, 31), at, months=3)
    assert (start, end) == expected
    assert start <= at < end


def test_cycle_bounds_compares_instants_across_offsets() -> None:
    # 2025-02-28T00:30+01:00 is 2025-02-27T23:30Z: still in the first cycle
    at = datetime(2025, 2, 28, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert cycle_bounds(utc(2025, 1, 31), at) == (utc(2025, 1, 31), utc(2025, 2, 28))
