"""Optimistic ingestion (consumers/usage.py): a batch is applied without reading the ledger or
the cached subscriptions' versions first. A replayed id or another writer is caught by a unique
key at commit, or (for a refusal, which writes nothing) by a check against the store; the
batch is then redone cautiously, and every usage event still counts exactly once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.app.record_usage import StaleRefusal, prepare_usage_batch
from domain.catalog.model import Catalog
from domain.contracts.usage import parse_usage
from infra.eventstore.recorder import open_application
from infra.wiring.engine import Engine, Monitor
from tests.integration.helpers import T0, publish, store_totals, subscribe, until, usage

pytestmark = pytest.mark.integration
ASSISTANT_PLANS = Catalog.from_file(
    Path(__file__).resolve().parents[2] / "examples" / "assistant_plans.toml")


def _drive(engine: Engine, loop: Any, ends: dict[int, int]) -> None:
    monitor = Monitor(engine)
    until(lambda: monitor.ingested(ends), lambda: loop.poll_once(100))
    loop.settle()


@pytest.mark.parametrize("optimistic", [True, False])
def test_an_id_applied_by_an_earlier_batch_counts_once(engine: Engine, optimistic: bool) -> None:
    engine.settings = replace(engine.settings, optimistic_ingest=optimistic)
    subscribe(engine, "sub-a")
    loop, ingestor = engine.ingestion()
    first = [usage(f"u{i}", "sub-a", quantity=1) for i in range(30)]
    _drive(engine, loop, publish(engine, first))
    # The first ten ids again, published anew by the upstream service (new offsets).
    _drive(engine, loop, publish(engine, [*first[:10], usage("v0", "sub-a", quantity=5)]))
    loop.close()

    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(35)}
    assert ingestor.stats.accepted == 31 and ingestor.stats.duplicates == 10
    assert loop.failures == 0
    if optimistic:  # the ledger's key refused the batch once; it was redone reading first
        assert ingestor.conflicts == 1 and loop.redone == 1 and ingestor.cautious
    else:
        assert ingestor.conflicts == 0 and loop.redone == 0


def test_a_subscription_another_writer_moved_is_reloaded_and_usage_counts_once(
        engine: Engine) -> None:
    subscribe(engine, "sub-a", "sub-b")
    loop, ingestor = engine.ingestion()
    _drive(engine, loop, publish(engine, [usage("u1", "sub-a"), usage("u2", "sub-b")]))
    assert not ingestor.cautious
    # Another writer (a command consumer, the clock) appends to sub-a behind the cache.
    other = engine.app.load_as_stored("sub-a")
    other.create_workspace("ws-1", T0 + timedelta(days=1))
    engine.app.save_batch([other], tracking=None)

    _drive(engine, loop, publish(engine, [usage("u3", "sub-a", quantity=7),
                                          usage("u4", "sub-b", quantity=3)]))
    loop.close()
    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(17),
                                    ("sub-b", "tokens"): Decimal(13)}
    assert engine.app.load_as_stored("sub-a").workspaces == {"ws-1": "active"}
    assert ingestor.conflicts == 1 and loop.failures == 0


def test_a_refusal_made_on_a_moved_subscription_is_checked_against_the_store(
        engine: Engine) -> None:
    mine = open_application(engine.database_url, ASSISTANT_PLANS)
    other = open_application(engine.database_url, ASSISTANT_PLANS)
    try:
        other.subscribe_many([("sub-a", "acct-a", "basic"), ("sub-b", "acct-b", "basic")], T0)
        assert mine.find("sub-a") is not None  # cached on Basic: no `tokens` metric
        upgraded = other.load_as_stored("sub-a")
        upgraded.change_plan("enterprise", T0 + timedelta(days=1), ASSISTANT_PLANS)
        other.save_batch([upgraded], tracking=None)

        def tokens(uid: str, sub: str) -> Any:
            return parse_usage({"id": uid, "subscription": sub, "metric": "tokens",
                                "quantity": 5, "at": "2026-11-03T10:00:00+00:00"})

        with pytest.raises(StaleRefusal):
            prepare_usage_batch(mine, [tokens("t1", "sub-a")], optimistic=True)
        redone = prepare_usage_batch(mine, [tokens("t1", "sub-a")])
        assert redone.accepted == 1 and redone.rejected == []

        # A refusal on a subscription nobody moved stands, optimistic or not.
        assert mine.find("sub-b") is not None
        kept = prepare_usage_batch(mine, [tokens("t2", "sub-b")], optimistic=True)
        assert [e.code for _, e in kept.rejected] == ["unknown_metric"]
    finally:
        mine.close()
        other.close()
