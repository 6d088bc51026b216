"""Aggregations beside sum (count, max, unique, latest, recurring) and charges filtered by event
properties (docs/catalog.md, "Aggregations" and "Filtered charges"): what each measures, what
it refuses with which code, what a cycle bills, and that the quota read model, fed the same
events, holds the same amounts as the aggregate."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from consumers.wire import event_message
from domain.app.billing_app import BillingApplication
from domain.app.record_usage import prepare_usage_batch
from domain.catalog.model import Catalog
from domain.catalog.versions import check_measured_alike
from domain.contracts.usage import UsageItem
from domain.shared.errors import CatalogError
from projections.quota.model import SubscriptionQuota, apply

START = datetime(2026, 3, 1, tzinfo=UTC)
CATALOG = """
[catalog]
id = "measures"
version = "1"
currency = "EUR"
[plans.team]
name = "Team"
price = "10.00"
[plans.team.allowances.requests]
included = 2
limit = "overage"
overage_unit_price = "0.50"
aggregation = "count"
[plans.team.allowances.peak_jobs]
included = 4
limit = "overage"
overage_unit_price = "3.00"
aggregation = "max"
[plans.team.allowances.active_users]
included = 2
limit = "overage"
overage_unit_price = "5.00"
aggregation = "unique"
unique_of = "user"
[plans.team.allowances.queue_depth]
included = 100
aggregation = "latest"
[plans.team.allowances.storage_gb]
included = 10
limit = "overage"
overage_unit_price = "0.20"
aggregation = "recurring"
[plans.team.allowances.tokens]
included = 1000
limit = "overage"
overage_unit_price = "0.001"
[plans.team.allowances.tokens_premium]
of = "tokens"
where = { model = ["gpt-4", "gpt-4o"] }
included = 100
limit = "overage"
overage_unit_price = "0.01"
"""


def app() -> BillingApplication:
    application = BillingApplication(Catalog.from_toml(CATALOG),
                                     env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    application.subscribe("m-1", "acct", "team", START)
    return application


def use(n: int, metric: str, quantity: int | str, at: datetime,
        **properties: str) -> UsageItem:
    return UsageItem(f"u{n}", "m-1", metric, Decimal(quantity), at,
                     properties=properties or None)


def batch(application: BillingApplication, *items: UsageItem) -> list[tuple[int, str]]:
    """Apply one batch as the ingestion does; the refused items' positions and codes."""
    prepared = prepare_usage_batch(application, list(items), in_ledger=set())
    application.save_batch(prepared.aggregates, None)
    return sorted((index, error.code) for index, error in prepared.rejected)


def day(n: int, hour: int = 0) -> datetime:
    return START + timedelta(days=n - 1, hours=hour)


def quota_of(application: BillingApplication) -> dict[str, Decimal]:
    """The quota read model's `used` per metric after every event the store holds."""
    state = SubscriptionQuota("m-1")
    for notification in application.recorder.select_notifications(start=1, limit=10_000):
        message = json.loads(json.dumps(event_message(application, notification), default=str))
        if message.get("subscription") == "m-1":
            apply(state, message)
    return {metric: row.used for metric, row in state.metrics().items()}


def test_count_max_unique_and_latest_measure_what_they_say() -> None:
    a = app()
    assert batch(a, use(1, "requests", 7, day(2)), use(2, "requests", 1, day(2)),
                 use(3, "peak_jobs", 3, day(2)), use(4, "peak_jobs", 7, day(3)),
                 use(5, "peak_jobs", 5, day(4)),
                 use(6, "active_users", 1, day(2), user="ann"),
                 use(7, "active_users", 1, day(3), user="bob"),
                 use(8, "active_users", 4, day(4), user="ann"),
                 use(9, "queue_depth", 40, day(5)), use(10, "queue_depth", 0, day(6))) == []
    # a reading older than the one kept changes nothing; a later one replaces it
    assert batch(a, use(11, "queue_depth", 90, day(5, 12)), use(12, "peak_jobs", 6, day(7)),
                 use(13, "requests", 1, day(7))) == []
    used = a.get("m-1").used
    assert used["requests"] == 3  # events, whatever their quantity
    assert used["peak_jobs"] == 7
    assert used["active_users"] == 2
    assert used["queue_depth"] == 0  # 90 was read before the 0 of day 6
    assert quota_of(a) | {} == {**{m: Decimal(0) for m in ("storage_gb", "tokens",
                                                           "tokens_premium")},
                                "requests": Decimal(3), "peak_jobs": Decimal(7),
                                "active_users": Decimal(2), "queue_depth": Decimal(0)}


