"""Publishing a batch as record batches built directly (infra.kafka.clients.RecordBatches): every
record arrives once, in order per partition, with the end offsets the broker acknowledged."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaError

from infra.kafka import clients as kafka
from infra.wiring.engine import Engine
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration


def test_every_record_arrives_once_in_order_per_partition(engine: Engine) -> None:
    topic = engine.settings.topics.events
    producer = engine.producer()
    partitions = sorted(producer.partitions_for(topic))
    records = [(partitions[n % len(partitions)], f"k{n % 7}".encode(), f"v{n:05d}".encode())
               for n in range(3_000)]
    # Small batches: several rounds of requests, each partition's records split in order.
    batches = kafka.RecordBatches(producer, batch_bytes=4096)
    ends = batches.publish(topic, records[:1_000])
    ends = batches.publish(topic, records[1_000:])
    got = read_topic(engine, topic, len(records))
    assert len(got) == len(records)
    for partition in partitions:
        sent = [(k, v) for p, k, v in records if p == partition]
        arrived = sorted((r for r in got if r.partition == partition), key=lambda r: r.offset)
        assert [(r.key, r.value) for r in arrived] == sent
        assert ends[partition] == arrived[-1].offset + 1


def test_a_partition_the_topic_does_not_have_raises(engine: Engine) -> None:
    batches = kafka.RecordBatches(engine.producer(), timeout=5)
    with pytest.raises(KafkaError):
        batches.publish(engine.settings.topics.events, [(999, b"k", b"v")])
