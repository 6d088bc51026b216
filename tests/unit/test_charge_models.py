"""Charge models of usage past an allowance (docs/catalog.md, "Charge models"): per unit,
graduated tiers with flat fees, volume and package; what the catalog loader refuses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from domain.billing.charges import overage_lines, percentage_fee
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


@pytest.mark.parametrize(("body", "message"), [
    ('overage_unit_price = "0.01"\nminimum_spend = "30.001"', "at most two decimals"),
    ('overage_unit_price = "0.01"\nminimum_spend = 1.5', "never floats"),
])
def test_a_wrong_minimum_spend_is_refused(body: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
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


# --- percentage ------------------------------------------------------------------------------

PAYMENTS = """
[catalog]
id = "payments"
currency = "USD"
[plans.pay]
name = "Pay as you go"
price = "0"
[plans.pay.allowances.payments]
limit = "overage"
charge_model = "percentage"
percentage = { rate = "2.9", fixed_fee = "0.30", per_event_min = "0.50", per_event_max = "10" }
"""


def test_a_percentage_fee_is_the_rate_plus_the_fixed_fee_within_the_per_event_bounds() -> None:
    rule = Catalog.from_toml(PAYMENTS).plans["pay"].terms("month")["allowances"]["payments"][
        "percentage"]
    assert rule == {"rate": "2.9", "fixed_fee": "0.30", "per_event_min": "0.50",
                    "per_event_max": "10.00"}
    assert percentage_fee(rule, Decimal("100")) == Decimal("3.20")  # 2.90 + 0.30
    assert percentage_fee(rule, Decimal("5")) == Decimal("0.50")  # 0.445: raised to the min
    assert percentage_fee(rule, Decimal("1000")) == Decimal("10")  # 29.30: lowered to the max
    assert percentage_fee({"rate": "1.5"}, Decimal("0.01")) == Decimal("0.00015")  # exact


def test_a_cycles_percentage_line_is_the_sum_of_its_events_fees_rounded_once() -> None:
    terms = Catalog.from_toml(PAYMENTS).plans["pay"].terms("month")["allowances"]["payments"]
    [line] = overage_lines("payments", terms, Decimal("1105"), Decimal(0), START, END,
                           fees=Decimal("13.705"))
    assert (line["description"], line["quantity"], line["unit_price"], line["amount"]) == (
        "payments: 2.9 % of 1105, plus 0.30, at least 0.50, at most 10.00 per event", "1105",
        "0.029", "13.71")
    # Without the events (a what-if cost), the rate on the amount alone.
    assert overage_lines("payments", terms, Decimal("1105"), Decimal(0), START,
                         END)[0]["amount"] == "32.05"


@pytest.mark.parametrize(("change", "message"), [
    (("percentage = {", "percentage = { fee = \"1\", "), "unknown key(s) fee"),
    (('rate = "2.9"', 'rate = "0"'), "a percentage above 0 and at most 100"),
    (('rate = "2.9"', 'rate = "100.5"'), "a percentage above 0 and at most 100"),
    (('rate = "2.9", ', ""), "needs `rate`"),
    (('per_event_min = "0.50"', 'per_event_min = "20"'), "per_event_min is above per_event_max"),
    (("limit = ", "included = 100\nlimit = "), "a percentage allowance includes nothing"),
    (('charge_model = "percentage"\n', ""), 'a percentage needs charge_model = "percentage"'),
    (('fixed_fee = "0.30"', 'fixed_fee = "0.301"'), "at most two decimals"),
])
def test_a_wrong_percentage_is_refused(change: tuple[str, str], message: str) -> None:
    assert change[0] in PAYMENTS
    with pytest.raises(CatalogError, match=re.escape(message)):
        Catalog.from_toml(PAYMENTS.replace(*change))


def test_a_pack_of_a_percentage_metric_is_refused() -> None:
    with pytest.raises(CatalogError, match="priced by percentage on some plan"):
        Catalog.from_toml(PAYMENTS + '[packs.more]\nname = "More"\nmetric = "payments"\n'
                                     'quantity = 100\nprice = "5.00"\n')


def test_percentage_fees_survive_a_snapshot_and_start_from_none_in_an_older_one() -> None:
    from domain.app.billing_app import BillingApplication
    from domain.contracts.usage import UsageItem
    from domain.subscription.aggregate import Subscription

    app = BillingApplication(Catalog.from_toml(PAYMENTS),
                             env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.subscribe("pay-1", "acct", "pay", START)
    sub = app.get("pay-1")
    sub.record_usage([UsageItem("u1", "pay-1", "payments", Decimal(100), START)])
    assert sub.cycle_fees == {"payments": "3.20"}
    snapshot = Subscription.Snapshot.take(sub)
    restored = snapshot.mutate(None)
    assert restored.cycle_fees == {"payments": "3.20"}
    # A snapshot taken before percentage pricing existed has no fees: the next usage starts
    # them from nothing.
    older = Subscription.Snapshot(
        originator_id=snapshot.originator_id, originator_version=snapshot.originator_version,
        timestamp=snapshot.timestamp, topic=snapshot.topic,
        state={k: v for k, v in snapshot.state.items() if k != "cycle_fees"})
    again = older.mutate(None)
    assert not hasattr(again, "cycle_fees")
    again.record_usage([UsageItem("u2", "pay-1", "payments", Decimal(5), START)])
    assert again.cycle_fees == {"payments": "0.50"}
