"""Plan changes across billing periods (docs/domain.md, "Plan changes"), pure domain on a
simulated clock. A US business on Basic per month (20.00; 200.00 per year) moves on February 15
to Pro, sold per year only (500.00): a longer period on a higher plan starts at once, the unused
half of February credited: 20.00 x 14/28 = 10.00, so that invoice is 500.00 - 10.00 = 490.00,
and the yearly period runs from February 15. On June 1 it asks to go back to Basic per month:
that waits for the yearly period's end (February 15, 2027), then 20.00 a month on the 15th.
"""

from __future__ import annotations

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, replay, utc

PLANS = Catalog.from_toml("""
[catalog]
id = "periods"
currency = "USD"

[plans.basic]
name = "Basic"
prices = { month = "20.00", year = "200.00" }

[plans.pro]
name = "Pro"
rank = 1
prices = { year = "500.00" }
""")


def issued(j: Journey) -> list[tuple[str, list[tuple[str, str]], str]]:
    return [(d["issued_at"][:10], [(x["description"], x["amount"]) for x in d["lines"]],
             d["total"]) for d in j.issued]


def test_monthly_to_a_yearly_plan_at_once_and_back_at_the_years_end() -> None:
    j = Journey(PLANS, "pd-austin", "basic", utc(2026, 1, 1), US_BUSINESS)
    with pytest.raises(BillingError) as refused:
        j.command(utc(2026, 2, 10), "change_plan", plan="pro")
    assert refused.value.code == "period_not_offered"
    j.command(utc(2026, 2, 15), "change_plan", plan="pro", period="year")
    assert (j.sub.plan_id, j.sub.terms["period"], j.sub.cycle_end) == (
        "pro", "year", utc(2027, 2, 15))
    assert j.command(utc(2026, 6, 1), "change_plan", plan="basic", period="month") == []
    assert (j.sub.scheduled_plan or {}).get("plan_id") == "basic"
    assert j.sub.scheduled_period == "month"
    j.advance(utc(2027, 3, 16))
    assert issued(j) == [
        ("2026-01-01", [("Basic (month)", "20.00")], "20.00"),
        ("2026-02-01", [("Basic (month)", "20.00")], "20.00"),
        ("2026-02-15", [("Unused time on Basic (month)", "-10.00"), ("Pro (year)", "500.00")],
         "490.00"),
        ("2027-02-15", [("Basic (month)", "20.00")], "20.00"),
        ("2027-03-15", [("Basic (month)", "20.00")], "20.00"),
    ]
    assert replay(j.invoicer.history).invoices == j.sub.invoices


def test_the_same_plan_per_year_starts_at_once_and_per_month_waits() -> None:
    j = Journey(PLANS, "pd-2", "basic", utc(2026, 1, 1), US_BUSINESS)
    j.command(utc(2026, 1, 11), "change_plan", plan="basic", period="year")  # 21 of 31 left
    assert issued(j)[-1] == ("2026-01-11", [("Unused time on Basic (month)", "-13.55"),
                                            ("Basic (year)", "200.00")], "186.45")
    j.command(utc(2026, 3, 1), "change_plan", plan="basic", period="month")
    assert j.sub.scheduled_period == "month" and j.sub.scheduled_plan is None
    j.advance(utc(2027, 1, 12))
    assert issued(j)[-1] == ("2027-01-11", [("Basic (month)", "20.00")], "20.00")
