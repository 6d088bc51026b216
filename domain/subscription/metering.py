"""Usage metering helpers: usage by UTC day (daily caps reset at UTC midnight) and totals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.contracts.usage import UsageItem

ZERO = Decimal(0)


def utc_day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def next_utc_midnight(day: str) -> datetime:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return start + timedelta(days=1)


def by_utc_day(items: Sequence[UsageItem]) -> list[tuple[str, list[UsageItem]]]:
    days: dict[str, list[UsageItem]] = {}
    for item in items:
        days.setdefault(utc_day(item.at), []).append(item)
    return sorted(days.items())


def metric_totals(items: Sequence[UsageItem]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for item in items:
        totals[item.metric] = totals.get(item.metric, ZERO) + item.quantity
    return {m: str(q) for m, q in sorted(totals.items())}
