"""Pricing model 3 (CRM) over a year: features per user-plan level, and add-ons priced per user
or per user of one solution (docs/catalog.md, "User plans" and "Add-ons"). Worked out by hand:
- Ann holds Sales Premium (75.00, with quote management), Bob Sales Essential (45.00), Cid
  Service Essential (40.00), all from January 1.
- The Dialer add-on is 10.00 per Sales user (2: 20.00), SSO 3.00 per member (3: 9.00): the
  January 1 invoices hold them for the whole month.
- Each month from February 1: 75.00 + 45.00 + 40.00 + 20.00 + 9.00 = 189.00.
- Only Ann has quote management: her level brings it; Bob's and Cid's do not.
"""

from __future__ import annotations

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import CatalogError
from tests.scenarios.test_invoices_year import US_BUSINESS, Journey, utc

TEXT = """
[catalog]
id = "crm"
currency = "USD"

[plans.crm]
name = "CRM"
price = "0"
user_plans = true

[user_plans.sales]
essential = "45.00"
premium = { price = "75.00", features = ["quote_management"] }

[user_plans.service]
essential = "40.00"

[addons.dialer]
name = "Dialer"
price = "10.00"
solution = "sales"

[addons.sso]
name = "SSO"
price = "3.00"
per_user = true
"""


def test_features_per_level_and_add_ons_per_user_over_a_year() -> None:
    j = Journey(Catalog.from_toml(TEXT), "crm-austin", "crm", utc(2026, 1, 1), US_BUSINESS)
    for member, solution, level in (("ann", "sales", "premium"), ("bob", "sales", "essential"),
                                    ("cid", "service", "essential")):
        j.command(utc(2026, 1, 1), "add_member", member=member)
        j.command(utc(2026, 1, 1), "assign_user_plan", member=member, solution=solution,
                  level=level)
    j.command(utc(2026, 1, 1), "add_addon", addon="dialer")
    j.command(utc(2026, 1, 1), "add_addon", addon="sso")
    assert j.sub.member_features("ann") == {"quote_management": "user_plan:sales-premium"}
    assert j.sub.member_features("bob") == {} and j.sub.member_features("cid") == {}
    from infra.api.entitlements import _granted_by  # what GET .../entitlements/F?member= asks
    assert _granted_by(j.sub, "quote_management", "ann") == "user_plan:sales-premium"
    assert _granted_by(j.sub, "quote_management", "bob") is None
    assert _granted_by(j.sub, "quote_management", None) is None
    j.advance(utc(2026, 12, 1, 1))
    january = [(line["description"], line["quantity"], line["amount"])
               for d in j.issued if d["issued_at"].startswith("2026-01-01") for line in d["lines"]]
    assert ("Dialer", "2", "20.00") in january and ("SSO", "3", "9.00") in january
    monthly = [(d["issued_at"][:10], d["total"]) for d in j.issued
               if d["issued_at"][:10] >= "2026-02-01"]
    assert monthly == [(f"2026-{m:02d}-01", "189.00") for m in range(2, 13)]
    february = next(d for d in j.issued if d["issued_at"].startswith("2026-02-01"))
    assert [(x["description"], x["quantity"], x["amount"]) for x in february["lines"]] == [
        ("Dialer", "2", "20.00"), ("SSO", "3", "9.00"),
        ("sales-premium for ann", "1", "75.00"), ("sales-essential for bob", "1", "45.00"),
        ("service-essential for cid", "1", "40.00")]


def test_an_add_on_per_user_of_an_unknown_solution_is_refused() -> None:
    with pytest.raises(CatalogError, match="no user plans of solution"):
        Catalog.from_toml(TEXT.replace('solution = "sales"', 'solution = "marketing"'))
    with pytest.raises(CatalogError, match="give one of them"):
        Catalog.from_toml(TEXT.replace('solution = "sales"', 'solution = "sales"\nper_user = true'))
