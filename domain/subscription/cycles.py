"""Billing cycles: boundaries from the anchor, the agreement's end."""

from __future__ import annotations

from datetime import datetime

from domain.catalog.model import Plan
from domain.shared.periods import add_months


def commitment_end(plan: Plan, start: datetime) -> datetime | None:
    return add_months(start, plan.commitment_months) if plan.commitment_months else None


def next_boundary(anchor: datetime, months: int, after: datetime,
                   day: int | None = None) -> datetime:
    """The first anchor-based boundary after `after` (a 31st anchor returns to the 31st)."""
    n = 1
    while (boundary := add_months(anchor, n * months, day)) <= after:
        n += 1
    return boundary
