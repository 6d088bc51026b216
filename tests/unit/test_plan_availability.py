"""Plan availability by country and by campaign window (pricing model 2): new subscriptions and
plan changes are refused outside them, with their own codes; subscriptions already on the plan
keep renewing on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.catalog.model import Catalog
from domain.shared.errors import CatalogError, CommandRefused
from domain.subscription.aggregate import Subscription

CATALOG = """
[catalog]
id = "campaigns"
currency = "EUR"

[plans.basic]
name = "Basic"
price = "10.00"

[plans.black_friday]
name = "Black Friday Pro"
rank = 1
price = "15.00"
countries = ["DE", "AT"]
available_from = "2026-11-27T00:00:00+01:00"
available_until = "2026-12-01T00:00:00Z"
"""
GERMAN = {"name": "Kunde GmbH", "country": "de"}  # normalized to DE
FRENCH = {"name": "Client SARL", "country": "FR"}


def at(day: int, hour: int = 12, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def subscribe(plan: str, when: datetime, customer: dict[str, Any] | None) -> Subscription:
    return Subscription.subscribe("s-1", "acct", plan, Catalog.from_toml(CATALOG), when,
                                  customer=customer)


def refusal(plan: str, when: datetime, customer: dict[str, Any] | None) -> str:
    with pytest.raises(CommandRefused) as refused:
        subscribe(plan, when, customer)
    return refused.value.code


def test_a_campaign_plan_is_sold_in_its_countries_during_its_window_only() -> None:
    assert subscribe("black_friday", at(27), GERMAN).plan_id == "black_friday"
    assert refusal("black_friday", at(27), FRENCH) == "plan_not_offered_in_country"
    assert refusal("black_friday", at(27), None) == "plan_not_offered_in_country"
    assert refusal("black_friday", at(26, 22), GERMAN) == "plan_not_offered_now"  # 23:00 +01
    assert subscribe("black_friday", at(26, 23), GERMAN).plan_id == "black_friday"  # 00:00 +01
    assert refusal("black_friday", at(1, 0, month=12), GERMAN) == "plan_not_offered_now"
    assert subscribe("basic", at(1, 0, month=12), FRENCH).plan_id == "basic"


def test_a_plan_change_is_refused_outside_them_and_the_plan_keeps_renewing() -> None:
    catalog = Catalog.from_toml(CATALOG)
    french = subscribe("basic", at(20), FRENCH)
    with pytest.raises(CommandRefused) as refused:
        french.change_plan("black_friday", at(28), catalog)
    assert refused.value.code == "plan_not_offered_in_country"
    german = subscribe("black_friday", at(28), GERMAN)
    german.advance_to(at(28, month=12), catalog)  # past the window: renewed on the plan
    assert german.plan_id == "black_friday" and german.cycle_start == at(28, month=12)


@pytest.mark.parametrize(("change", "message"), [
    (('countries = ["DE", "AT"]', 'countries = ["de"]'), "ISO 3166 two-letter codes"),
    (('countries = ["DE", "AT"]', 'countries = "DE"'), "countries"),
    (('"2026-11-27T00:00:00+01:00"', '"2026-11-27"'), "a quoted RFC 3339 time"),
    (('"2026-11-27T00:00:00+01:00"', "2026-11-27T00:00:00+01:00"), "a quoted RFC 3339 time"),
    (('"2026-11-27T00:00:00+01:00"', '"2026-12-02T00:00:00Z"'),
     "available_until is not after available_from"),
])
def test_a_wrong_country_list_or_window_is_refused(change: tuple[str, str],
                                                   message: str) -> None:
    assert change[0] in CATALOG
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(CATALOG.replace(*change))
