"""Coupons over a year, pure domain on a simulated clock (commands, usage, the invoicer after
every step): a US business subscribes to a 40.00 plan with a coupon of 25 % off the plan fee for
three periods; after it ends, a coupon of 15.00 off the whole invoice, once, applied in June,
takes 15.00 off July's invoice (the June fee plus May's overage was invoiced before it). Worked
out by hand:
- January to March: 40.00 - 10.00 = 30.00 (the invoices of Jan 1, Feb 1, Mar 1).
- April 1 on: 40.00; May's 1,200 calls are 200 past the 1,000 included, 0.05 each = 10.00 on
  the June 1 invoice (50.00).
- The June 20 coupon: the July 1 invoice has the July fee and June's 300 calls past the
  allowance (15.00): 55.00 - 15.00 = 40.00; August on: 40.00 again.
"""

from __future__ import annotations

from domain.catalog.model import Catalog
from tests.scenarios.test_invoices_year import (
    OUTSIDE_SCOPE,
    US_BUSINESS,
    Expected,
    Journey,
    assert_year,
    inv,
    utc,
)

SHOP = Catalog.from_toml("""
[catalog]
id = "shop"
currency = "USD"

[plans.team]
name = "Team"
price = "40.00"

[plans.team.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.05"

[coupons.WELCOME]
name = "Welcome"
percent_off = 25
duration = "repeating"
periods = 3
applies_to = "plan"

[coupons.SORRY]
name = "Sorry for the outage"
amount_off = "15.00"
""")

FEE = ("Team (month)", "40.00", "0.00")
WELCOME = ("Coupon Welcome: 25 % off the plan fee", "-10.00", "0.00")
SORRY = ("Coupon Sorry for the outage: 15.00 off the invoice", "-15.00", "0.00")


def test_a_plan_coupon_for_three_periods_then_an_invoice_coupon_once() -> None:
    j = Journey(SHOP, "sh-austin", "team", utc(2026, 1, 1), US_BUSINESS, coupon="WELCOME")
    j.use(utc(2026, 5, 10), "api_calls", 1200)
    j.advance(utc(2026, 6, 1, 1))  # the invoicer issues June's invoice before the coupon
    j.command(utc(2026, 6, 20), "apply_coupon", coupon="SORRY")
    j.use(utc(2026, 6, 21), "api_calls", 1300)
    for month in range(1, 13):
        j.advance(utc(2026 + month // 12, month % 12 + 1, 1, 1))

    def issued(number: int, month: int, lines: list[tuple[str, str, str]],
               total: str) -> Expected:
        year = 2026 + (month - 1) // 12
        at = utc(year, (month - 1) % 12 + 1, 1, 0 if month == 1 else 1)
        return Expected(inv(year, number), at, lines, total, "0.00", total)

    expected = [
        issued(1, 1, [FEE, WELCOME], "30.00"),
        issued(2, 2, [FEE, WELCOME], "30.00"),
        issued(3, 3, [FEE, WELCOME], "30.00"),
        issued(4, 4, [FEE], "40.00"),
        issued(5, 5, [FEE], "40.00"),
        issued(6, 6, [FEE, ("api_calls over allowance", "10.00", "0.00")], "50.00"),
        issued(7, 7, [FEE, ("api_calls over allowance", "15.00", "0.00"), SORRY], "40.00"),
        *(issued(n, n, [FEE], "40.00") for n in range(8, 13)),
        issued(1, 13, [FEE], "40.00"),
    ]
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)
    assert j.sub.coupon_now() is None
