"""Charge models over a year (docs/catalog.md, "Charge models"), pure domain on a simulated
clock: one US subscription on a metered plan whose API calls are priced by volume (every unit at
the price of the tier the month's total reaches, plus that tier's flat fee), exports by the
started package of 100, and GPU minutes by graduated tiers with a flat fee on the first.

Each month's usage sits at or around a bound (0, exactly the allowance, one past it, a tier's
bound, one past it) and is closed an hour after the month ends (the late-usage grace); the
invoice issued then holds the next month's fee and the closed month's overage lines, written
out below by hand from the catalog:
- API calls, 1,000 included, then 0.002 up to 4,000 past it (fee 1.00), 0.0015 up to 19,000
  (fee 5.00), 0.001 beyond (fee 10.00), every unit at the tier the total past the allowance
  reaches: 5,001 calls in May are 4,001 past, all at 0.0015 = 6.0015 -> 6.00, plus 5.00;
- exports, 10 included, then 2.50 per started 100: 111 in May are 101 past, 2 packages;
- GPU minutes, none included, 0.10 up to 60 (fee 3.00 once reached), 0.08 beyond.
"""

from __future__ import annotations

from datetime import datetime

from domain.catalog.model import Catalog
from domain.contracts.commands import execute, parse_command
from tests.scenarios.test_invoices_year import (
    OUTSIDE_SCOPE,
    US_BUSINESS,
    Expected,
    Journey,
    assert_year,
    inv,
    utc,
)

METERED = Catalog.from_toml("""
[catalog]
id = "metered-api"
currency = "USD"

[plans.metered]
name = "Metered"
price = "20.00"

[plans.metered.allowances.api_calls]
included = 1000
limit = "overage"
charge_model = "volume"
tiers = [
  { up_to = 4000, unit_price = "0.002", flat_fee = "1.00" },
  { up_to = 19000, unit_price = "0.0015", flat_fee = "5.00" },
  { unit_price = "0.001", flat_fee = "10.00" },
]

[plans.metered.allowances.exports]
included = 10
limit = "overage"
charge_model = "package"
package = { size = 100, price = "2.50" }

[plans.metered.allowances.gpu_minutes]
limit = "overage"
charge_model = "graduated"
tiers = [
  { up_to = 60, unit_price = "0.10", flat_fee = "3.00" },
  { unit_price = "0.08" },
]
""")

# Month -> (API calls, exports, GPU minutes), all on the 20th.
USAGE = {1: (800, 5, 0), 2: (1000, 10, 60), 3: (1001, 11, 61), 4: (5000, 110, 200),
         5: (5001, 111, 30), 6: (20000, 1010, 0), 7: (20001, 0, 61), 8: (3999, 250, 120),
         9: (0, 0, 0), 10: (12345, 57, 59), 11: (19999, 109, 1000),
         12: (250000, 10000, 75)}

