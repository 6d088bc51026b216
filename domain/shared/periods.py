"""Billing periods: calendar arithmetic on timezone-aware datetimes, anchored on a day of month."""

from __future__ import annotations

import calendar
from datetime import datetime


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
