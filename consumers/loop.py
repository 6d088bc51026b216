"""A Kafka consumer loop whose positions live in PostgreSQL, not in the broker.

At start (and at every group reassignment) each partition is sought to its stored position + 1.
Each poll's records are handed to the handler as one micro-batch: per partition, or (with a
`poll_handler`) all partitions of the poll at once, so one transaction carries them all. The
handler commits its effect and the new position(s) in one transaction. If a batch fails (a
version conflict, a database outage), its partitions are sought back to their stored positions
and the batch retried: nothing is skipped and nothing applied twice. A handler that raises
RedoBatch asks for the same, as a normal step rather than a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from infra.kafka import partitions_of

log = logging.getLogger(__name__)


class RedoBatch(Exception):
    """Raised by a handler whose optimistic batch met another writer or a replayed input (a
    unique key refused its write): the loop goes back to the stored positions and the handler
    redoes the batch cautiously. Not a failure: no back-off, logged at info."""


class PositionStore(Protocol):
    def position(self, topic: str, partition: int) -> int | None: ...


Handler = Callable[[TopicPartition, Sequence[ConsumerRecord]], None]
PollHandler = Callable[[Mapping[TopicPartition, Sequence[ConsumerRecord]]], None]


class TrackedConsumer:
    def __init__(self, consumer: KafkaConsumer, topic: str, positions: PositionStore,
                 handler: Handler, *, group: bool = False, name: str = "consumer",
                 poll_handler: PollHandler | None = None,
                 flush: Callable[[], None] | None = None) -> None:
        self.consumer = consumer
        self.topic = topic
        self.positions = positions
        self.handler = handler
        self.poll_handler = poll_handler
        # A handler that commits behind (consumers.write_behind) is flushed when a poll comes
        # back empty, before positions are read back, on a rebalance and at the end.
        self.flush = flush
        self.group = group
        self.name = name
        self.batches = 0
        self.records = 0
        self.failures = 0
        self.redone = 0  # batches redone after a RedoBatch
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
        self.settle()
        for tp in parts:
            stored = self.positions.position(tp.topic, tp.partition)
            # No check against the topic's end offset here: Tansu under-reports it (see
            # infra.kafka.publish), so such a check would refuse healthy positions.
            self.consumer.seek(tp, 0 if stored is None else stored + 1)

    def settle(self) -> bool:
        """Let a batch still committing finish; False (logged) if it failed, in which case
        the caller goes back to the stored positions."""
        if self.flush is None:
            return True
        try:
            self.flush()
            return True
        except RedoBatch as redo:
            self._note_redo(redo)
            return False
        except Exception:
            self.failures += 1
            log.exception("%s: a batch failed to commit; retrying from stored positions",
                          self.name, extra={"worker": self.name})
            return False

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Process one poll; returns how many records were handled."""
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        if not batches and not self.settle():
            self.seek_to_stored(sorted(self.assigned, key=lambda tp: tp.partition))
        if self.poll_handler is not None:
            return self._handle_whole_poll(batches)
        handled = 0
        for tp, records in batches.items():
            try:
                self.handler(tp, records)
            except RedoBatch as redo:
                self._note_redo(redo)
                self.seek_to_stored([tp])
                continue
            except Exception:
                self.failures += 1
                log.exception("%s: batch %s:%s@%s failed; retrying from stored position",
                              self.name, tp.topic, tp.partition, records[0].offset,
                              extra={"worker": self.name, "topic": tp.topic,
                                     "partition": tp.partition, "position": records[0].offset})
                time.sleep(min(0.1 * self.failures, 2.0))
                self.seek_to_stored([tp])
                continue
            self.batches += 1
            handled += len(records)
        self.records += handled
        return handled

    def _handle_whole_poll(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]
                           ) -> int:
        if not batches:
            return 0
        assert self.poll_handler is not None
        try:
            self.poll_handler(batches)
        except RedoBatch as redo:
            self._note_redo(redo)
            self.seek_to_stored(sorted(set(batches) | self.assigned, key=lambda tp: tp.partition))
            return 0
        except Exception:
            self.failures += 1
            log.exception("%s: batch of %d partition(s) failed; retrying from stored positions",
                          self.name, len(batches), extra={"worker": self.name, "positions": {
                              f"{tp.topic}:{tp.partition}": records[0].offset
                              for tp, records in batches.items()}})
            time.sleep(min(0.1 * self.failures, 2.0))
            # The batch that failed may be the one committed behind this poll: go back on
            # every partition, not only this poll's.
            self.seek_to_stored(sorted(set(batches) | self.assigned, key=lambda tp: tp.partition))
            return 0
        handled = sum(len(records) for records in batches.values())
        self.batches += 1
        self.records += handled
        return handled

    def _note_redo(self, redo: RedoBatch) -> None:
        self.redone += 1
        log.info("%s: %s; redoing from the stored positions", self.name, redo,
                 extra={"worker": self.name})

    def run(self, stop: threading.Event, timeout_ms: int = 200) -> None:
        while not stop.is_set():
            self.poll_once(timeout_ms)
        self.settle()

    def close(self) -> None:
        self.settle()
        self.consumer.close(autocommit=False)


class _SeekOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TrackedConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Every batch commits its own position: nothing to hand over once the batch still
        # committing (if any) is done.
        self.owner.settle()
        self.owner.assigned -= set(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self.owner.seek_to_stored(list(assigned))
        self.owner.assigned |= set(assigned)
