"""A record no worker can apply stops nothing: the loop narrows a failed batch down to the
record at fault, dead-letters it as `unprocessable` and applies every other one; an event the
relay cannot decode, or a projection cannot write, parks its subscription alone."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest

from consumers.loop import TrackedConsumer
from consumers.wire import encode
from infra.kafka import clients as kafka
from infra.wiring.engine import Engine, Monitor
from projections import parked
from tests.integration.helpers import (
    ingest_all,
    project_all,
    publish,
    quota_used,
    read_topic,
    relay_all,
    subscribe,
    until,
    usage,
)

pytestmark = pytest.mark.integration


def _letters(engine: Engine, expected: int) -> list[dict[str, Any]]:
    return [orjson.loads(r.value)
            for r in read_topic(engine, engine.settings.topics.dlq, expected)]


def test_a_batch_failing_on_one_record_is_narrowed_down_to_it(engine: Engine) -> None:
    """A handler that fails on one record (whatever the reason) in a poll of 400: the 399
    others are applied, the one is dead-lettered once, in a few dozen attempts."""
    subs = [f"sub-{i}" for i in range(4)]
    subscribe(engine, *subs)
    messages = [usage(f"u{n}", subs[n % 4], quantity=1) for n in range(400)]
    poison_offset: dict[str, int] = {}
    ends = publish(engine, messages)
    loop, ingestor = engine.ingestion()
    apply_poll = loop.poll_handler
    assert apply_poll is not None

    def failing_on_u137(batches: Any) -> None:
        for records in batches.values():
            for record in records:
                if orjson.loads(record.value)["id"] == "u137":
                    poison_offset["at"] = record.offset
                    raise ValueError("a bug this record triggers")
        apply_poll(batches)

    loop.poll_handler = failing_on_u137
    ingest_all(engine, ends, loop)
    assert loop.quarantined == 1
    attempts = loop.failures
    print("attempts", attempts)
    assert attempts <= 2 * 9 + 2, attempts  # about 2 log2(400)
    used = quota_used_from_store(engine)
    assert sum(used.values()) == 399
    letters = _letters(engine, 1)
    assert [(x["code"], x["offset"]) for x in letters] == [("unprocessable",
                                                             poison_offset["at"])]
    assert "a bug this record triggers" in letters[0]["error"]
    # Back to whole polls afterwards: new records go through as one batch.
    more = publish(engine, [usage(f"v{n}", subs[0], quantity=1) for n in range(50)])
    batches_before = loop.batches
    ingest_all(engine, more, loop)
    assert loop.batches - batches_before <= 4
    assert ingestor.stats.dead_lettered == 1


def quota_used_from_store(engine: Engine) -> dict[str, Decimal]:
    return {sid: engine.app.load_as_stored(sid).used.get("tokens", Decimal(0))
            for sid in engine.app.recorder.subscription_ids()}  # type: ignore[attr-defined]


def test_transient_failures_are_retried_never_dead_lettered(engine: Engine) -> None:
    subscribe(engine, "sub-t")
    ends = publish(engine, [usage(f"t{n}", "sub-t", quantity=2) for n in range(20)])
    loop, _ = engine.ingestion()
    apply_poll = loop.poll_handler
    assert apply_poll is not None
    outages = {"left": 3}

    def flaky(batches: Any) -> None:
        if outages["left"]:
            outages["left"] -= 1
            raise psycopg.OperationalError("connection refused (the database restarting)")
        apply_poll(batches)

    loop.poll_handler = flaky
    ingest_all(engine, ends, loop)
    assert loop.failures == 3 and loop.quarantined == 0
    assert quota_used_from_store(engine) == {"sub-t": Decimal(40)}


def _project_until_caught_up(engine: Engine, loop: TrackedConsumer, end: int) -> None:
    positions = Monitor(engine)
    del positions

    def done() -> bool:
        with psycopg.connect(engine.database_url) as conn:
            row = conn.execute("SELECT coalesce(max(position), -1) FROM projection_positions "
                               "WHERE projection = 'quota'").fetchone()
        return row is not None and int(row[0]) >= end

    until(done, lambda: loop.poll_once(100), timeout=60)


def test_an_event_a_projection_cannot_write_parks_its_subscription_only(
        engine: Engine) -> None:
    """An event on billing.events whose member PostgreSQL cannot store (written before input
    was checked, or by another producer): the quota projector parks that subscription, dead-
    letters the event, and every other subscription's events are applied."""
    subscribe(engine, "sub-a", "sub-b")
    ingest_all(engine, publish(engine, [usage("a1", "sub-a", quantity=3),
                                        usage("b1", "sub-b", quantity=4)]))
    relay_all(engine)
    loop = project_all(engine)
    poison = {"subscription": "sub-a", "version": 99, "type": "UsageRecorded",
              "type_version": 1, "time": "2026-11-02T10:00:00+00:00", "position": 10**9,
              "data": {"items": [{"id": "x", "metric": "tokens", "quantity": "5",
                                  "at": "2026-11-02T10:00:00+00:00", "member": "al\x00ice"}],
                       "totals": {"tokens": "5"}}}
    producer = engine.producer()
    topic = engine.settings.topics.events
    partitioner = kafka.KeyPartitions(lambda: producer.partitions_for(topic))
    partition = partitioner(b"sub-a")
    assert partition is not None
    ends = kafka.publish(producer, topic, [(b"sub-a", encode(poison))])
    # Then more real events of both subscriptions.
    ingest_all(engine, publish(engine, [usage("a2", "sub-a", quantity=7),
                                        usage("b2", "sub-b", quantity=8)]))
    relay_all(engine)
    _project_until_caught_up(engine, loop, ends[partition] - 1)
    until(lambda: quota_used(engine.database_url).get(("sub-b", "tokens")) == Decimal(12),
          lambda: loop.poll_once(100), timeout=30)
    assert loop.quarantined == 1
    with psycopg.connect(engine.database_url) as conn:
        rows = parked.listing(conn)
    assert [(r["stage"], r["subscription"], r["version"], r["code"]) for r in rows] == [
        ("quota", "sub-a", 99, "unprocessable")]
    used = quota_used(engine.database_url)
    assert used[("sub-a", "tokens")] == Decimal(3)  # held back at the parked event
    assert used[("sub-b", "tokens")] == Decimal(12)
    letters = _letters(engine, 1)
    assert [x["code"] for x in letters] == ["unprocessable"]


