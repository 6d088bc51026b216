"""A Kafka consumer loop whose positions live in PostgreSQL, not in the broker.

At start (and at every group reassignment) each partition is sought to its stored position + 1.
Each poll's records for one partition are handed to the handler as one micro-batch; the handler
commits its effect and the new position in one transaction. If a batch fails (a version conflict,
a database outage), the partition is sought back to its stored position and the batch retried:
nothing is skipped and nothing applied twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from infra.kafka import partitions_of

log = logging.getLogger(__name__)


class PositionStore(Protocol):
    def position(self, topic: str, partition: int) -> int | None: ...


Handler = Callable[[TopicPartition, Sequence[ConsumerRecord]], None]


class TrackedConsumer:
    def __init__(self, consumer: KafkaConsumer, topic: str, positions: PositionStore,
                 handler: Handler, *, group: bool = False, name: str = "consumer") -> None:
        self.consumer = consumer
        self.topic = topic
        self.positions = positions
        self.handler = handler
        self.group = group
        self.name = name
        self.batches = 0
        self.records = 0
        self.failures = 0
        self.assigned: set[TopicPartition] = set()
        if group:
            consumer.subscribe([topic], listener=_SeekOnAssign(self))
        else:
            parts = partitions_of(consumer, topic)
            consumer.assign(parts)
            self.assigned = set(parts)
            self.seek_to_stored(parts)

    def seek_to_stored(self, parts: Sequence[TopicPartition]) -> None:
        if not parts:
            return
        for tp in parts:
            stored = self.positions.position(tp.topic, tp.partition)
            # No check against the topic's end offset here: Tansu under-reports it (see
            # infra.kafka.publish), so such a check would refuse healthy positions.
            self.consumer.seek(tp, 0 if stored is None else stored + 1)

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Process one poll; returns how many records were handled."""
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        handled = 0
        for tp, records in batches.items():
            try:
                self.handler(tp, records)
            except Exception:
                self.failures += 1
                log.exception("%s: batch %s:%s@%s failed; retrying from stored position",
                              self.name, tp.topic, tp.partition, records[0].offset)
                time.sleep(min(0.1 * self.failures, 2.0))
                self.seek_to_stored([tp])
                continue
            self.batches += 1
            handled += len(records)
        self.records += handled
        return handled

    def run(self, stop: threading.Event, timeout_ms: int = 200) -> None:
        while not stop.is_set():
            self.poll_once(timeout_ms)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class _SeekOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TrackedConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Every batch commits its own position: nothing to hand over.
        self.owner.assigned -= set(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.owner.seek_to_stored(list(assigned))
        self.owner.assigned |= set(assigned)
