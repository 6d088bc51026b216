"""A percentage of reported amounts over a year (docs/catalog.md, "Charge models"), pure
domain on a simulated clock: a US merchant on a pay-as-you-go plan pays 2.9 % of each payment
plus 0.30, at least 0.50 and at most 10.00 per payment; each month's fees are summed exactly
and the cycle's line is rounded once, an hour after the month ends (the late-usage grace).

The months cycle through five payments, 100, 5, 1000, 250.40 and 17.99, taking the first
(month mod 5) + 1 of them. Their fees, by hand: 100 -> 2.90 + 0.30 = 3.20; 5 -> 0.445, raised
to 0.50; 1000 -> 29.30, lowered to 10.00; 250.40 -> 7.2616 + 0.30 = 7.5616; 17.99 -> 0.52171
+ 0.30 = 0.82171. So one payment 3.20; two 3.70; three 13.70; four 21.2616 -> 21.26; five
22.08331 -> 22.08. In June a payment of 400 timed 23:00 on the 30th arrives at 00:30 on July 1,
inside the grace hour: it counts in June (11.90, lowered to 10.00), whose two payments make
3.70: 13.70 in all.
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
from tests.unit.test_charge_models import PAYMENTS as PAYMENTS_TOML

PAYMENTS = Catalog.from_toml(PAYMENTS_TOML)  # 2.9 % + 0.30, at least 0.50, at most 10
AMOUNTS = ("100", "5", "1000", "250.40", "17.99")
RULE = "plus 0.30, at least 0.50, at most 10.00 per event"


def line(amount: str, fee: str) -> tuple[str, str, str]:
    return (f"payments: 2.9 % of {amount}, {RULE}", fee, "0.00")


def test_a_percentage_of_each_payment_within_its_bounds_over_a_year() -> None:
    j = Journey(PAYMENTS, "pay-1", "pay", utc(2026, 1, 1), US_BUSINESS)
    for month in range(1, 13):
        for day, amount in enumerate(AMOUNTS[:month % 5 + 1], start=3):
            j.use(utc(2026, month, day, 12), "payments", amount)
        if month == 6:
            j.advance(utc(2026, 7, 1, 0, 30))
            j.use(utc(2026, 6, 30, 23), "payments", 400)
        j.advance(utc(2026 + month // 12, month % 12 + 1, 1, 1))
    # Closed month -> (amount reported, fee): the invoice is issued when the month closes.
    closed = {1: ("105", "3.70"), 2: ("1105", "13.70"), 3: ("1355.40", "21.26"),
              4: ("1373.39", "22.08"), 5: ("100", "3.20"), 6: ("505", "13.70"),
              7: ("1105", "13.70"), 8: ("1355.40", "21.26"), 9: ("1373.39", "22.08"),
              10: ("100", "3.20"), 11: ("105", "3.70"), 12: ("1105", "13.70")}
    expected = []
    for month, (amount, fee) in closed.items():
        year, sequence = (2026, month) if month < 12 else (2027, 1)
        issued = utc(2026 + month // 12, month % 12 + 1, 1, 1)
        expected.append(Expected(inv(year, sequence), issued, [line(amount, fee)], fee, "0.00",
                                 fee))
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)
