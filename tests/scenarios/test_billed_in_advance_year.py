"""Usage billed on use (`billed = "in_advance"`, docs/catalog.md) over a year, pure domain on a
simulated clock: a pay-as-you-go plan whose API calls past the 1,000 included are charged as
they are recorded, in graduated tiers (0.01 for the first 1,000 past the allowance, 0.005
beyond), each charge invoiced at once; what late usage adds is settled when the month closes.

Worked out by hand:
- January 12: 800 + 700 calls = 500 past: 5.00, invoiced that day.
- January 20: 1,000 more = 1,500 past: 10.00 + 2.50 = 12.50 so far, 7.50 more, invoiced.
- One call timed January 31 23:30 arrives after the month rolled, inside the grace hour:
  1,501 past = 10.00 + 2.505 -> 2.51 = 12.51; 12.50 billed on use, so the February 1 invoice
  holds the February fee and a 0.01 settlement.
- February 5: 3,000 calls = 2,000 past: 10.00 + 5.00 = 15.00, invoiced that day; the March 1
  invoice has nothing more to settle.
- A trial month would bill nothing; later months have no usage: the fee alone.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

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

PAYG_TEXT = """
[catalog]
id = "payg"
currency = "USD"

[plans.payg]
name = "Pay as you go"
price = "10.00"

[plans.payg.allowances.api_calls]
included = 1000
limit = "overage"
billed = "in_advance"
charge_model = "graduated"
tiers = [{ up_to = 1000, unit_price = "0.01" }, { unit_price = "0.005" }]
"""
PAYG = Catalog.from_toml(PAYG_TEXT)
FEE = ("Pay as you go (month)", "10.00", "0.00")
ON_USE = "api_calls over allowance, billed on use: {} for the cycle so far"


def test_usage_billed_on_use_is_invoiced_as_it_comes_and_late_usage_is_settled() -> None:
    j = Journey(PAYG, "pg-austin", "payg", utc(2026, 1, 1), US_BUSINESS)
    j.use(utc(2026, 1, 10), "api_calls", 800)
    j.use(utc(2026, 1, 12), "api_calls", 700)
    j.use(utc(2026, 1, 20), "api_calls", 1000)
    j.advance(utc(2026, 2, 1, 0, 30))
    j.use(utc(2026, 1, 31, 23, 30), "api_calls", 1)  # late, inside the grace hour
    j.advance(utc(2026, 2, 1, 1))
    j.use(utc(2026, 2, 5), "api_calls", 3000)
    for month in range(2, 13):
        j.advance(utc(2026 + month // 12, month % 12 + 1, 1, 1))

    def fee_only(number: int, month: int) -> Expected:
        year = 2026 + (month - 1) // 12
        return Expected(inv(year, number), utc(year, (month - 1) % 12 + 1, 1, 1), [FEE],
                        "10.00", "0.00", "10.00")

    def on_use(number: int, at: datetime, so_far: str, amount: str) -> Expected:
        return Expected(inv(2026, number), at, [(ON_USE.format(so_far), amount, "0.00")],
                        amount, "0.00", amount)

    expected = [
        Expected(inv(2026, 1), utc(2026, 1, 1), [FEE], "10.00", "0.00", "10.00"),
        on_use(2, utc(2026, 1, 12), "5.00", "5.00"),
        on_use(3, utc(2026, 1, 20), "12.50", "7.50"),
        Expected(inv(2026, 4), utc(2026, 2, 1, 1), [FEE, (
            "api_calls over allowance, settled at close: 12.51 for the cycle, 12.50 billed "
            "during it", "0.01", "0.00")], "10.01", "0.00", "10.01"),
        on_use(5, utc(2026, 2, 5), "15.00", "15.00"),
        *(fee_only(number, month) for number, month in zip(range(6, 16), range(3, 13),
                                                             strict=True)),
        fee_only(1, 13),
    ]
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)
    assert j.sub.used == {}  # nothing used in December


def test_a_trial_bills_nothing_on_use() -> None:
    trial = Catalog.from_toml(PAYG_TEXT.replace('price = "10.00"',
                                                'price = "10.00"\ntrial_days = 14'))
    j = Journey(trial, "pg-trial", "payg", utc(2026, 1, 1), US_BUSINESS)
    j.use(utc(2026, 1, 5), "api_calls", 5000)
    assert not [line for line in j.sub.uninvoiced if "billed on use" in line["description"]]
    assert j.sub.used["api_calls"] == Decimal(5000)


HARD = """
[catalog]
id = "hard"
currency = "USD"
[plans.p]
name = "P"
price = "1.00"
[plans.p.allowances.api_calls]
included = 10
billed = "in_advance"
"""


@pytest.mark.parametrize(("text", "message"), [
    (HARD, "needs limit = \"overage\""),
    (PAYG_TEXT.replace('billed = "in_advance"', 'billed = "in_advance"\naggregation = '
                       '"recurring"'), "only grows"),
    (PAYG_TEXT.replace('billed = "in_advance"', 'billed = "upfront"'), "billed must be one of"),
])
def test_billed_in_advance_needs_an_overage_on_an_amount_that_only_grows(
        text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(text)