def test_what_each_aggregation_refuses() -> None:
    a = app()
    assert batch(a, use(1, "tokens", 0, day(2)),  # a zero adds nothing to a sum
                 use(2, "active_users", 1, day(2)),  # no `user` to count
                 use(3, "storage_gb", 8, day(2, 12)), use(4, "storage_gb", 5, day(3)),
                 use(5, "queue_depth", 0, day(2)), use(6, "peak_jobs", 0, day(2))) == [
        (0, "invalid_quantity"), (1, "missing_property")]  # a batch is applied in time order
    assert batch(a, use(7, "storage_gb", 9, day(2, 18))) == [(0, "level_out_of_order")]
    assert a.get("m-1").used["storage_gb"] == 5


def test_filtered_charges_route_by_property_and_the_rest_goes_to_the_metric() -> None:
    a = app()
    assert batch(a, use(1, "tokens", 50, day(2), model="gpt-4"),
                 use(2, "tokens", 20, day(2), model="gpt-4o", team="x"),
                 use(3, "tokens", 300, day(2), model="mini"),
                 use(4, "tokens", 5, day(2)),
                 use(5, "tokens_premium", 1, day(2), model="gpt-4")) == [(4, "unknown_metric")]
    sub = a.get("m-1")
    assert sub.used["tokens_premium"] == 70 and sub.used["tokens"] == 305
    assert quota_of(a)["tokens_premium"] == 70 and quota_of(a)["tokens"] == 305


def test_a_filtered_metric_without_its_own_allowance_refuses_what_no_filter_matches() -> None:
    text = CATALOG.replace("[plans.team.allowances.tokens]\nincluded = 1000\nlimit = "
                           "\"overage\"\noverage_unit_price = \"0.001\"\n", "")
    a = BillingApplication(Catalog.from_toml(text), env={"PERSISTENCE_MODULE":
                                                         "eventsourcing.popo"})
    a.subscribe("m-1", "acct", "team", START)
    assert batch(a, use(1, "tokens", 5, day(2), model="gpt-4"),
                 use(2, "tokens", 5, day(2), model="mini")) == [(1, "unknown_metric")]


def test_a_recurring_level_is_billed_by_the_time_it_held_and_carries_into_the_next_cycle(
) -> None:
    a = app()
    # March (31 days): 0 GB for 10 days, 20 GB for 10 days, 40 GB for 11 days
    # = (20 x 10 + 40 x 11) / 31 = 20.645161... GB-months; 10 included, 10.645161 at 0.20.
    assert batch(a, use(1, "storage_gb", 20, day(11)), use(2, "storage_gb", 40, day(21))) == []
    a.advance_clock(datetime(2026, 4, 1, 0, 5, tzinfo=UTC), ["m-1"])
    assert a.get("m-1").used["storage_gb"] == 40  # the level carries on
    assert batch(a, use(3, "storage_gb", 1, day(29))) == [(0, "level_out_of_order")]  # late
    a.advance_clock(datetime(2026, 4, 1, 2, tzinfo=UTC), ["m-1"])
    lines = [c for c in _closed_charges(a) if "storage_gb" in c["description"]]
    assert [(c["quantity"], c["amount"]) for c in lines] == [("10.645161", "2.13")]
    assert quota_of(a)["storage_gb"] == 40
    # April (30 days): 40 GB all month = 40 GB-months, 30 past the allowance
    a.advance_clock(datetime(2026, 5, 1, 2, tzinfo=UTC), ["m-1"])
    april = [c for c in _closed_charges(a) if "storage_gb" in c["description"]]
    assert [(c["quantity"], c["amount"]) for c in april][-1] == ("30.000000", "6.00")


