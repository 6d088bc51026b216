"""The usage ledger is bounded: the clock prunes the ids of usage whose cycle has closed and
whose grace window has passed, and exactly-once still holds. A replayed old id, no longer in
the ledger, is refused as too late by the subscription itself (dead-lettered), never counted
again (docs/reliability.md, "The ledger is bounded")."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import psycopg
import pytest

from infra.wiring.engine import Engine
from tests.integration.helpers import ingest_all, publish, read_topic, subscribe, usage

pytestmark = pytest.mark.integration


def ledger(engine: Engine) -> list[tuple[str, str, datetime | None]]:
    with psycopg.connect(engine.database_url) as conn:
        return conn.execute("SELECT subscription_id, usage_id, until FROM usage_dedup "
                            "WHERE usage_id NOT LIKE 'cmd:%%' ORDER BY 1, 2").fetchall()


def test_the_clock_prunes_closed_cycles_ids_and_a_replay_is_refused_as_too_late(
        engine: Engine) -> None:
    subscribe(engine, "sub-a", "sub-b")  # monthly from 2026-11-01, 60 minutes of grace
    november = [usage(f"n{i}", "sub-a", quantity=5) for i in range(4)]
    other = [usage("b1", "sub-b", quantity=7)]
    ingest_all(engine, publish(engine, november + other))
    grace_end = datetime(2026, 12, 1, 1, tzinfo=UTC)
    assert {(s, u, t) for s, u, t in ledger(engine)} == {
        *(("sub-a", f"n{i}", grace_end) for i in range(4)), ("sub-b", "b1", grace_end)}

    # Within the grace window nothing goes: usage of November may still come.
    engine.app.advance_clock(datetime(2026, 12, 1, 0, 30, tzinfo=UTC), ["sub-a", "sub-b"])
    assert len(ledger(engine)) == 5
    # Past it, only the subscriptions the clock advanced lose their closed ids.
    engine.app.advance_clock(datetime(2026, 12, 1, 2, tzinfo=UTC), ["sub-a"])
    assert [u for _, u, _ in ledger(engine)] == ["b1"]

    december = [usage("d1", "sub-a", quantity=3, at="2026-12-02T10:00:00+00:00")]
    ingest_all(engine, publish(engine, november + december))  # the old ids again, and a new one
    sub = engine.app.load_as_stored("sub-a")
    assert sub.used == {"tokens": Decimal(3)}  # December: only d1
    closed = [e for e in engine.app.events.get("sub-a")
              if type(e).__name__ == "UsagePeriodClosed"]
    assert [e.usage for e in closed] == [{"tokens": "20"}]  # November counted once
    letters = [orjson.loads(r.value) for r in read_topic(engine, engine.settings.topics.dlq, 4)]
    assert sorted((letter["code"], orjson.loads(letter["value"])["id"]) for letter in letters) \
        == [("too_late", f"n{i}") for i in range(4)]
    assert sorted(u for _, u, _ in ledger(engine)) == ["b1", "d1"]
