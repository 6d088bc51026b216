"""Aggregations and filtered charges through the real pipeline (Kafka -> ingestion ->
PostgreSQL -> relay -> quota read model): usage events with properties are routed to the charge
they match, distinct users and recurring levels are measured as the aggregate measures them, the
quota read model holds the same amounts, a recurring level carries into the next cycle in both,
and what an aggregation refuses is dead-lettered with its code."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import psycopg
import pytest

from infra.config import Settings
from infra.wiring.engine import Engine
from projections.quota import store as quota_store
from tests.conftest import TestStack
from tests.integration.api_server import running_api
from tests.integration.helpers import (
    engine_on_catalog,
    ingest_all,
    project_all,
    publish,
    quota_used,
    read_topic,
    relay_all,
    store_totals,
    usage,
)

CATALOG = """
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

[plans.cloud.allowances.tokens]
included = 10000
limit = "overage"
overage_unit_price = "0.001"

[plans.cloud.allowances.api_calls]
included = 100
limit = "overage"
overage_unit_price = "0.10"
group_by = "workspace"

[plans.cloud.allowances.tokens_frontier]
of = "tokens"
where = { model = ["gpt-4", "gpt-4o"] }
included = 1000
limit = "overage"
overage_unit_price = "0.03"
"""


@pytest.fixture
def cloud_engine(settings: Settings, database_url: str, stack: TestStack,
                 tmp_path: Path) -> Iterator[Engine]:
    with engine_on_catalog(settings, database_url, stack.kafka_bootstrap, tmp_path,
                           CATALOG) as opened:
        yield opened


def test_properties_route_and_aggregations_measure_through_the_pipeline(
        cloud_engine: Engine) -> None:
    engine = cloud_engine
    engine.app.subscribe_many([("cl-1", "acct-cl", "cloud")],
                              datetime(2026, 11, 1, tzinfo=UTC))
    at = "2026-11-0{}T10:00:00+00:00".format
    messages = [
        usage("t1", "cl-1", "tokens", 700, at(2), properties={"model": "gpt-4o"}),
        usage("t2", "cl-1", "tokens", 300, at(2), properties={"model": "mini"}),
        usage("t3", "cl-1", "tokens", 50, at(3)),
        usage("a1", "cl-1", "active_users", 1, at(2), properties={"user": "ann"}),
        usage("a2", "cl-1", "active_users", 1, at(3), properties={"user": "bob"}),
        usage("a3", "cl-1", "active_users", 1, at(4), properties={"user": "ann"}),
        usage("a4", "cl-1", "active_users", 1, at(4)),  # no user: missing_property
        usage("s1", "cl-1", "storage_gb", 120, at(2)),
        usage("s2", "cl-1", "storage_gb", 0, at(5)),  # a level may fall to zero
        usage("s3", "cl-1", "storage_gb", 80, at(6)),
        usage("z1", "cl-1", "tokens", 0, at(6)),  # zero adds nothing to a sum
        usage("f1", "cl-1", "tokens_frontier", 5, at(6)),  # a charge is not a metric
        usage("g1", "cl-1", "api_calls", 150, at(2), workspace="ws-a"),
        usage("g2", "cl-1", "api_calls", 90, at(3), workspace="ws-b"),
    ]
    ingest_all(engine, publish(engine, messages))
    expected = {("cl-1", "tokens"): Decimal(350), ("cl-1", "tokens_frontier"): Decimal(700),
                ("cl-1", "active_users"): Decimal(2), ("cl-1", "storage_gb"): Decimal(80),
                ("cl-1", "api_calls"): Decimal(240)}  # the groups' total
    assert store_totals(engine) == expected
    relay_all(engine)
    project_all(engine)
    assert quota_used(engine.database_url) == expected
    letters = [orjson.loads(r.value) for r in read_topic(engine, engine.settings.topics.dlq, 3)]
    assert sorted(letter["code"] for letter in letters) == [
        "invalid_quantity", "missing_property", "unknown_metric"]
    _grouped_entitlements_answer_per_group(engine)
    _unit_credits_reach_the_quota_model(engine)

    # The next cycle: the storage level carries on, everything else starts from nothing.
    engine.app.advance_clock(datetime(2026, 12, 1, 2, tzinfo=UTC), ["cl-1"])
    relay_all(engine)
    project_all(engine)
    assert store_totals(engine) == {("cl-1", "storage_gb"): Decimal(80)}
    assert quota_used(engine.database_url) == {("cl-1", "storage_gb"): Decimal(80)}
    storage = [c for c in _overage_lines(engine) if c["metric"] == "storage_gb"]
    # November (30 days): 0 until the 2nd 10:00, 120 GB for 3 days, 0 for 1, then 80 GB for 24
    # days 14 hours: (120 x 3 + 80 x 24.583333...) / 30 = 77.555556 GB-months, 27.555556 past
    # the 50 included, at 0.10 = 2.7555556.
    assert [(c["quantity"], c["amount"]) for c in storage] == [("27.555556", "2.76")]
    calls = [(c["description"], c["amount"]) for c in _overage_lines(engine)
             if c["metric"] == "api_calls"]  # ws-a 50 past its own 100, ws-b within its own
    assert calls == [("api_calls (workspace ws-a) over allowance", "5.00")]


def _grouped_entitlements_answer_per_group(engine: Engine) -> None:
    """A grouped charge's allowance is each group's own: the quota model keeps each group's
    use, the API answers per group (and refuses to answer for the total), the monitor shows
    every group."""
    with psycopg.connect(engine.database_url) as conn:
        _days, _members, groups = quota_store.usage_history(
            conn, "cl-1", datetime(2026, 11, 1, tzinfo=UTC))
    assert groups == [("api_calls", "ws-a", Decimal(150)), ("api_calls", "ws-b", Decimal(90))]
    with running_api(engine) as api, api.client(api.key()) as client:
        path = "/v1/subscriptions/cl-1/entitlements/api_calls"
        a = client.get(path, params={"group": "ws-a", "requested": "5"}).json()
        assert (a["group_by"], a["group"], a["used"], a["limit"], a["remaining"],
                a["overage_units"], a["has_access"]) == (
            "workspace", "ws-a", "150", "100", "0", "5", True)
        b = client.get(path, params={"group": "ws-b", "requested": "20"}).json()
        assert (b["used"], b["remaining"], b["overage_units"]) == ("90", "10", "10")
        fresh = client.get(path, params={"group": "ws-new"}).json()
        assert (fresh["used"], fresh["remaining"]) == ("0", "100")
        total = client.get(path)
        assert total.status_code == 422 and total.json()["code"] == "group_required"
        plain = client.get("/v1/subscriptions/cl-1/entitlements/tokens", params={"group": "x"})
        assert plain.status_code == 422 and plain.json()["code"] == "not_grouped"
        monitor = client.get("/v1/subscriptions/cl-1/monitor").json()
        calls = next(m for m in monitor["metrics"] if m["metric"] == "api_calls")
        assert calls["group_by"] == "workspace"
        assert calls["per_group"] == {"ws-a": {"used": "150", "remaining": "0"},
                                      "ws-b": {"used": "90", "remaining": "10"}}


def _unit_credits_reach_the_quota_model(engine: Engine) -> None:
    from domain.contracts.commands import parse_command

    engine.app.handle(parse_command({
        "id": "units-1", "type": "grant_units", "subscription": "cl-1", "metric": "tokens",
        "quantity": "500", "at": "2026-11-07T00:00:00+00:00"}))
    relay_all(engine)
    project_all(engine)
    with psycopg.connect(engine.database_url) as conn:
        balances = conn.execute("SELECT metric, balance FROM unit_credit_balances WHERE "
                                "subscription_id = 'cl-1'").fetchall()
        row = conn.execute("SELECT credits, remaining FROM quota WHERE subscription_id = "
                           "'cl-1' AND metric = 'tokens'").fetchone()
    assert balances == [("tokens", Decimal(500))]
    assert row == (Decimal(500), Decimal(10_000 + 500 - 350))
    with running_api(engine) as api, api.client(api.key()) as client:
        answer = client.get("/v1/subscriptions/cl-1/entitlements/tokens").json()
    assert (answer["unit_credits"], answer["remaining"]) == ("500", "10150")


def _overage_lines(engine: Engine) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    for event in engine.app.events.get("cl-1"):
        if type(event).__name__ == "UsagePeriodClosed":
            lines += event.charges
    return lines
