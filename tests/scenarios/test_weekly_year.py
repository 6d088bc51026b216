"""Weekly plans over a year (docs/catalog.md, "Weekly plans"), pure domain on a simulated clock.
A courier service sells a weekly plan (12.00 a week, 50 deliveries and 2 seats included, an
extra seat 3.00 a week) beside a monthly one. Figures worked out by hand:

- Anniversary: subscribed Monday 2026-01-05 10:00 UTC with 25 % off the plan fee for 4 periods.
  Week 1: 12.00 - 3.00 = 9.00. A seat added Thursday Jan 8 12:00 is charged for the 94 of the
  week's 168 hours left: 3.00 x 94/168 = 1.678571 -> 1.68, at once; three members use it,
  so it renews each week. 70 deliveries in week 1
  are 20 past the 50 included: 4.00 on the Jan 12 invoice, with 12.00 + 3.00 - 3.00: 16.00.
  Jan 19 and 26: 12.00 (the coupon's last two periods); from Feb 2 every Monday 15.00, through
  Dec 28 (51 weeks after Jan 5): 52 weekly invoices and the seat's, 770.68 in all.
- Calendar: subscribed Wednesday Jan 7 00:00 billed on Mondays (billing_day = 1): the first
  period runs 5 of 7 days to Monday Jan 12: 12.00 x 5/7 = 8.571428 -> 8.57 and 50 x 5/7 =
  35.7 -> 36 deliveries; 40 used are 4 past them: 0.80 with the Jan 12 fee, 12.80.
- Weekly to monthly (a longer period on a plan of higher rank) applies at once: on Thursday
  Jan 8 10:00 the week's unused 4 of 7 days are credited, 12.00 x 4/7 = 6.857142 -> -6.86,
  and the month to Feb 8 10:00 is charged 45.00. Monthly back to weekly applies at the
  period's end, Feb 8 10:00: 12.00 for the week to Feb 15 10:00.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError, CatalogError
from projections.analytics.model import change_of
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, utc

COURIER_TOML = """
[catalog]
id = "courier"
currency = "USD"

[plans.weekly]
name = "Weekly"
interval = "week"
price = "12.00"
included_seats = 2
extra_seat_price = "3.00"

[plans.weekly.allowances.deliveries]
included = 50
limit = "overage"
overage_unit_price = "0.20"

[plans.monthly]
name = "Monthly"
rank = 1
price = "45.00"

[plans.monthly.allowances.deliveries]
included = 250
limit = "overage"
overage_unit_price = "0.15"

[addons.priority]
name = "Priority support"
price = "5.00"

