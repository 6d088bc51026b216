"""Per-subscription price overrides (docs/domain.md, "Custom prices") over a year, pure domain
on a simulated clock: an Enterprise plan that is not for sale (`available = false`, "contact us
for custom pricing") is sold to one customer on a deal: 750.00 a month instead of 1,000.00, two
million API calls included instead of one, 0.0004 past them instead of 0.001. Worked out by
hand:
- January to April: 750.00 each month. March's 2,500,000 calls are 500,000 past the deal's
  allowance: 200.00 at 0.0004, on the April 1 invoice (950.00).
- A new catalog version raises Enterprise to 1,200.00 from May: the deal stands (750.00).
- On May 10 the deal is renegotiated to 800.00 from the next period: June 1 on, 800.00.
- On September 15 the customer moves to Scale, a catalog plan: at once (an upgrade by rank), the
  deal does not follow it.
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, utc

TEXT = """
[catalog]
id = "enterprise"
version = "1"
currency = "USD"

[plans.enterprise]
name = "Enterprise"
rank = 1
price = "1000.00"
available = false

[plans.enterprise.allowances.api_calls]
included = 1000000
limit = "overage"
overage_unit_price = "0.001"

[plans.scale]
name = "Scale"
rank = 2
price = "2000.00"

[plans.scale.allowances.api_calls]
included = 5000000
limit = "overage"
overage_unit_price = "0.001"
"""
DEAL = {"price": "750.00", "allowances": {"api_calls": {"included": 2000000,
                                                         "overage_unit_price": "0.0004"}}}


def fees(j: Journey) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(d["issued_at"][:10], [(x["description"], x["amount"]) for x in d["lines"]])
            for d in j.issued]


def test_a_deal_on_a_plan_not_for_sale_renews_until_renegotiated_or_left() -> None:
    with pytest.raises(BillingError) as refused:
        Journey(Catalog.from_toml(TEXT), "cp-refused", "enterprise", utc(2026, 1, 1),
                US_BUSINESS)
    assert refused.value.code == "plan_unavailable"
    j = Journey(Catalog.from_toml(TEXT), "cp-austin", "enterprise", utc(2026, 1, 1),
                US_BUSINESS, overrides=DEAL)
    j.use(utc(2026, 3, 10), "api_calls", 2500000)
    j.advance(utc(2026, 4, 20))
    j.catalog = Catalog.from_toml(TEXT.replace('version = "1"', 'version = "2"').replace(
        'price = "1000.00"', 'price = "1200.00"'))
    j.command(utc(2026, 5, 10), "override_prices", overrides={"price": "800.00"})
    j.advance(utc(2026, 9, 1, 1))
    j.command(utc(2026, 9, 15), "change_plan", plan="scale")
    j.advance(utc(2026, 10, 1, 1))
    enterprise = lambda price: [("Enterprise (month)", price)]  # noqa: E731
    assert fees(j) == [
        ("2026-01-01", enterprise("750.00")), ("2026-02-01", enterprise("750.00")),
        ("2026-03-01", enterprise("750.00")),
        ("2026-04-01", [*enterprise("750.00"), ("api_calls over allowance", "200.00")]),
        ("2026-05-01", enterprise("750.00")),
        ("2026-06-01", enterprise("800.00")), ("2026-07-01", enterprise("800.00")),
        ("2026-08-01", enterprise("800.00")), ("2026-09-01", enterprise("800.00")),
        ("2026-09-15", [("Unused time on Enterprise", "-426.67"),
                        ("Remaining time on Scale", "1066.67")]),
        ("2026-10-01", [("Scale (month)", "2000.00")]),
    ]
    assert "overrides" not in j.sub.terms


@pytest.mark.parametrize(("overrides", "message"), [
    ({"price": "-1"}, "an amount"),
    ({"price": "10.001"}, "two decimals"),
    ({"price": "1e3"}, "plain decimal"),
    ({"discount": "10"}, "an object of"),
    ({"allowances": {"tokens": {"included": 5}}}, "no metric 'tokens'"),
    ({"extra_seat_price": "5.00"}, "no seats"),
    ({"allowances": {"api_calls": {"limit": "hard"}}}, "an object of"),
])
def test_unclear_overrides_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(BillingError, match=message) as refused:
        Journey(Catalog.from_toml(TEXT), "cp-bad", "enterprise", utc(2026, 1, 1), US_BUSINESS,
                overrides=overrides)
    assert refused.value.code == "invalid_override"
