"""Two ingestion processes in one consumer group share the partitions and still count once."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from infra.wiring.engine import Engine, Monitor
from tests.integration.helpers import publish, store_totals, subscribe, until, usage

pytestmark = pytest.mark.integration


def test_two_ingestion_members_of_one_group_split_the_partitions(engine: Engine) -> None:
    subs = [f"sub-{i}" for i in range(10)]
    subscribe(engine, *subs)
    messages = [usage(f"u{n}", subs[n % 10], quantity=1) for n in range(4_000)]

    other = Engine.open(engine.settings, engine.database_url, engine.kafka_bootstrap)
    try:
        members = [engine.ingestion(group=True), other.ingestion(group=True)]
        stop = threading.Event()
        threads = [threading.Thread(target=loop.run, args=(stop,)) for loop, _ in members]
        for t in threads:
            t.start()
        monitor = Monitor(engine)
        try:
            # Publish once the group has settled with one partition per member.
            until(lambda: all(len(loop.assigned) == 1 for loop, _ in members),
                  lambda: stop.wait(0.1), timeout=60)
            ends = publish(engine, messages + messages[:500])  # with redeliveries
            until(lambda: monitor.ingested(ends), lambda: stop.wait(0.1), timeout=90)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    finally:
        other.close()

    assert store_totals(engine) == {(s, "tokens"): Decimal(400) for s in subs}
    handled = [ingestor.stats.messages for _, ingestor in members]
    assert sum(ingestor.stats.accepted for _, ingestor in members) == 4_000
    assert all(handled), f"one member got no partition: {handled}"
