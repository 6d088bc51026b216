"""Aggregations and filtered charges over a year (docs/catalog.md, "Aggregations", "Filtered
charges"), pure domain on a simulated clock: one US subscription on a cloud plan whose storage is
a recurring level (billed by the time each level held, carried from month to month), whose
users are counted once each per month whatever they do, whose concurrency is billed at its
peak, and whose AI tokens are priced by the model named in each event's properties.

Each month is closed an hour after it ends (the late-usage grace); the invoice issued then holds
the next month's fee (30.00) and the closed month's overage lines, worked out by hand below:
- storage_gb, 50 GB-months included, 0.10 per GB-month past it. January: 100 GB all month =
  100 -> 50 past = 5.00. February (28 days): 100 GB for 14 days, then 0 = 50 -> nothing.
  March and April: 0. May: 200 GB from May 1 = 200 -> 150 past = 15.00; June carries 200 ->
  15.00. July (31 days): 200 GB for 10 days then 20 GB = (2000 + 420) / 31 = 78.064516 ->
  28.064516 past = 2.8064516 -> 2.81. August on: 20 -> nothing.
- active_users, 3 included, 8.00 per distinct user past it: January 4 users (ann twice) ->
  8.00; April 6 -> 24.00; a user seen in March and April counts in both.
- peak_concurrency, 10 included, 2.00 per unit of the month's peak past it: January 12 ->
  4.00; October 25 (after 3, before 9) -> 30.00.
- tokens, 10,000 included, 0.001 past; tokens whose model is gpt-4 or gpt-4o count instead
  for tokens_frontier, 1,000 included, 0.03 past: January 12,000 other + 1,500 frontier ->
  2.00 and 15.00; December 3,000 frontier (gpt-4o) -> 60.00, 5,000 other -> nothing.
"""

from __future__ import annotations

from datetime import datetime

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

CLOUD = Catalog.from_toml("""
[catalog]
id = "cloud"
currency = "USD"

[plans.cloud]
name = "Cloud"
price = "30.00"

[plans.cloud.allowances.storage_gb]
included = 50
limit = "overage"
overage_unit_price = "0.10"
aggregation = "recurring"

[plans.cloud.allowances.active_users]
included = 3
limit = "overage"
overage_unit_price = "8.00"
aggregation = "unique"
unique_of = "user"

[plans.cloud.allowances.peak_concurrency]
included = 10
limit = "overage"
overage_unit_price = "2.00"
aggregation = "max"

[plans.cloud.allowances.tokens]
included = 10000
limit = "overage"
overage_unit_price = "0.001"

[plans.cloud.allowances.tokens_frontier]
of = "tokens"
where = { model = ["gpt-4", "gpt-4o"] }
included = 1000
limit = "overage"
overage_unit_price = "0.03"
""")

USERS = "active_users (distinct user) over allowance"
PEAK = "peak_concurrency (peak) over allowance"
STORAGE = "storage_gb (level by time held) over allowance"

# (year, number, issued at, total, the overage lines after the month's fee)
INVOICES = [
    (2026, 1, "2026-01-01T00:00", "30.00", []),
    (2026, 2, "2026-02-01T01:00", "64.00", [
        (USERS, "8.00"), (PEAK, "4.00"), (STORAGE, "5.00"),
        ("tokens over allowance", "2.00"), ("tokens_frontier over allowance", "15.00")]),
    (2026, 3, "2026-03-01T01:00", "30.00", []),
    (2026, 4, "2026-04-01T01:00", "30.00", []),
    (2026, 5, "2026-05-01T01:00", "54.00", [(USERS, "24.00")]),
    (2026, 6, "2026-06-01T01:00", "45.00", [(STORAGE, "15.00")]),
    (2026, 7, "2026-07-01T01:00", "45.00", [(STORAGE, "15.00")]),
    (2026, 8, "2026-08-01T01:00", "32.81", [(STORAGE, "2.81")]),
    (2026, 9, "2026-09-01T01:00", "30.00", []),
    (2026, 10, "2026-10-01T01:00", "30.00", []),
    (2026, 11, "2026-11-01T01:00", "60.00", [(PEAK, "30.00")]),
    (2026, 12, "2026-12-01T01:00", "30.00", []),
    (2027, 1, "2027-01-01T01:00", "90.00", [("tokens_frontier over allowance", "60.00")]),
]


def test_recurring_unique_peak_and_filtered_charges_over_a_year() -> None:
    j = Journey(CLOUD, "cl-austin", "cloud", utc(2026, 1, 1), US_BUSINESS)
    j.use(utc(2026, 1, 1), "storage_gb", 100)
    for day, user in ((2, "ann"), (3, "bob"), (4, "ann"), (5, "cid"), (6, "dan")):
        j.use(utc(2026, 1, day), "active_users", 1, {"user": user})
    j.use(utc(2026, 1, 7), "peak_concurrency", 8)
    j.use(utc(2026, 1, 8), "peak_concurrency", 12)
    j.use(utc(2026, 1, 9), "peak_concurrency", 5)
    j.use(utc(2026, 1, 10), "tokens", 12000, {"model": "mini"})
    j.use(utc(2026, 1, 11), "tokens", 1000, {"model": "gpt-4"})
    j.use(utc(2026, 1, 12), "tokens", 500, {"model": "gpt-4o", "team": "search"})
    j.advance(utc(2026, 2, 1, 1))
    j.use(utc(2026, 2, 15), "storage_gb", 0)
    j.use(utc(2026, 2, 16), "active_users", 1, {"user": "ann"})
    j.use(utc(2026, 2, 17), "peak_concurrency", 10)
    j.advance(utc(2026, 3, 1, 1))
    j.use(utc(2026, 3, 20), "active_users", 1, {"user": "eve"})
    j.advance(utc(2026, 4, 1, 1))
    for day, user in enumerate(("eve", "fay", "gus", "hal", "ivy", "jon"), start=2):
        j.use(utc(2026, 4, day), "active_users", 1, {"user": user})
    j.advance(utc(2026, 5, 1))
    j.use(utc(2026, 5, 1), "storage_gb", 200)
    j.advance(utc(2026, 7, 11))
    j.use(utc(2026, 7, 11), "storage_gb", 20)
    j.advance(utc(2026, 10, 2))
    for day, peak in ((2, 3), (3, 25), (4, 9)):
        j.use(utc(2026, 10, day), "peak_concurrency", peak)
    j.advance(utc(2026, 12, 2))
    j.use(utc(2026, 12, 2), "tokens", 3000, {"model": "gpt-4o"})
    j.use(utc(2026, 12, 3), "tokens", 5000)
    j.advance(utc(2027, 1, 1, 1))
    expected = [Expected(inv(year, number), datetime.fromisoformat(at + ":00+00:00"),
                         [("Cloud (month)", "30.00", "0.00"),
                          *((d, a, "0.00") for d, a in lines)], total, "0.00", total)
                for year, number, at, total, lines in INVOICES]
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)
