"""The relay publishes every stored event in order per subscription; the quota projection
applies each once and can be rebuilt to the same rows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from kafka import TopicPartition

from consumers.projector import Database, QuotaProjector
from infra.ops.rebuild import rebuild
from infra.wiring.engine import Engine
from projections import schema
from projections import tracking as projection_versions
from projections.quota import store as quota_store
from tests.integration.helpers import (
    ingest_all,
    project_all,
    publish,
    quota_rows,
    quota_used,
    read_topic,
    relay_all,
    store_totals,
    subscribe,
    usage,
)

pytestmark = pytest.mark.integration


def _fill(engine: Engine, subs: int = 12, events: int = 3_000) -> None:
    names = [f"sub-{i:02d}" for i in range(subs)]
    subscribe(engine, *names)
    messages = [usage(f"u{n}", names[n % subs], ("tokens", "documents")[n % 2], 1 + n % 7,
                      at=f"2026-11-{1 + n % 28:02d}T10:00:00+00:00")
                for n in range(events)]
    # A few that cross into the next cycle, so CycleRolled events flow too.
    messages += [usage(f"next{i}", names[i], "tokens", 5, at="2026-12-03T00:00:00+00:00")
                 for i in range(3)]
    ingest_all(engine, publish(engine, messages))


def _events_in_store(engine: Engine) -> int:
    with psycopg.connect(engine.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM billing_events").fetchone()
    return int(row[0]) if row else 0


def test_relay_publishes_every_event_once_in_order_per_subscription(engine: Engine) -> None:
    _fill(engine)
    relay = relay_all(engine)
    stored = _events_in_store(engine)
    assert relay.published == stored

    records = read_topic(engine, engine.settings.topics.events, stored)
    assert len(records) == stored
    by_sub: dict[str, list[int]] = {}
    partitions: dict[str, set[int]] = {}
    for r in records:
        message = orjson.loads(r.value)
        assert r.key.decode() == message["subscription"]
        assert set(message) >= {"subscription", "version", "type", "time", "data"}
        by_sub.setdefault(message["subscription"], []).append(message["version"])
        partitions.setdefault(message["subscription"], set()).add(r.partition)
    for sub, versions in by_sub.items():
        # Kafka orders within a partition, and each subscription lives in one partition.
        assert len(partitions[sub]) == 1
        assert versions == list(range(1, len(versions) + 1)), sub
    types = {orjson.loads(r.value)["type"] for r in records}
    assert types >= {"Subscribed", "UsageRecorded", "CycleRolled"}


def test_relay_resumes_from_its_position_and_a_crash_before_recording_only_duplicates(
        engine: Engine) -> None:
    _fill(engine, subs=4, events=400)
    relay = relay_all(engine)
    first = relay.published
    # Crash between flush and recording the position: the position goes back (an owner's
    # deliberate edit: the trigger that refuses backward moves is disabled for it).
    with psycopg.connect(engine.database_url) as conn:
        conn.execute("ALTER TABLE billing_tracking DISABLE TRIGGER billing_tracking_forward_only")
        conn.execute("UPDATE billing_tracking SET notification_id = notification_id - 5 "
                     "WHERE application_name = %s", (relay.name,))
        conn.execute("ALTER TABLE billing_tracking ENABLE TRIGGER billing_tracking_forward_only")
    again = relay_all(engine)
    assert again.published == 5
    records = read_topic(engine, engine.settings.topics.events, first + 5)
    assert len(records) == first + 5  # five re-published, nothing skipped
    # The projection applies each (subscription, version) once.
    project_all(engine)
    assert quota_used(engine.database_url) == store_totals(engine)


def test_quota_matches_the_store_and_rebuilds_to_identical_rows(engine: Engine) -> None:
    _fill(engine)
    relay_all(engine)
    project_all(engine)
    live = quota_rows(engine.database_url)
    assert quota_used(engine.database_url) == store_totals(engine)
    rolled = [r for r in live if r["cycle_start"] == datetime(2026, 12, 1, tzinfo=UTC)]
    assert {r["subscription_id"] for r in rolled} == {"sub-00", "sub-01", "sub-02"}
    assert all(r["remaining"] == max(r["included"] - r["used"], Decimal(0)) for r in live)

    # 1. From the event store, from scratch.
    with psycopg.connect(engine.database_url) as conn:
        conn.execute("DELETE FROM quota")
    swapped = rebuild(engine.app, engine.database_url, ["quota"], do_swap=True, force=True)
    assert swapped.swapped and quota_rows(engine.database_url) == live

    # 2. From billing.events, offset 0: drop rows, versions and positions, replay the topic.
    with psycopg.connect(engine.database_url) as conn, conn.cursor() as cur:
        quota_store.reset(cur, positions_too=True)
    assert quota_rows(engine.database_url) == []
    project_all(engine)
    assert quota_rows(engine.database_url) == live



def _usage_rounds(engine: Engine, sub: str, *rounds: tuple[str, ...]) -> list[Any]:
    """Each round ingested on its own (one UsageRecorded each); returns the subscription's
    event messages as the relay published them."""
    subscribe(engine, sub)
    for r, metrics in enumerate(rounds):
        ingest_all(engine, publish(engine, [
            usage(f"{sub}-{r}-{m}", sub, m, 1 + r, at=f"2026-11-{10 + r}T10:00:00+00:00")
            for m in metrics]))
    relay_all(engine)
    records = sorted((r for r in read_topic(engine, engine.settings.topics.events,
                                            3 + len(rounds))
                      if r.key == sub.encode()), key=lambda r: r.offset)
    assert [orjson.loads(r.value)["version"] for r in records] == list(range(1, len(rounds) + 2))
    return records


def _projector(engine: Engine) -> QuotaProjector:
    return QuotaProjector(Database(engine.database_url), engine.dead_letters("quota-projector"))


def test_projectors_taking_turns_reread_what_the_other_wrote(engine: Engine) -> None:
    """Each projector keeps the states it committed; one whose cached version is behind the
    table's (another process projected the subscription meanwhile) reads the table again."""
    both = ("tokens", "documents")
    records = _usage_rounds(engine, "sub-turns", both, both, both, both)
    tp = TopicPartition(records[0].topic, records[0].partition)
    first, second = _projector(engine), _projector(engine)
    first.handle_poll({tp: records[:2]})
    second.handle_poll({tp: records[2:4]})
    assert len(first.cache) == 1
    assert first.rereads == 0
    first.handle_poll({tp: records[4:]})  # its cached state is two versions behind the table
    assert first.rereads == 1
    assert quota_used(engine.database_url) == store_totals(engine) == {
        ("sub-turns", "tokens"): Decimal(10), ("sub-turns", "documents"): Decimal(10)}