# (year, number, issued at, total, the overage lines after the month's fee)
INVOICES = [
    (2026, 1, '2026-01-01T00:00', '20.00', [
]),
    (2026, 2, '2026-02-01T01:00', '20.00', [
]),
    (2026, 3, '2026-03-01T01:00', '29.00', [
            ('gpu_minutes over allowance, units 0 to 60', '6.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00')]),
    (2026, 4, '2026-04-01T01:00', '32.58', [
            ('api_calls over allowance, all 1 units at the tier 0 to 4000', '0.00'),
            ('api_calls over allowance, flat fee of the tier 0 to 4000', '1.00'),
            ('exports over allowance: 1 units, 1 started packages of 100', '2.50'),
            ('gpu_minutes over allowance, units 0 to 60', '6.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00'),
            ('gpu_minutes over allowance, units 60 and above', '0.08')]),
    (2026, 5, '2026-05-01T01:00', '51.70', [
            ('api_calls over allowance, all 4000 units at the tier 0 to 4000', '8.00'),
            ('api_calls over allowance, flat fee of the tier 0 to 4000', '1.00'),
            ('exports over allowance: 100 units, 1 started packages of 100', '2.50'),
            ('gpu_minutes over allowance, units 0 to 60', '6.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00'),
            ('gpu_minutes over allowance, units 60 and above', '11.20')]),
    (2026, 6, '2026-06-01T01:00', '42.00', [
            ('api_calls over allowance, all 4001 units at the tier 4000 to 19000', '6.00'),
            ('api_calls over allowance, flat fee of the tier 4000 to 19000', '5.00'),
            ('exports over allowance: 101 units, 2 started packages of 100', '5.00'),
            ('gpu_minutes over allowance, units 0 to 60', '3.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00')]),
    (2026, 7, '2026-07-01T01:00', '78.50', [
            ('api_calls over allowance, all 19000 units at the tier 4000 to 19000', '28.50'),
            ('api_calls over allowance, flat fee of the tier 4000 to 19000', '5.00'),
            ('exports over allowance: 1000 units, 10 started packages of 100', '25.00')]),
    (2026, 8, '2026-08-01T01:00', '58.08', [
            ('api_calls over allowance, all 19001 units at the tier 19000 and above', '19.00'),
            ('api_calls over allowance, flat fee of the tier 19000 and above', '10.00'),
            ('gpu_minutes over allowance, units 0 to 60', '6.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00'),
            ('gpu_minutes over allowance, units 60 and above', '0.08')]),
    (2026, 9, '2026-09-01T01:00', '48.30', [
            ('api_calls over allowance, all 2999 units at the tier 0 to 4000', '6.00'),
            ('api_calls over allowance, flat fee of the tier 0 to 4000', '1.00'),
            ('exports over allowance: 240 units, 3 started packages of 100', '7.50'),
            ('gpu_minutes over allowance, units 0 to 60', '6.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00'),
            ('gpu_minutes over allowance, units 60 and above', '4.80')]),
    (2026, 10, '2026-10-01T01:00', '20.00', [
]),
    (2026, 11, '2026-11-01T01:00', '53.42', [
            ('api_calls over allowance, all 11345 units at the tier 4000 to 19000', '17.02'),
            ('api_calls over allowance, flat fee of the tier 4000 to 19000', '5.00'),
            ('exports over allowance: 47 units, 1 started packages of 100', '2.50'),
            ('gpu_minutes over allowance, units 0 to 60', '5.90'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00')]),
    (2026, 12, '2026-12-01T01:00', '140.20', [
            ('api_calls over allowance, all 18999 units at the tier 4000 to 19000', '28.50'),
            ('api_calls over allowance, flat fee of the tier 4000 to 19000', '5.00'),
            ('exports over allowance: 99 units, 1 started packages of 100', '2.50'),
            ('gpu_minutes over allowance, units 0 to 60', '6.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00'),
            ('gpu_minutes over allowance, units 60 and above', '75.20')]),
    (2027, 1, '2027-01-01T01:00', '539.20', [
            ('api_calls over allowance, all 249000 units at the tier 19000 and above', '249.00'),
            ('api_calls over allowance, flat fee of the tier 19000 and above', '10.00'),
            ('exports over allowance: 9990 units, 100 started packages of 100', '250.00'),
            ('gpu_minutes over allowance, units 0 to 60', '6.00'),
            ('gpu_minutes over allowance, flat fee of the tier 0 to 60', '3.00'),
            ('gpu_minutes over allowance, units 60 and above', '1.20')]),
]


def test_volume_package_and_graduated_with_flat_fees_over_a_year() -> None:
    j = Journey(METERED, "mt-austin", "metered", utc(2026, 1, 1), US_BUSINESS)
    for month, (calls, exports, gpu) in USAGE.items():
        for metric, quantity in (("api_calls", calls), ("exports", exports),
                                 ("gpu_minutes", gpu)):
            if quantity:
                j.use(utc(2026, month, 20), metric, quantity)
        j.advance(utc(2026 + month // 12, month % 12 + 1, 1, 1))
    expected = [Expected(inv(year, number), datetime.fromisoformat(at + ":00+00:00"),
                         [("Metered (month)", "20.00", "0.00"),
                          *((d, a, "0.00") for d, a in lines)], total, "0.00", total)
                for year, number, at, total, lines in INVOICES]
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)


def test_the_terms_copied_into_events_carry_the_charge_model() -> None:
    """A later catalog that prices API calls per unit changes nothing already subscribed:
    the subscription bills from the terms its events hold."""
    created, _ = execute(None, parse_command({
        "id": "c1", "type": "subscribe", "subscription": "mt-1", "plan": "metered",
        "customer": US_BUSINESS, "at": "2026-01-01T00:00:00+00:00"}), METERED)
    allowances = created.terms["allowances"]
    assert allowances["api_calls"]["charge_model"] == "volume"
    assert allowances["api_calls"]["tiers"][1] == {"up_to": "19000", "unit_price": "0.0015",
                                                  "flat_fee": "5.00"}
    assert allowances["exports"]["package"] == {"size": "100", "price": "2.50"}
    assert allowances["gpu_minutes"]["charge_model"] == "graduated"


MINIMUM = Catalog.from_toml("""
[catalog]
id = "committed"
currency = "USD"

[plans.committed]
name = "Committed"
price = "0"
prices = { month = "0", year = "0" }

[plans.committed.allowances.api_calls]
limit = "overage"
overage_unit_price = "0.01"
minimum_spend = "30.00"

[plans.scale]
name = "Scale"
rank = 1
price = "100.00"
upgrade_proration = "full"

[plans.scale.allowances.api_calls]
included = 100000
limit = "overage"
overage_unit_price = "0.005"
""")


def test_a_minimum_spend_trues_up_each_cycle_and_is_prorated_when_a_cycle_is_cut_short(
) -> None:
    """A minimum of 30.00 a month on API calls at 0.01: 1,000 calls (10.00) get a 20.00
    true-up, 5,000 (50.00) none, a month without calls the whole 30.00; an upgrade that starts
    a new cycle on April 16 closes April after 15 of its 30 days: half the minimum."""
    j = Journey(MINIMUM, "mn-1", "committed", utc(2026, 1, 1), US_BUSINESS)
    j.use(utc(2026, 1, 10), "api_calls", 1000)
    [january] = j.advance(utc(2026, 2, 1, 1))
    assert [(x["description"], x["amount"]) for x in january["lines"]] == [
        ("api_calls over allowance", "10.00"),
        ("api_calls: minimum spend of 30.00 per period, true-up", "20.00")]
    j.use(utc(2026, 2, 10), "api_calls", 5000)
    [february] = j.advance(utc(2026, 3, 1, 1))
    assert [x["amount"] for x in february["lines"]] == ["50.00"]
    # No usage in March: the whole minimum.
    [march] = j.advance(utc(2026, 4, 1, 1))
    assert [x["amount"] for x in march["lines"]] == ["30.00"]
    # April 1 to April 16 00:00 (15 of 30 days), then Scale from a new cycle: half the minimum.
    j.use(utc(2026, 4, 5), "api_calls", 500)
    j.command(utc(2026, 4, 16), "change_plan", plan="scale")
    closed = j.advance(utc(2026, 4, 16, 1))
    lines = [(x["description"], x["amount"]) for d in closed for x in d["lines"]]
    assert lines == [("api_calls over allowance", "5.00"),
                     ("api_calls: minimum spend of 30.00 per period (0.500000 of it), true-up",
                      "10.00")]
    yearly = MINIMUM.plans["committed"].terms("year")["allowances"]["api_calls"]
    assert yearly["minimum_spend"] == "360.00"
