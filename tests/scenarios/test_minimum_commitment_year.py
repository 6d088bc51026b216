"""A plan's minimum commitment over a year (docs/catalog.md, "Minimum commitment"), pure domain
on a simulated clock: a 30.00 plan committing to 100.00 a month, fee and usage together; API
calls past the 1,000 included cost 0.05. Worked out by hand, each month closing an hour after
it ends with the next month's fee:
- January, no charge past the fee: 30.00 spent, true-up 70.00 (the Feb 1 invoice: 100.00).
- February, 2,000 calls: 50.00 of usage, 80.00 spent, true-up 20.00 (Mar 1: 100.00).
- March, 3,000 calls: 100.00 of usage, 130.00 spent, no true-up (Apr 1: 130.00).
- April on, no usage: a 70.00 true-up each month.
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

COMMITTED = Catalog.from_toml("""
[catalog]
id = "committed"
currency = "USD"

[plans.growth]
name = "Growth"
price = "30.00"
minimum_commitment = "100.00"

[plans.growth.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.05"
""")
FEE = ("Growth (month)", "30.00", "0.00")
TRUE_UP = "Minimum commitment of 100.00 per period, true-up"
USAGE = "api_calls over allowance"


def test_the_fee_and_usage_are_trued_up_to_the_monthly_commitment() -> None:
    j = Journey(COMMITTED, "mc-austin", "growth", utc(2026, 1, 1), US_BUSINESS)
    j.use(utc(2026, 1, 10), "api_calls", 1000)
    j.use(utc(2026, 2, 10), "api_calls", 2000)
    j.use(utc(2026, 3, 10), "api_calls", 3000)
    for month in range(1, 13):
        j.advance(utc(2026 + month // 12, month % 12 + 1, 1, 1))

    def closing(year: int, number: int, month: int, lines: list[tuple[str, str, str]],
                total: str) -> Expected:
        return Expected(inv(year, number), utc(year, month, 1, 1), [FEE, *lines], total,
                        "0.00", total)

    expected = [
        Expected(inv(2026, 1), utc(2026, 1, 1), [FEE], "30.00", "0.00", "30.00"),
        closing(2026, 2, 2, [(TRUE_UP, "70.00", "0.00")], "100.00"),
        closing(2026, 3, 3, [(USAGE, "50.00", "0.00"), (TRUE_UP, "20.00", "0.00")], "100.00"),
        closing(2026, 4, 4, [(USAGE, "100.00", "0.00")], "130.00"),
        *(closing(2026, n, n, [(TRUE_UP, "70.00", "0.00")], "100.00") for n in range(5, 13)),
        closing(2027, 1, 1, [(TRUE_UP, "70.00", "0.00")], "100.00"),
    ]
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)