[coupons.FIRST4]
name = "First four weeks"
percent_off = 25
duration = "repeating"
periods = 4
applies_to = "plan"
"""
COURIER = Catalog.from_toml(COURIER_TOML)


def lines(document: dict) -> list[tuple[str, str]]:
    return [(x["description"], x["amount"]) for x in document["lines"]]


def test_a_weekly_plan_bills_every_week_of_the_year() -> None:
    j = Journey(COURIER, "wk-1", "weekly", utc(2026, 1, 5, 10), US_BUSINESS, period="week",
                coupon="FIRST4")
    assert (j.sub.cycle_end, j.sub.billing_day) == (utc(2026, 1, 12, 10), 1)  # Mondays
    assert "period_months" not in j.sub.terms and j.sub.terms["period_weeks"] == 1
    j.command(utc(2026, 1, 8, 12), "add_seats", count=1)
    for member in ("ann", "bob", "cat"):  # the third seat is used: it renews each week
        j.command(utc(2026, 1, 8, 13), "add_member", member=member)
    j.use(utc(2026, 1, 10), "deliveries", 70)
    j.advance(utc(2026, 12, 31))
    fees = [d for d in j.issued if any(x["kind"] == "plan" for x in d["lines"])]
    assert [d["issued_at"][:10] for d in fees][:3] == ["2026-01-05", "2026-01-12",
                                                        "2026-01-19"]
    assert len(fees) == 52 and fees[-1]["issued_at"][:10] == "2026-12-28"
    assert [d["total"] for d in j.issued[:6]] == ["9.00", "1.68", "16.00", "12.00", "12.00",
                                                  "15.00"]
    assert lines(j.issued[1]) == [("Extra seats", "1.68")]
    assert ("deliveries over allowance", "4.00") in lines(j.issued[2])
    assert {d["total"] for d in j.issued[5:]} == {"15.00"}
    assert sum(Decimal(d["total"]) for d in j.issued) == Decimal("770.68")
    assert j.sub.cycle_start == utc(2026, 12, 28, 10)


def test_a_weekly_calendar_subscription_starts_prorated_then_bills_on_mondays() -> None:
    j = Journey(COURIER, "wk-2", "weekly", utc(2026, 1, 7), US_BUSINESS, period="week",
                billing_day=1)
    assert j.sub.cycle_end == utc(2026, 1, 12)
    assert j.sub.terms["allowances"]["deliveries"]["included"] == "36"
    assert lines(j.issued[0]) == [("Weekly (week)", "8.57")]
    j.use(utc(2026, 1, 9), "deliveries", 40)
    j.advance(utc(2026, 2, 2, 1))
    assert [(d["issued_at"][:10], d["total"]) for d in j.issued] == [
        ("2026-01-07", "8.57"), ("2026-01-12", "12.80"), ("2026-01-19", "12.00"),
        ("2026-01-26", "12.00"), ("2026-02-02", "12.00")]
    assert j.sub.billing_day == 1
    with pytest.raises(BillingError) as refused:
        Journey(COURIER, "wk-3", "weekly", utc(2026, 1, 7), US_BUSINESS, period="week",
                billing_day=8)
    assert refused.value.code == "invalid_billing_day"


def test_weekly_to_monthly_at_once_and_back_at_the_periods_end() -> None:
    j = Journey(COURIER, "wk-4", "weekly", utc(2026, 1, 5, 10), US_BUSINESS, period="week")
    issued = j.command(utc(2026, 1, 8, 10), "change_plan", plan="monthly", period="month")
    assert [x["amount"] for x in issued[0]["lines"]] == ["-6.86", "45.00"]
    assert issued[0]["total"] == "38.14"
    assert (j.sub.plan_id, j.sub.cycle_end) == ("monthly", utc(2026, 2, 8, 10))
    j.command(utc(2026, 1, 20), "change_plan", plan="weekly", period="week")
    assert j.sub.plan_id == "monthly"
    j.advance(utc(2026, 2, 8, 11))
    assert (j.sub.plan_id, j.sub.cycle_end) == ("weekly", utc(2026, 2, 15, 10))
    assert lines(j.issued[-1]) == [("Weekly (week)", "12.00")]


def test_month_priced_add_ons_do_not_go_with_weekly_plans() -> None:
    weekly = Journey(COURIER, "wk-5", "weekly", utc(2026, 1, 5), US_BUSINESS, period="week")
    with pytest.raises(BillingError) as refused:
        weekly.command(utc(2026, 1, 6), "add_addon", addon="priority")
    assert refused.value.code == "period_not_offered"
    monthly = Journey(COURIER, "wk-6", "monthly", utc(2026, 1, 5), US_BUSINESS)
    monthly.command(utc(2026, 1, 6), "add_addon", addon="priority")
    with pytest.raises(BillingError) as refused:
        monthly.command(utc(2026, 1, 7), "change_plan", plan="weekly", period="week")
    assert refused.value.code == "period_not_offered"
    with pytest.raises(BillingError) as refused:  # a monthly plan is not sold per week
        monthly.command(utc(2026, 1, 7), "change_billing_period", period="week")
    assert refused.value.code == "period_not_offered"


@pytest.mark.parametrize(("extra", "message"), [
    ('prices = { month = "40.00" }', "one `price`, per week"),
    ("commitment_months = 12", "no commitment_months"),
    ("user_plans = true", "no user_plans"),
])
def test_a_weekly_plan_states_its_amounts_per_week_only(extra: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(COURIER_TOML.replace('interval = "week"', f'interval = "week"\n{extra}'))
    with pytest.raises(CatalogError, match="interval is"):
        Catalog.from_toml(COURIER_TOML.replace('interval = "week"', 'interval = "day"'))


def test_a_weekly_price_counts_52_12_of_it_in_monthly_recurring_revenue() -> None:
    message = {"type": "Subscribed", "data": {"terms": COURIER.plan("weekly").terms("week")}}
    assert change_of(message) == ("new", "weekly", Decimal("52.0000"), "USD")


def test_a_move_between_weeks_and_months_at_renewal_counts_from_that_day() -> None:
    """Weekly ranked above monthly: the move waits for the week's end, Monday Jan 12 10:00, and
    the months count from there (Feb 12, Mar 12), not from a weekday number."""
    catalog = Catalog.from_toml(COURIER_TOML.replace('interval = "week"',
                                                     'interval = "week"\nrank = 2'))
    j = Journey(catalog, "wk-7", "weekly", utc(2026, 1, 5, 10), US_BUSINESS, period="week")
    assert j.command(utc(2026, 1, 6), "change_plan", plan="monthly", period="month") == []
    j.advance(utc(2026, 3, 12, 11))
    assert [(d["issued_at"][:10], d["total"]) for d in j.issued] == [
        ("2026-01-05", "12.00"), ("2026-01-12", "45.00"), ("2026-02-12", "45.00"),
        ("2026-03-12", "45.00")]
    assert j.sub.billing_day == 12


def test_an_undone_move_across_intervals_leaves_no_period_behind() -> None:
    catalog = Catalog.from_toml(COURIER_TOML.replace('interval = "week"',
                                                     'interval = "week"\nrank = 2'))
    j = Journey(catalog, "wk-8", "weekly", utc(2026, 1, 5, 10), US_BUSINESS, period="week")
    j.command(utc(2026, 1, 6), "change_plan", plan="monthly", period="month")
    assert (j.sub.scheduled_plan or {}).get("plan_id") == "monthly"
    j.command(utc(2026, 1, 7), "change_plan", plan="weekly")  # back: nothing scheduled
    assert (j.sub.scheduled_plan, j.sub.scheduled_period) == (None, None)
    j.advance(utc(2026, 1, 26, 11))  # renews weekly, as before
    assert [d["total"] for d in j.issued] == ["12.00", "12.00", "12.00", "12.00"]


def test_cancelling_to_a_weekly_free_plan() -> None:
    catalog = Catalog.from_toml(COURIER_TOML.replace(
        'id = "courier"', 'id = "courier"\nfree_plan = "free"').replace(
        'interval = "week"', 'interval = "week"\nrank = 2') + """
[plans.free]
name = "Free"
interval = "week"
rank = 0
price = "0.00"
""")
    j = Journey(catalog, "wk-9", "monthly", utc(2026, 1, 5), US_BUSINESS)
    j.command(utc(2026, 1, 6), "cancel")
    j.advance(utc(2026, 2, 20))
    assert (j.sub.plan_id, j.sub.terms["period"], j.sub.cycle_start) == (
        "free", "week", utc(2026, 2, 19))
