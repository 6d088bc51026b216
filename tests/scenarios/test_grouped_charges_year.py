"""Charges grouped by an event property (docs/catalog.md, "Grouped charges") over a year, pure
domain on a simulated clock: an agency's plan prices tokens per workspace, each workspace with
its own 1,000 included and 0.01 a token past them. Worked out by hand:
- January: ws-a 1,500 tokens (500 past: 5.00), ws-b 800 then 300 more timed January 31 23:30
  that arrive in the grace hour (1,100: 100 past, 1.00), 1,200 with no workspace (200 past:
  2.00): the February 1 invoice is 20.00 + 2.00 + 5.00 + 1.00 = 28.00, a line per group.
- February: ws-a 900 and ws-c 1,000, all within their own allowances although 1,900 together
  pass one allowance: the fee alone.
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
id = "agency"
currency = "USD"

[plans.agency]
name = "Agency"
price = "20.00"

[plans.agency.allowances.tokens]
included = 1000
limit = "overage"
overage_unit_price = "0.01"
group_by = "workspace"
"""
FEE = ("Agency (month)", "20.00", "0.00")


def test_each_workspace_is_priced_apart_with_its_own_allowance() -> None:
    j = Journey(Catalog.from_toml(TEXT), "gr-austin", "agency", utc(2026, 1, 1), US_BUSINESS)
    for day, workspace, tokens in ((5, "ws-a", 1500), (6, "ws-b", 800), (7, None, 1200)):
        j.use(utc(2026, 1, day), "tokens", tokens, workspace=workspace)
    j.advance(utc(2026, 2, 1, 0, 30))
    j.use(utc(2026, 1, 31, 23, 30), "tokens", 300, workspace="ws-b")  # late, in the grace
    j.use(utc(2026, 2, 10), "tokens", 900, workspace="ws-a")
    j.use(utc(2026, 2, 11), "tokens", 1000, workspace="ws-c")
    for month in range(1, 13):
        j.advance(utc(2026 + month // 12, month % 12 + 1, 1, 1))

    def issued(year: int, number: int, month: int, lines: list[tuple[str, str, str]],
               total: str) -> Expected:
        return Expected(inv(year, number), utc(year, month, 1, 0 if number == 1 and
                                                year == 2026 else 1), [FEE, *lines], total,
                        "0.00", total)

    expected = [
        issued(2026, 1, 1, [], "20.00"),
        issued(2026, 2, 2, [("tokens (workspace (none)) over allowance", "2.00", "0.00"),
                            ("tokens (workspace ws-a) over allowance", "5.00", "0.00"),
                            ("tokens (workspace ws-b) over allowance", "1.00", "0.00")],
               "28.00"),
        *(issued(2026, n, n, [], "20.00") for n in range(3, 13)),
        issued(2027, 1, 1, [], "20.00"),
    ]
    assert_year(j, expected, OUTSIDE_SCOPE, US_BUSINESS)


@pytest.mark.parametrize(("change", "message"), [
    (('group_by = "workspace"', 'group_by = "workspace"\naggregation = "max"'), "a sum"),
    (('limit = "overage"\noverage_unit_price = "0.01"\n', ''), "limit"),
    (('group_by = "workspace"', 'group_by = "bad name"'), "property name"),
])
def test_unclear_groups_are_refused(change: tuple[str, str], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(TEXT.replace(*change))
