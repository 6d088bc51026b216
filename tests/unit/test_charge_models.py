"""Charge models of usage past an allowance (docs/catalog.md, "Charge models"): per unit,
graduated tiers with flat fees, volume and package; what the catalog loader refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.billing.charges import overage_lines
from domain.catalog.model import Catalog
from domain.shared.errors import CatalogError

START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
TIERS = """tiers = [
  { up_to = 10000, unit_price = "0.004", flat_fee = "5.00" },
  { unit_price = "0.003", flat_fee = "20" },
]"""


def allowance(body: str, period: str = "month") -> dict[str, Any]:
    catalog = Catalog.from_toml(f"""
[catalog]
id = "models"
currency = "EUR"
[plans.p]
name = "P"
price = "10.00"
prices = {{ month = "10.00", year = "100.00" }}
[plans.p.allowances.conversations]
included = 50000
limit = "overage"
{body}
""")
    terms: dict[str, Any] = catalog.plans["p"].terms(period)["allowances"]["conversations"]
    return terms


def lines(terms: dict[str, Any], used: int, packs: int = 0) -> list[tuple[str, str, str]]:
    return [(line["description"], line["quantity"], line["amount"])
            for line in overage_lines("conversations", terms, Decimal(used), Decimal(packs),
                                      START, END)]


def test_graduated_tiers_charge_each_tiers_units_and_its_flat_fee_once_reached() -> None:
    terms = allowance(f'charge_model = "graduated"\n{TIERS}')
    assert lines(terms, 50000) == []
    assert lines(terms, 55000) == [
        ("conversations over allowance, units 0 to 10000", "5000", "20.00"),
        ("conversations over allowance, flat fee of the tier 0 to 10000", "1", "5.00")]
    assert lines(terms, 62315) == [
        ("conversations over allowance, units 0 to 10000", "10000", "40.00"),
        ("conversations over allowance, flat fee of the tier 0 to 10000", "1", "5.00"),
        ("conversations over allowance, units 10000 and above", "2315", "6.95"),
        ("conversations over allowance, flat fee of the tier 10000 and above", "1", "20.00")]
    # Exactly at a bound: the next tier is not reached, its fee not charged.
    assert [x[2] for x in lines(terms, 60000)] == ["40.00", "5.00"]


def test_volume_prices_every_unit_at_the_tier_the_total_reaches() -> None:
    terms = allowance(f'charge_model = "volume"\n{TIERS}')
    assert lines(terms, 60000) == [
        ("conversations over allowance, all 10000 units at the tier 0 to 10000", "10000",
         "40.00"),
        ("conversations over allowance, flat fee of the tier 0 to 10000", "1", "5.00")]
    assert lines(terms, 62315) == [
        ("conversations over allowance, all 12315 units at the tier 10000 and above", "12315",
         "36.95"),
        ("conversations over allowance, flat fee of the tier 10000 and above", "1", "20.00")]


def test_volume_bounds_scale_with_the_period_like_graduated_ones() -> None:
    terms = allowance(f'charge_model = "volume"\n{TIERS}', period="year")
    assert terms["included"] == "600000" and terms["tiers"][0]["up_to"] == "120000"
    assert lines(terms, 700000)[0][0] == \
        "conversations over allowance, all 100000 units at the tier 0 to 120000"


def test_packages_are_charged_per_started_package_after_the_allowance_and_packs() -> None:
    terms = allowance('charge_model = "package"\npackage = { size = 1000, price = "5.00" }')
    assert lines(terms, 50000) == []
    assert lines(terms, 50001) == [
        ("conversations over allowance: 1 units, 1 started packages of 1000", "1", "5.00")]
    assert lines(terms, 53000)[0][1:] == ("3", "15.00")
    assert lines(terms, 53001)[0][1:] == ("4", "20.00")
    assert lines(terms, 53001, packs=3001) == []  # bought packs come first
    # The package size is per package, not per month: a year keeps packages of 1000.
    assert allowance('charge_model = "package"\npackage = { size = 1000, price = "5" }',
                     "year")["package"] == {"size": "1000", "price": "5.00"}


def test_terms_without_a_charge_model_bill_as_before() -> None:
    flat = allowance('overage_unit_price = "0.00001"')
    tiered = allowance('tiers = [{ up_to = 10000, unit_price = "0.004" }, '
                       '{ unit_price = "0.003" }]')
    assert "charge_model" not in flat and "charge_model" not in tiered
    assert lines(flat, 50100) == [("conversations over allowance", "100", "0.00")]
    assert [x[2] for x in lines(tiered, 62315)] == ["40.00", "6.95"]


@pytest.mark.parametrize(("body", "message"), [
    ('charge_model = "stairs"\noverage_unit_price = "1"', "charge_model must be one of"),
    ('charge_model = "volume"\noverage_unit_price = "1"', 'charge_model = "volume" needs `tiers`'),
    (f'charge_model = "volume"\noverage_unit_price = "1"\n{TIERS}',
     'charge_model = "volume" takes no overage_unit_price'),
    ('charge_model = "package"\noverage_unit_price = "1"', "needs `package`"),
    ('charge_model = "package"\npackage = { size = 0, price = "5" }', "must be above 0"),
    ('charge_model = "package"\npackage = { size = 10 }', "needs `size` and `price`"),
    ('charge_model = "package"\npackage = { size = 10, price = "5", unit = "x" }',
     "unknown key(s) unit"),
    ('charge_model = "package"\npackage = { size = 10, price = "5.001" }',
     "at most two decimals"),
    ('package = { size = 10, price = "5" }', 'a package needs charge_model = "package"'),
    (TIERS, "flat fees per tier need charge_model"),
    ('charge_model = "per_unit"\n' + TIERS.replace(', flat_fee = "5.00"', "").replace(
        ', flat_fee = "20"', ""), 'charge_model = "per_unit" needs `overage_unit_price`'),
])
def test_a_charge_model_without_its_keys_or_with_anothers_is_refused(body: str,
                                                                     message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        allowance(body)


def test_a_hard_limit_takes_no_charge_model() -> None:
    assert allowance('charge_model = "volume"\n' + TIERS)["charge_model"] == "volume"
    with pytest.raises(CatalogError, match="a hard limit is never billed past"):
        Catalog.from_toml("""
[catalog]
id = "m"
currency = "EUR"
[plans.p]
name = "P"
price = "1.00"
[plans.p.allowances.x]
included = 1
limit = "hard"
charge_model = "per_unit"
""")