def _an_event_no_one_can_decode(engine: Engine, broken: str, fine: str) -> None:
    """Usage of 1 on `broken` and 2 on `fine`, then `broken`'s usage event edited in the
    store (by its owner) into bytes no version of its type can decode."""
    subscribe(engine, broken, fine)
    ingest_all(engine, publish(engine, [usage(f"{broken}-1", broken, quantity=1),
                                        usage(f"{fine}-1", fine, quantity=2)]))
    with psycopg.connect(engine.database_url) as conn:
        conn.execute("ALTER TABLE billing_events DISABLE TRIGGER USER")
        conn.execute("UPDATE billing_events SET state = %s WHERE originator_id = %s "
                     "AND originator_version = 2", (b"\x00not json", broken))
        conn.execute("ALTER TABLE billing_events ENABLE TRIGGER USER")


def test_an_undecodable_stored_event_does_not_stop_the_relay(engine: Engine) -> None:
    """A row of the event store edited into something no version of its type can decode: the
    relay publishes a placeholder in its place and goes on; the projection parks that
    subscription and applies the others."""
    _an_event_no_one_can_decode(engine, "sub-x", "sub-y")
    ingest_all(engine, publish(engine, [usage("y2", "sub-y", quantity=5)]))
    relay = relay_all(engine)
    assert relay.undecodable == 1
    loop, projector = engine.projector()
    until(lambda: quota_used(engine.database_url).get(("sub-y", "tokens")) == Decimal(7),
          lambda: loop.poll_once(100), timeout=30)
    assert ("sub-x", "tokens") not in quota_used(engine.database_url)
    with psycopg.connect(engine.database_url) as conn:
        rows = parked.listing(conn)
    assert [(r["stage"], r["subscription"], r["version"], r["code"]) for r in rows] == [
        ("quota", "sub-x", 2, "undecodable_event")]
    assert projector.parking.held_back >= 1