def _closed_charges(application: BillingApplication) -> list[dict[str, Any]]:
    charges: list[dict[str, Any]] = []
    for notification in application.recorder.select_notifications(start=1, limit=10_000):
        message = event_message(application, notification)
        if message["type"] == "UsagePeriodClosed":
            charges += message["data"]["charges"]
    return charges


def test_level_metrics_are_not_multiplied_for_a_year_but_summed_ones_are() -> None:
    text = CATALOG.replace('price = "10.00"', 'price = "10.00"\nperiods = ["month", "year"]')
    terms = Catalog.from_toml(text).plan("team").terms("year")["allowances"]
    assert terms["storage_gb"]["included"] == "10"
    assert terms["active_users"]["included"] == "2"
    assert terms["requests"]["included"] == "24"
    assert terms["tokens_premium"]["included"] == "1200"
    assert terms["tokens_premium"]["where"] == {"model": ["gpt-4", "gpt-4o"]}


@pytest.mark.parametrize(("change", "message"), [
    (('aggregation = "unique"\nunique_of = "user"', 'aggregation = "unique"'), "unique_of"),
    (('aggregation = "count"', 'aggregation = "median"'), "aggregation must be one of"),
    (('aggregation = "count"', 'aggregation = "count"\ndaily_cap = 5'), "daily cap"),
    (('where = { model = ["gpt-4", "gpt-4o"] }', ''), "both `of`"),
    (('where = { model = ["gpt-4", "gpt-4o"] }', 'where = {}'), "at least one property"),
    (('where = { model = ["gpt-4", "gpt-4o"] }', 'where = { "bad name" = "x" }'),
     "property name"),
    (('of = "tokens"', 'of = "tokens_premium"'), "another metric"),
])
def test_catalog_refuses_unclear_measures(change: tuple[str, str], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog.from_toml(CATALOG.replace(*change))


def test_overlapping_filters_and_two_measures_of_one_metric_are_refused() -> None:
    overlapping = CATALOG + """
[plans.team.allowances.tokens_gpt4]
of = "tokens"
where = { model = "gpt-4", region = "eu" }
included = 0
"""
    with pytest.raises(CatalogError, match="can both match"):
        Catalog.from_toml(overlapping)
    disjoint = overlapping.replace('model = "gpt-4", region', 'model = "o1", region')
    assert Catalog.from_toml(disjoint).plan("team").allowances["tokens_gpt4"].of == "tokens"
    two_ways = CATALOG + """
[plans.solo]
name = "Solo"
rank = 1
price = "20.00"
[plans.solo.allowances.requests]
included = 2
"""
    with pytest.raises(CatalogError, match="one per metric"):
        Catalog.from_toml(two_ways)


def test_a_new_catalog_version_cannot_measure_a_metric_another_way() -> None:
    before = Catalog.from_toml(CATALOG)
    after = Catalog.from_toml(CATALOG.replace('version = "1"', 'version = "2"').replace(
        'aggregation = "max"', 'aggregation = "latest"'))
    with pytest.raises(CatalogError, match="peak_jobs") as refused:
        check_measured_alike(before, after)
    assert refused.value.code == "aggregation_changed"
    check_measured_alike(before, Catalog.from_toml(CATALOG.replace('"3.00"', '"4.00"')))


def test_a_late_unique_value_counts_in_its_closed_cycle_once() -> None:
    a = app()
    assert batch(a, use(1, "active_users", 1, day(30), user="ann")) == []
    a.advance_clock(datetime(2026, 4, 1, 0, 5, tzinfo=UTC), ["m-1"])  # inside the grace
    assert batch(a, use(2, "active_users", 1, day(31, 23), user="ann"),
                 use(3, "active_users", 1, day(31, 22), user="cid"),
                 use(4, "active_users", 1, day(31, 21), user="dan")) == []
    a.advance_clock(datetime(2026, 4, 2, tzinfo=UTC), ["m-1"])
    users = [c for c in _closed_charges(a) if "active_users" in c["description"]]
    assert [(c["quantity"], c["amount"]) for c in users] == [("1", "5.00")]  # 3 - 2 included
