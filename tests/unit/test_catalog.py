"""The plan catalog (domain/catalog/model.py) and exact money (domain/shared/money.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import BillingError, CatalogError, UnknownPlan
from domain.shared.money import Money

STARTER = Path(__file__).resolve().parents[2] / "infra" / "catalogs" / "starter.toml"

MINIMAL = """
[catalog]
id = "mini"
currency = "EUR"

[plans.solo]
name = "Solo"
price = {price}
periods = ["month", "quarter"]
allowances.tokens = {{ included = {included}, limit = "{limit}" }}
"""


def mini(price: str = '"10.00"', included: str = "100", limit: str = "hard") -> str:
    return MINIMAL.format(price=price, included=included, limit=limit)


@pytest.fixture(scope="module")
def starter() -> Catalog:
    return Catalog.from_file(STARTER)


def test_starter_catalog_loads(starter: Catalog) -> None:
    assert starter.id == "starter"
    assert starter.currency == "EUR"
    assert sorted(starter.plans) == ["basic", "enterprise", "scale"]
    basic = starter.plan("basic")
    assert basic.price == Money(Decimal("190.00"), "EUR")
    assert set(basic.prices) == {"month"}
    assert [p.rank for p in sorted(starter.plans.values(), key=lambda p: p.rank)] == [1, 2, 3]


def test_starter_allowances_are_decimal(starter: Catalog) -> None:
    for plan in starter.plans.values():
        assert set(plan.allowances) == {"conversations", "documents", "tokens"}
        for allowance in plan.allowances.values():
            assert isinstance(allowance.included, Decimal)
    conversations = starter.plan("basic").allowances["conversations"]
    assert conversations.included == Decimal(50000)
    assert conversations.limit == "overage"
    assert conversations.overage_unit_price == Decimal("0.004")
    assert starter.plan("scale").allowances["documents"].as_dict() == {
        "included": "10000", "limit": "hard"}


def test_inline_catalog_reads_quarter_period() -> None:
    plan = Catalog.from_toml(mini()).plan("solo")
    assert plan.prices == {"month": Decimal("10.00"), "quarter": Decimal("30.00")}
    assert plan.allowances["tokens"].included == Decimal(100)


@pytest.mark.parametrize(
    "text", [mini(price="10.5"), mini(included="100.0"), mini(price="1e2")],
)
def test_float_amounts_are_refused(text: str) -> None:
    with pytest.raises(CatalogError) as info:
        Catalog.from_toml(text)
    assert info.value.code == "invalid_catalog"


def test_unknown_limit_kind_is_refused() -> None:
    with pytest.raises(CatalogError, match="limit") as info:
        Catalog.from_toml(mini(limit="soft"))
    assert info.value.code == "invalid_catalog"


@pytest.mark.parametrize("text", ["not = [valid", mini(included='"-1"'), mini(price='"abc"')])
def test_broken_catalogs_are_refused(text: str) -> None:
    with pytest.raises(CatalogError):
        Catalog.from_toml(text)


def test_unknown_plan_lookup(starter: Catalog) -> None:
    with pytest.raises(UnknownPlan) as info:
        starter.plan("platinum")
    assert info.value.code == "unknown_plan"
    assert isinstance(info.value, BillingError)


def test_money_refuses_float() -> None:
    with pytest.raises(TypeError):
        Money.of(0.1, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(0.1, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("0.005", "0.01"), ("0.0049", "0.00"), ("2.345", "2.35"), ("-0.005", "-0.01")],
)
def test_money_rounds_half_up(amount: str, expected: str) -> None:
    rounded = Money.of(amount, "EUR").rounded()
    assert rounded.amount == Decimal(expected)
    assert str(rounded.amount) == expected


def test_money_rounds_to_currency_minor_unit() -> None:
    assert Money.of("1234.5", "JPY").rounded().amount == Decimal(1235)
    assert Money.of("0.005", "EUR").minor_units == 1


def test_money_arithmetic_is_exact() -> None:
    total = Money.of("0.1", "EUR") + Money.of("0.2", "EUR")
    assert total == Money.of("0.3", "EUR")
    assert Money.of("1", "EUR") - Money.of("0.25", "EUR") == Money.of("0.75", "EUR")


def test_mixing_currencies_raises() -> None:
    with pytest.raises(ValueError, match="currency mismatch"):
        Money.of("1", "EUR") + Money.of("1", "USD")
    with pytest.raises(ValueError, match="currency mismatch"):
        Money.of("1", "EUR") - Money.of("1", "USD")
