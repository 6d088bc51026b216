"""Billing periods: calendar arithmetic on timezone-aware datetimes, anchored on a day of month,
and the length of a period in months or weeks."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


def require_aware(at: datetime, what: str = "time") -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware: {at!r}")
    return at


def add_months(anchor: datetime, months: int, day: int | None = None) -> datetime:
    """The same day of month `months` later, clamped to the month's last day (Jan 31 -> Feb 28).
    `day` overrides the anchor's day (a subscription billed on the 31st keeps the 31st after
    its anchor moved to a 30th)."""
    require_aware(anchor, "anchor")
    index = anchor.month - 1 + months
    year, month = anchor.year + index // 12, index % 12 + 1
    day = min(anchor.day if day is None else day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def cycle_bounds(anchor: datetime, at: datetime, months: int = 1) -> tuple[datetime, datetime]:
    """The billing cycle [start, end) containing `at`, for cycles of `months` starting at `anchor`.

    Each boundary is computed from the anchor (not from the previous boundary), so a subscription
    anchored on the 31st bills on the 31st again after February's 28th.
    """
    require_aware(anchor, "anchor")
    require_aware(at)
    if at < anchor:
        raise ValueError("time is before the anchor")
    n = ((at.year - anchor.year) * 12 + at.month - anchor.month) // months
    start = add_months(anchor, n * months)
    while start > at:
        n -= 1
        start = add_months(anchor, n * months)
    end = add_months(anchor, (n + 1) * months)
    while end <= at:
        n += 1
        start, end = end, add_months(anchor, (n + 1) * months)
    return start, end


WEEK = timedelta(weeks=1)


@dataclass(frozen=True)
class Length:
    """A billing period's length: whole months (anchored on a day of month, as `add_months`)
    or whole weeks (seven days of elapsed time). Terms say which: `period_months`, or
    `period_weeks` for a weekly plan (whose terms have no `period_months`, so that nothing
    multiplies a per-month amount by a count of weeks)."""

    months: int = 0
    weeks: int = 0

    def after(self, start: datetime, periods: int = 1, day: int | None = None) -> datetime:
        """The boundary `periods` periods after `start` (before it when negative); `day`: a
        monthly period's billing day of month."""
        if self.weeks:
            return start + self.weeks * periods * WEEK
        return add_months(start, self.months * periods, day)

    @property
    def unit(self) -> str:
        return "week" if self.weeks else "month"

    def as_terms(self) -> dict[str, int]:
        """The keys that say this length in terms (and in a closing cycle, which copies them)."""
        return {"period_weeks": self.weeks} if self.weeks else {"period_months": self.months}

    @property
    def count(self) -> int:
        """How many of its unit: what a price per month (or per week) is multiplied by."""
        return self.weeks or self.months


def length_of(terms: Mapping[str, Any]) -> Length:
    """The period length of terms (or of a closing cycle, which copies it)."""
    weeks = terms.get("period_weeks")
    if weeks:
        return Length(weeks=int(weeks))
    return Length(months=int(terms.get("period_months") or 1))


def period_length_keys(terms: Mapping[str, Any]) -> dict[str, int]:
    """The keys of terms that say their period's length, to copy (into a closing cycle)."""
    return length_of(terms).as_terms()