def test_a_batch_the_worker_cannot_decode_is_dead_lettered_and_gone_past(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """An lz4 batch while lz4 cannot be read (the codec missing): kafka-python would spin on
    it at every poll; the loop fetches it again twice, then dead-letters it as
    undecodable_batch with its offsets and applies the plain batch after it."""
    from kafka import codec

    subscribe(engine, "sub-z")
    compressed = engine.producer(compression_type="lz4")
    topic = engine.settings.topics.usage
    partition = kafka.KeyPartitions(lambda: compressed.partitions_for(topic))(b"sub-z")
    kafka_ends = kafka.publish(compressed, topic, [usage(f"z{n}", "sub-z", quantity=1)
                                                   for n in range(5)])
    plain = publish(engine, [usage("after", "sub-z", quantity=7)])
    assert partition is not None and plain[partition] == kafka_ends[partition] + 1
    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    loop, _ = engine.ingestion()
    ingest_all(engine, plain, loop)
    assert loop.quarantined == 1 and loop.failures == 3  # two fetches again, then the letter
    assert quota_used_from_store(engine) == {"sub-z": Decimal(7)}
    letters = _letters(engine, 1)
    assert [(x["code"], x["offset"]) for x in letters] == [
        ("undecodable_batch", kafka_ends[partition] - 1)]
    assert f"offsets {kafka_ends[partition] - 5}..{kafka_ends[partition] - 1}" in \
        letters[0]["error"]


def _poll_for(loop: TrackedConsumer, seconds: float) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        loop.poll_once(100)


def test_commits_failing_behind_the_loop_turn_its_health_red(engine: Engine) -> None:
    """Every commit of the write-behind fails (a lock timeout, say): nothing moves, so health
    is red after the stall time; once commits pass again it is green."""
    subscribe(engine, "sub-w")
    loop, ingestor = engine.ingestion()
    assert ingestor.writer is not None
    commit = ingestor.app.commit_write

    def refused(write: Any) -> None:
        raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")

    ingestor.app.commit_write = refused  # type: ignore[method-assign]
    ends = publish(engine, [usage(f"w{n}", "sub-w", quantity=1) for n in range(30)])
    _poll_for(loop, 2.5)
    health = loop.health(stall_seconds=1)
    assert not health["healthy"], health
    assert health["failing_seconds"] > 1 and loop.quarantined == 0
    ingestor.app.commit_write = commit  # type: ignore[method-assign]
    ingest_all(engine, ends, loop)
    _poll_for(loop, 0.5)
    assert loop.health(stall_seconds=1)["healthy"]
    assert quota_used_from_store(engine) == {"sub-w": Decimal(30)}


def test_a_restarted_worker_with_no_new_input_is_healthy(engine: Engine) -> None:
    subscribe(engine, "sub-q")
    ingest_all(engine, publish(engine, [usage(f"q{n}", "sub-q", quantity=1)
                                        for n in range(10)]))
    loop, _ = engine.ingestion()  # a new process: positions read from the store
    _poll_for(loop, 2.0)
    health = loop.health(stall_seconds=1)
    assert health["healthy"] and not health["stalled"], health


def test_record_after_record_failing_alone_stalls_rather_than_dead_letter_everything(
        engine: Engine) -> None:
    """A broken worker fails on every record: five are dead-lettered, then the loop suspects
    itself, stops dead-lettering and retries (health red); fixed, it applies the rest."""
    subscribe(engine, "sub-b")
    ends = publish(engine, [usage(f"b{n}", "sub-b", quantity=1) for n in range(20)])
    loop, _ = engine.ingestion()
    apply_poll = loop.poll_handler
    assert apply_poll is not None
    broken = {"yes": True}

    def handler(batches: Any) -> None:
        if broken["yes"]:
            raise TypeError("a bug in this worker, not in the input")
        apply_poll(batches)

    loop.poll_handler = handler
    _poll_for(loop, 4.0)
    assert loop.quarantined == 5
    assert not loop.health(stall_seconds=1)["healthy"]
    broken["yes"] = False
    ingest_all(engine, ends, loop)
    assert quota_used_from_store(engine) == {"sub-b": Decimal(15)}
    assert len(_letters(engine, 5)) == 5


def test_a_rebuild_from_billing_events_does_not_wait_for_a_parked_subscription(
        engine: Engine) -> None:
    from infra.ops import rebuild
    _an_event_no_one_can_decode(engine, "sub-p", "sub-o")
    relay_all(engine)
    project_all_but_parked = engine.projector()[0]
    until(lambda: quota_used(engine.database_url).get(("sub-o", "tokens")) == Decimal(2),
          lambda: project_all_but_parked.poll_once(100), timeout=30)
    report = rebuild.rebuild(engine.app, engine.database_url, ["quota"], do_swap=False,
                             replay=rebuild.kafka_replay(engine, ["quota"],
                                                         lambda done, total: None, timeout=30))
    assert report.events > 0
