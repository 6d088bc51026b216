"""Progressive billing over a year (docs/catalog.md, "Progressive billing"), pure domain on a
simulated clock: a 20.00 plan whose API calls past the 1,000 included cost 0.01 each, invoiced
within the month as soon as the month's usage charges reach 10.00, then 50.00, then every 50.00
more; the close settles the rest. Worked out by hand:
- January 5: 1,500 calls, 500 past = 5.00: under 10.00, nothing yet.
- January 10: 700 more, 1,200 past = 12.00 >= 10.00: 12.00 invoiced that day.
- January 15: 3,000 more = 42.00: under the next threshold (50.00).
- January 20: 1,000 more = 52.00 >= 50.00: 40.00 more invoiced.
- January 25: 5,000 more = 102.00 >= 100.00 (50.00 past the last threshold): 50.00 more.
- January 28: 100 more = 103.00, under 150.00: the February 1 invoice settles 1.00 with the
  February fee (21.00). February's 500 calls stay within the allowance: the fee alone after.
"""

from __future__ import annotations

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import CatalogError
from tests.scenarios.test_invoices_year import (
    OUTSIDE_SCOPE,
    US_BUSINESS,
    Expected,
    Journey,
    assert_year,
    inv,
    utc,
)

TEXT = """
[catalog]
id = "progressive"
currency = "USD"

[plans.metered]
name = "Metered"
price = "20.00"
progressive_billing = { thresholds = ["10.00", "50.00"], every = "50.00" }

[plans.metered.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.01"
"""
FEE = ("Metered (month)", "20.00", "0.00")
SO_FAR = ("api_calls over allowance, billed progressively (usage charges reached {}): {} for "
          "the cycle so far")


def test_usage_charges_are_invoiced_as_they_reach_each_threshold() -> None:
    j = Journey(Catalog.from_toml(TEXT), "pr-austin", "metered", utc(2026, 1, 1), US_BUSINESS)
    for day, calls in ((5, 1500), (10, 700), (15, 3000), (20, 1000), (25, 5000), (28, 100)):
        j.use(utc(2026, 1, day), "api_calls", calls)
    j.use(utc(2026, 2, 10), "api_calls", 500)
    for month in range(1, 13):
        j.advance(utc(2026 + month // 12, month % 12 + 1, 1, 1))

    def within(number: int, day: int, reached: str, so_far: str, amount: str) -> Expected:
        return Expected(inv(2026, number), utc(2026, 1, day),
                        [(SO_FAR.format(reached, so_far), amount, "0.00")], amount, "0.00",
                        amount)

    def fee_only(year: int, number: int, month: int) -> Expected:
        return Expected(inv(year, number), utc(year, month, 1, 1), [FEE], "20.00", "0.00",
                        "20.00")

    expected = [
        Expected(inv(2026, 1), utc(2026, 1, 1), [FEE], "20.00", "0.00", "20.00"),
        within(2, 10, "10.00", "12.00", "12.00"),
        within(3, 20, "50.00", "52.00", "40.00"),
        within(4, 25, "100.00", "102.00", "50.00"),
        Expected(inv(2026, 5), utc(2026, 2, 1, 1), [FEE, (
            "api_calls over allowance, settled at close: 103.00 for the cycle, 102.00 billed "
            "during it", "1.00", "0.00")], "21.00", "0.00", "21.00"),
        *(fee_only(2026, n, n - 3) for n in range(6, 16)),
        fee_only(2027, 1, 1),
    ]
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)


@pytest.mark.parametrize(("value", "message"), [
    ('{ thresholds = [] }', "a list of amounts"),
    ('{ thresholds = ["50.00", "10.00"] }', "each above the one before"),
    ('{ thresholds = ["0"] }', "above 0"),
    ('{ thresholds = ["10.00"], every = "0" }', "above 0"),
    ('{ thresholds = ["10.00"], each = "5.00" }', "unknown key"),
])
def test_unclear_progressive_billing_is_refused(value: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(TEXT.replace('{ thresholds = ["10.00", "50.00"], every = "50.00" }',
                                       value))


def test_a_trial_bills_nothing_progressively() -> None:
    trial = Catalog.from_toml(TEXT.replace('price = "20.00"', 'price = "20.00"\ntrial_days = 14'))
    j = Journey(trial, "pr-trial", "metered", utc(2026, 1, 1), US_BUSINESS, trial=True)
    j.use(utc(2026, 1, 5), "api_calls", 100000)
    assert not [line for line in j.sub.uninvoiced if "progressively" in line["description"]]
    assert j.sub.status == "trialing"
