"""Usage ingestion against a real PostgreSQL and a real broker."""

from __future__ import annotations

import base64
from decimal import Decimal

import orjson
import psycopg
import pytest

from infra.wiring.engine import Engine
from tests.integration.helpers import ingest_all as run_ingest
from tests.integration.helpers import (
    publish,
    read_topic,
    store_totals,
    subscribe,
    usage,
)

pytestmark = pytest.mark.integration


def test_usage_is_recorded_once_per_id_whatever_the_duplicates(engine: Engine) -> None:
    subscribe(engine, "sub-a", "sub-b")
    first = [usage(f"u{i}", "sub-a" if i % 2 else "sub-b", quantity=i + 1) for i in range(50)]
    # Same ids again: within the stream right away, and much later (another batch).
    ends = publish(engine, first + first[:10])
    ingestor = run_ingest(engine, ends)
    ends = publish(engine, first[20:30])
    loop, later = engine.ingestion()
    run_ingest(engine, ends, loop)

    expected_a = sum(i + 1 for i in range(50) if i % 2)
    expected_b = sum(i + 1 for i in range(50) if not i % 2)
    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(expected_a),
                                    ("sub-b", "tokens"): Decimal(expected_b)}
    assert ingestor.stats.accepted == 50 and ingestor.stats.duplicates == 10
    assert later.stats.accepted == 0 and later.stats.duplicates == 10
    with psycopg.connect(engine.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM usage_dedup").fetchone() == (50,)


def test_bad_messages_are_dead_lettered_with_codes_and_good_ones_in_the_batch_apply(
        engine: Engine) -> None:
    subscribe(engine, "sub-a")
    bad = {
        "malformed_json": (b"sub-a", b'{"id": "x", '),
        "not_an_object": (b"sub-a", b"[1, 2]"),
        "missing_field": (b"sub-a", b'{"id": "m", "subscription": "sub-a", "metric": "tokens"}'),
        "invalid_quantity": usage("q", "sub-a", quantity=-3),
        "invalid_timestamp": usage("t", "sub-a", at="2026-11-02 10:00"),
        "unknown_subscription": usage("s", "sub-nobody"),
        "unknown_metric": usage("k", "sub-a", metric="gpu-hours"),
        "too_late": usage("late", "sub-a", at="2026-10-01T00:00:00+00:00"),
    }
    good = [usage(f"g{i}", "sub-a", quantity=2) for i in range(6)]
    stream = [good[0], *bad.values(), *good[1:]]  # bad ones in the middle of the batch
    ends = publish(engine, stream)
    ingestor = run_ingest(engine, ends)

    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(12)}
    letters = [orjson.loads(r.value) for r in read_topic(engine, engine.settings.topics.dlq,
                                                         len(bad))]
    assert sorted(letter["code"] for letter in letters) == sorted(bad)
    offsets = {}
    for letter in letters:
        # The original bytes and where they came from travel with the code.
        assert base64.b64decode(letter["value_b64"]) == bad[letter["code"]][1]
        assert letter["topic"] == engine.settings.topics.usage
        assert letter["error"]
        offsets[letter["code"]] = letter["offset"]
    assert len(set(offsets.values())) == len(bad)
    assert ingestor.stats.dead_lettered == len(bad)
    assert ingestor.stats.by_code == {code: 1 for code in bad}


def test_a_redelivered_batch_has_no_second_effect(engine: Engine) -> None:
    subscribe(engine, "sub-a")
    ends = publish(engine, [usage(f"u{i}", "sub-a", quantity=1) for i in range(30)])
    loop, ingestor = engine.ingestion()
    records = []
    while sum(len(r) for r in records) < 30:
        for tp, batch in loop.consumer.poll(timeout_ms=200).items():
            records.append(batch)
            ingestor.handle(tp, batch)
    # The broker delivers the same batches again (e.g. after a rebalance or a client retry).
    for batch in records:
        from kafka import TopicPartition

        ingestor.handle(TopicPartition(batch[0].topic, batch[0].partition), batch)
    ingestor.flush()  # its last batch committed (write-behind)
    # And a new consumer that starts from the stored positions finds nothing left to do.
    loop2, ingestor2 = engine.ingestion()
    for _ in range(5):
        loop2.poll_once(100)
    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(30)}
    assert ingestor.stats.accepted == 30 and ingestor2.stats.messages == 0
    assert ends


def test_a_failed_batch_commits_nothing_and_is_retried_from_the_stored_position(
        engine: Engine) -> None:
    subscribe(engine, "sub-a")
    ends = publish(engine, [usage(f"u{i}", "sub-a", quantity=1) for i in range(40)]
                   + [usage("bad", "sub-a", metric="nope")])
    loop, ingestor = engine.ingestion()
    real_flush = ingestor.dead_letters.flush
    failures = {"left": 2}

    def flaky_flush() -> None:
        # The broker refuses the dead letter twice: the batch must not commit meanwhile.
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("broker unavailable")
        real_flush()

    ingestor.dead_letters.flush = flaky_flush  # type: ignore[method-assign]
    run_ingest(engine, ends, loop)
    assert loop.failures == 2
    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(40)}
    assert ingestor.stats.accepted == 40


def test_late_usage_counts_in_its_closed_cycle_within_the_grace_window_only(
        engine: Engine) -> None:
    subscribe(engine, "sub-a")  # cycle 2026-11-01 .. 2026-12-01, grace 60 minutes
    stream = [
        usage("n1", "sub-a", quantity=5, at="2026-12-01T00:10:00+00:00"),  # rolls the cycle
        usage("l1", "sub-a", quantity=7, at="2026-11-30T23:59:00+00:00"),  # late, in grace
        usage("n2", "sub-a", quantity=1, at="2026-12-01T01:00:00+00:00"),  # closes November
        usage("l2", "sub-a", quantity=9, at="2026-11-30T23:58:00+00:00"),  # too late now
    ]
    ingest = run_ingest  # one batch per message keeps their order of arrival
    for message in stream:
        ingest(engine, publish(engine, [message]))
    events = list(engine.app.events.get("sub-a"))
    names = [type(e).__name__ for e in events]
    assert names == ["Subscribed", "CycleRolled", "UsageRecorded", "LateUsageRecorded",
                     "UsagePeriodClosed", "UsageRecorded"]
    closed = events[4]
    assert closed.usage == {"tokens": "7"}
    assert store_totals(engine) == {("sub-a", "tokens"): Decimal(6)}
    letters = [orjson.loads(r.value) for r in read_topic(engine, engine.settings.topics.dlq, 1)]
    assert [(x["code"], orjson.loads(x["value"])["id"]) for x in letters] == [("too_late", "l2")]
