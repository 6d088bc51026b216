"""Calendar billing (docs/domain.md, "Calendar billing"): a subscription billed on a chosen day
of the month, or of the week for a weekly plan (every subscription of an account on the same
day, for one invoice date), whose first period runs from the start to that day and is charged
prorated."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from domain.billing.charges import Charge, remaining_fraction, round_money
from domain.catalog.model import LEVEL_AGGREGATIONS
from domain.shared.errors import CommandRefused
from domain.shared.periods import Length, add_months, length_of

MAX_BILLING_DAY = 28  # a day every month has


def first_boundary(at: datetime, billing_day: int, length: Length) -> datetime:
    """The end of a calendar subscription's first period: the next `billing_day` (of the
    month; of the week for weekly periods, 1 = Monday as ISO 8601) at 00:00 UTC after `at`,
    or a whole period when `at` is that moment."""
    if length.weeks:
        if not 1 <= billing_day <= 7:
            raise CommandRefused("a weekly plan's billing_day is a day of the week from 1 "
                                 "(Monday) to 7 (Sunday)", "invalid_billing_day")
        midnight = datetime.combine(at.astimezone(UTC).date(), time(), UTC)
        boundary = midnight + timedelta(days=(billing_day - midnight.isoweekday()) % 7)
        if boundary == at:
            return length.after(at)
        return boundary if boundary > at else boundary + timedelta(weeks=1)
    if not 1 <= billing_day <= MAX_BILLING_DAY:
        raise CommandRefused(f"billing_day is a day of the month from 1 to {MAX_BILLING_DAY}",
                             "invalid_billing_day")
    day = at.astimezone(UTC).date().replace(day=billing_day)
    boundary = datetime.combine(day, time(), UTC)
    if boundary == at:
        return length.after(at)
    return boundary if boundary > at else add_months(boundary, 1)


def first_period(terms: dict[str, Any], charges: list[Charge], at: datetime,
                 end: datetime) -> tuple[dict[str, Any], list[Charge]]:
    """The first period [at, end) as a share of a whole one ending at `end`: its charges
    prorated (each rounded HALF_UP to the cent, with the share shown) and its allowances'
    `included` prorated in whole units (HALF_UP), as an upgrade blends them; a level's (a
    peak, distinct values, a last reading, a recurring level) is not: a recurring level is
    weighted by the whole period already, the others are levels whatever the period's
    length."""
    share = remaining_fraction(at, length_of(terms).after(end, -1), end)
    if share == 1:
        return terms, charges
    shown = str(share.quantize(Decimal("0.000001")))
    prorated = [{**c, "amount": str(round_money(Decimal(c["amount"]) * share)),
                 "fraction": shown, "period_start": at.isoformat()} for c in charges]
    allowances = {m: a if a.get("aggregation") in LEVEL_AGGREGATIONS else {
        **a, "included": str((Decimal(a["included"]) * share).quantize(Decimal(1),
                                                                         ROUND_HALF_UP))}
        for m, a in terms["allowances"].items()}
    return {**terms, "allowances": allowances}, prorated
