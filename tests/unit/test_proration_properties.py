"""Properties of billing under any sequence of plan changes, seat purchases, usage and cycle
rolls: every charge equals the documented proration rule, no period ever totals below zero, and
allowances never carry over. An independent model computes what the rule says."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.catalog.model import Catalog
from domain.contracts.usage import UsageItem
from domain.shared.errors import CommandRefused
from domain.subscription.aggregate import Subscription

CATALOG = Catalog.from_toml("""
[catalog]
id = "props"
currency = "EUR"

[plans.small]
name = "Small"
rank = 1
price = "100.00"
included_seats = 2
extra_seat_price = "10.00"
allowances.units = { included = 1000, limit = "overage", overage_unit_price = "0.01" }

[plans.medium]
name = "Medium"
rank = 2
price = "250.00"
included_seats = 2
extra_seat_price = "10.00"
allowances.units = { included = 1000, limit = "overage", overage_unit_price = "0.01" }

[plans.large]
name = "Large"
rank = 3
price = "599.99"
included_seats = 2
extra_seat_price = "12.50"
allowances.units = { included = 1000, limit = "overage", overage_unit_price = "0.01" }
""")
PRICES = {p: CATALOG.plan(p).prices["month"] for p in CATALOG.plans}
SEAT = {p: CATALOG.plan(p).extra_seat_monthly_price for p in CATALOG.plans}
RANK = {p: CATALOG.plan(p).rank for p in CATALOG.plans}
START = datetime(2026, 1, 31, 8, tzinfo=UTC)
MICRO = timedelta(microseconds=1)


def cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def rest(at: datetime, start: datetime, end: datetime) -> Decimal:
    return Decimal((end - at) // MICRO) / Decimal((end - start) // MICRO)


@dataclass
class Model:
    """What the documented rules say the charges are."""

    plan: str
    seats: int = 2
    scheduled: str | None = None
    used: int = 0
    lines: list[Decimal] = field(default_factory=list)

    def period_charges(self) -> list[Decimal]:
        extra = [cents(self.seats_extra() * SEAT[self.plan])] if self.seats_extra() else []
        return [PRICES[self.plan], *extra]

    def seats_extra(self) -> int:
        return max(self.seats - 2, 0)


operation = st.one_of(
    st.tuples(st.just("plan"), st.sampled_from(sorted(CATALOG.plans))),
    st.tuples(st.just("seats"), st.integers(min_value=1, max_value=5)),
    st.tuples(st.just("usage"), st.integers(min_value=1, max_value=900)),
)
steps = st.lists(st.tuples(st.integers(min_value=0, max_value=20 * 24 * 3600), operation),
                 min_size=1, max_size=25)


def amounts(events: list[Any]) -> list[Decimal]:
    return [Decimal(line["amount"]) for e in events for line in getattr(e, "charges", [])]


@settings(database=None, deadline=None, max_examples=150)
@given(st.sampled_from(sorted(CATALOG.plans)), steps)
def test_charges_follow_the_rule_never_go_negative_and_nothing_carries_over(
        first_plan: str, ops: list[tuple[int, tuple[str, Any]]]) -> None:
    sub = Subscription.subscribe("p", "acct", first_plan, CATALOG, START)
    model = Model(first_plan)
    assert amounts(sub.collect_events()) == model.period_charges()
    at = START
    per_cycle: dict[datetime, Decimal] = {sub.cycle_start: sum(model.period_charges(),
                                                               Decimal(0))}
    for n, (gap, (kind, arg)) in enumerate(ops):
        at += timedelta(seconds=gap)
        rolled_before = sub.cycle_start
        sub.advance_to(at, CATALOG)
        rolls = [e for e in sub.collect_events() if isinstance(e, Subscription.CycleRolled)]
        for roll in rolls:
            if model.scheduled:
                model.plan, model.scheduled = model.scheduled, None
            model.seats = 2  # a new period bills the seats in use (no members here): included
            model.used = 0
            assert [Decimal(x["amount"]) for x in roll.charges] == model.period_charges()
            per_cycle[roll.cycle_start] = sum(model.period_charges(), Decimal(0))
            assert sub.used == {} or sub.cycle_start != roll.cycle_start  # no rollover
        if rolls:
            assert sub.cycle_start != rolled_before
            assert sub.remaining("units") == Decimal(1000)  # a fresh allowance, nothing carried
        start, end = sub.cycle_start, sub.cycle_end
        expected: list[Decimal] = []
        if kind == "plan" and arg != model.plan:
            if RANK[arg] > RANK[model.plan]:
                f = rest(at, start, end)
                expected = [cents(-PRICES[model.plan] * f), cents(PRICES[arg] * f)]
                if model.seats_extra() and SEAT[arg] != SEAT[model.plan]:
                    expected += [cents(-model.seats_extra() * SEAT[model.plan] * f),
                                 cents(model.seats_extra() * SEAT[arg] * f)]
                model.plan, model.scheduled = arg, None
                sub.change_plan(arg, at, CATALOG)
            elif model.used > 1000:  # a downgrade waits for usage within the lower plan
                with pytest.raises(CommandRefused) as refused:
                    sub.change_plan(arg, at, CATALOG)
                assert refused.value.code == "usage_above_limit"
            else:
                model.scheduled = arg
                sub.change_plan(arg, at, CATALOG)
        elif kind == "plan":
            sub.change_plan(arg, at, CATALOG)
            model.scheduled = None
        elif kind == "seats":
            expected = [cents(arg * SEAT[model.plan] * rest(at, start, end))]
            model.seats += arg
            sub.add_seats(arg, at)
        else:
            sub.record_usage([UsageItem(f"u{n}", "p", "units", Decimal(arg), at)])
            model.used += arg
        got = amounts([e for e in sub.collect_events()
                       if not isinstance(e, Subscription.UsagePeriodClosed)])
        assert got == expected
        per_cycle[start] = per_cycle.get(start, Decimal(0)) + sum(got, Decimal(0))
        assert all(total >= 0 for total in per_cycle.values()), per_cycle
