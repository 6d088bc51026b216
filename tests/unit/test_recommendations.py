"""Plan recommendations from usage, trial, template and integrations, with what-if costs."""

from __future__ import annotations

from pathlib import Path

from domain.catalog.model import Catalog
from projections.recommendations.model import recommend, update_inputs

CATALOG = Catalog.from_file(Path(__file__).resolve().parents[2] / "infra/catalogs/starter.toml")


def cycles(*conversations: int, documents: int = 10) -> list[dict[str, object]]:
    return [{"start": f"2026-0{i + 1}-01T00:00:00+00:00", "end": f"2026-0{i + 2}-01T00:00:00+00:00",
             "usage": {"conversations": str(c), "documents": str(documents)}, "plan": "basic"}
            for i, c in enumerate(conversations)]


def test_near_the_limit_in_3_of_the_last_4_months_recommends_the_next_plan() -> None:
    result = recommend({"plan": "basic", "cycles": cycles(20_000, 46_000, 47_500, 49_000)},
                       CATALOG)
    assert (result["recommended_plan"], result["kind"]) == ("scale", "near_limit")
    assert result["reason"] == ("you used 92 % or more of your conversations in 3 of the last "
                                "4 months")


def test_what_if_replays_the_last_cycle_under_each_plans_prices() -> None:
    result = recommend({"plan": "basic", "cycles": cycles(10_000, 10_000, 60_000)}, CATALOG)
    # basic: 190 + 10,000 over x 0.004 = 230.00; scale: 490; enterprise: 1890 (tokens unused)
    assert result["what_if"] == [
        {"plan": "basic", "cost": "230.00", "fits": False},
        {"plan": "scale", "cost": "490.00", "fits": True},
        {"plan": "enterprise", "cost": "1890.00", "fits": True},
    ]


def test_low_use_of_a_bigger_plan_recommends_savings() -> None:
    result = recommend({"plan": "scale", "cycles": cycles(30_000, 35_000, 41_000)}, CATALOG)
    assert (result["recommended_plan"], result["kind"]) == ("basic", "savings")
    assert "41 %" in result["reason"] and "300.00 EUR" in result["reason"]


def test_without_history_the_template_or_integrations_decide() -> None:
    result = recommend({"plan": "basic", "template": "ecommerce"}, CATALOG)
    assert (result["recommended_plan"], result["reason"]) == (
        "scale", "you chose the ecommerce template")
    result = recommend({"plan": "basic", "integrations": ["salesforce", "slack"]}, CATALOG)
    assert (result["recommended_plan"], result["reason"]) == (
        "enterprise", "you connected salesforce")


def test_trial_usage_is_projected_to_a_month() -> None:
    inputs: dict[str, object] = {}
    for message in (
        {"type": "Subscribed", "data": {"terms": {"plan_id": "basic", "period": "month"},
                                        "trial_end": "2026-01-15T00:00:00+00:00",
                                        "cycle_start": "2026-01-01T00:00:00+00:00"}},
        {"type": "CycleRolled", "data": {"terms": {"plan_id": "basic", "period": "month"},
                                         "changes": {"trial_ended": True},
                                         "closed_start": "2026-01-01T00:00:00+00:00",
                                         "closed_end": "2026-01-15T00:00:00+00:00"}},
        {"type": "UsagePeriodClosed", "data": {"period_start": "2026-01-01T00:00:00+00:00",
                                               "period_end": "2026-01-15T00:00:00+00:00",
                                               "usage": {"conversations": "31000"}}},
    ):
        assert update_inputs(inputs, message)  # type: ignore[arg-type]
    result = recommend(inputs, CATALOG)  # type: ignore[arg-type]
    assert (result["recommended_plan"], result["kind"]) == ("scale", "trial_usage")
    assert result["reason"] == ("your trial usage projects to 66429 conversations a month, "
                                "which fits Scale")


def test_what_if_costs_count_minimum_spends_and_commitments() -> None:
    from domain.catalog.model import Catalog
    from projections.recommendations.model import cycle_cost

    catalog = Catalog.from_toml("""
[catalog]
id = "minimums"
currency = "USD"
[plans.committed]
name = "Committed"
price = "30.00"
minimum_commitment = "100.00"
[plans.committed.allowances.api_calls]
included = 1000
limit = "overage"
overage_unit_price = "0.05"
[plans.metered]
name = "Metered"
rank = 1
price = "40.00"
[plans.metered.allowances.api_calls]
limit = "overage"
overage_unit_price = "0.01"
minimum_spend = "25.00"
""")
    # 2,000 calls: 50.00 of overage, 80.00 with the fee: trued up to 100.00
    assert cycle_cost(catalog.plan("committed"), "month", {"api_calls": "2000"}).cost == 100
    # 500 calls: 5.00 of usage, trued up to the 25.00 minimum spend; none: 25.00 still
    assert cycle_cost(catalog.plan("metered"), "month", {"api_calls": "500"}).cost == 65
    assert cycle_cost(catalog.plan("metered"), "month", {}).cost == 65


def test_plans_not_sold_to_the_customer_now_are_not_offered() -> None:
    from datetime import UTC, datetime

    catalog = Catalog.from_toml("""
[catalog]
id = "offers"
currency = "EUR"
[plans.basic]
name = "Basic"
price = "10.00"
[plans.nordic]
name = "Nordic"
rank = 1
price = "20.00"
countries = ["NO", "SE"]
[plans.winter]
name = "Winter deal"
rank = 1
price = "20.00"
available_from = "2026-12-01T00:00:00Z"
available_until = "2027-01-01T00:00:00Z"
[plans.enterprise]
name = "Enterprise"
rank = 2
price = "900.00"
available = false
""")
    inputs: dict = {}
    update_inputs(inputs, {"type": "Subscribed", "data": {
        "terms": {"plan_id": "basic", "period": "month"}, "cycle_start": "2026-11-01",
        "customer": {"country": "FR"}}})
    offered = {w["plan"] for w in recommend(
        {**inputs, "cycles": [{"usage": {}}]}, catalog,
        datetime(2026, 12, 10, tzinfo=UTC))["what_if"]}
    assert offered == {"basic", "winter"}
    update_inputs(inputs, {"type": "CustomerUpdated", "data": {"customer": {"country": "NO"}}})
    offered = {w["plan"] for w in recommend(
        {**inputs, "cycles": [{"usage": {}}]}, catalog,
        datetime(2027, 2, 1, tzinfo=UTC))["what_if"]}
    assert offered == {"basic", "nordic"}