def test_a_version_moves_only_from_the_one_its_writer_read(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        schema.create_schema(conn)
        with conn.transaction(), conn.cursor() as cur:
            projection_versions.advance(cur, "quota", {"a": (0, 3), "b": (0, 1)})
        for stale in ({"a": (2, 4)}, {"b": (0, 2)}, {"a": (3, 4), "c": (1, 2)}):
            with pytest.raises(projection_versions.VersionConflict), conn.transaction(), \
                    conn.cursor() as cur:
                projection_versions.advance(cur, "quota", stale)
        with conn.transaction(), conn.cursor() as cur:
            projection_versions.advance(cur, "quota", {"a": (3, 5), "c": (0, 1)})
            assert projection_versions.read(cur, "quota", ["a", "b", "c"]) == \
                {"a": 5, "b": 1, "c": 1}


def test_a_quota_row_missing_under_a_cached_state_is_written_whole(engine: Engine) -> None:
    records = _usage_rounds(engine, "sub-gone", ("tokens", "documents"), ("tokens",))
    tp = TopicPartition(records[0].topic, records[0].partition)
    projector = _projector(engine)
    projector.handle_poll({tp: records[:2]})
    with psycopg.connect(engine.database_url) as conn:
        conn.execute("DELETE FROM quota WHERE subscription_id = 'sub-gone' "
                     "AND metric = 'tokens'")
    projector.handle_poll({tp: records[2:]})
    assert quota_used(engine.database_url) == {
        ("sub-gone", "tokens"): Decimal(3), ("sub-gone", "documents"): Decimal(1)}
    tokens = next(r for r in quota_rows(engine.database_url)
                  if (r["subscription_id"], r["metric"]) == ("sub-gone", "tokens"))
    assert tokens["included"] > 0 and tokens["remaining"] == tokens["included"] - 3


def test_a_batch_rewrites_only_the_quota_rows_it_changed(engine: Engine) -> None:
    records = _usage_rounds(engine, "sub-rows", ("tokens", "documents"), ("tokens",))
    tp = TopicPartition(records[0].topic, records[0].partition)
    projector = _projector(engine)

    def row_versions() -> dict[str, str]:
        with psycopg.connect(engine.database_url) as conn:
            return dict(conn.execute("SELECT metric, xmin::text FROM quota "
                                     "WHERE subscription_id = 'sub-rows'").fetchall())

    projector.handle_poll({tp: records[:2]})
    before = row_versions()
    projector.handle_poll({tp: records[2:]})
    after = row_versions()
    assert {m for m in before if after[m] != before[m]} == {"tokens"}
    assert quota_used(engine.database_url) == {
        ("sub-rows", "tokens"): Decimal(3), ("sub-rows", "documents"): Decimal(1)}


def test_positions_of_a_poll_go_in_together_and_none_moves_back(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        schema.create_schema(conn)
        with conn.transaction(), conn.cursor() as cur:
            quota_store.record_positions(cur, "billing.events", {0: 10, 1: 20})
        with pytest.raises(quota_store.PositionConflict), conn.transaction(), \
                conn.cursor() as cur:  # partition 1 would not move forward
            quota_store.record_positions(cur, "billing.events", {0: 11, 1: 20})
        assert quota_store.position(conn, "billing.events", 0) == 10
        with conn.transaction(), conn.cursor() as cur:
            quota_store.record_positions(cur, "billing.events", {0: 11, 1: 21, 2: 5})
        assert [quota_store.position(conn, "billing.events", p) for p in (0, 1, 2)] == \
            [11, 21, 5]
