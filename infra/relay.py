"""The relay: tails the event store's notification log in commit order and publishes each event
to `billing.events` (key = subscription) as one record batch per partition, waits for the
acknowledgements, then records its position.

At-least-once: a crash after the acknowledgements and before the position is recorded
republishes the same events, which consumers drop by (subscription, version). It never skips:
the eventsourcing recorder takes a table lock per insert, so notification ids become visible in
commit order.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking
from kafka import KafkaProducer
from kafka.errors import KafkaError

from domain.application import BillingApplication
from infra.codec import encode, undecodable_message, wire_message
from infra.kafka import KeyPartitions, RecordBatches

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, app: BillingApplication, producer: KafkaProducer, topic: str,
                 batch_size: int = 5000) -> None:
        self.app = app
        self.producer = producer
        self.topic = topic
        self.batch_size = batch_size
        self.name = f"relay:{topic}"
        self.published = 0
        self.undecodable = 0  # events published as undecodable placeholders
        self.failures = 0
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.progressed_at = time.monotonic()  # last batch published, or nothing to publish
        self._position: int | None = None
        self.partition_of = KeyPartitions(lambda: self.producer.partitions_for(self.topic))
        self.batches = RecordBatches(producer)

    @property
    def recorder(self) -> Any:
        return self.app.recorder

    def position(self) -> int:
        if self._position is None:
            self._position = self.recorder.max_tracking_id(self.name) or 0
        return self._position

    def run_once(self) -> int:
        start = self.position() + 1
        notifications = self.recorder.select_notifications(start=start, limit=self.batch_size)
        if not notifications:
            return 0
        self.partition_of.refresh()
        records = []
        for n in notifications:
            key = n.originator_id.encode()
            partition = self.partition_of(key)
            if partition is None:  # the topic's partitions are not known yet
                raise KafkaError(f"no partitions known for {self.topic}")
            records.append((partition, key, encode(self._message(n))))
        self.batches.publish(self.topic, records)
        last = notifications[-1].id
        try:
            self.recorder.insert_tracking(Tracking(self.name, last))
        except IntegrityError:
            # Another relay recorded a position at or past ours; follow it.
            self._position = None
            log.warning("relay position moved by another process; reloading")
            return len(notifications)
        self._position = last
        self.published += len(notifications)
        return len(notifications)

    def _message(self, notification: Any) -> dict[str, Any]:
        try:
            return wire_message(self.app, notification)
        except Exception as error:  # a stored event is what it is: never stop on one
            self.undecodable += 1
            log.error("relay: event %s (%s v%s) cannot be decoded; published as %s: %s",
                      notification.id, notification.originator_id,
                      notification.originator_version, "Undecodable", error,
                      extra={"worker": self.name, "position": notification.id,
                             "code": "undecodable_event"})
            return undecodable_message(notification, error)

    def lag(self) -> int:
        return max((self.recorder.max_notification_id() or 0) - self.position(), 0)

    def health(self, stall_seconds: float) -> dict[str, Any]:
        """Position and lag in the event store; stalled when events wait and nothing was
        published for `stall_seconds`."""
        idle = time.monotonic() - self.progressed_at
        lag = self.lag()
        failing = 0.0 if self.failing_since is None else time.monotonic() - self.failing_since
        stalled = [f"store->{self.topic}"] if lag and idle > stall_seconds else []
        return {"partitions": {f"store->{self.topic}": {
                    "position": self._position, "lag": lag,
                    "seconds_since_progress": round(idle, 1)}},
                "stalled": stalled, "failing_seconds": round(failing, 1),
                "failures": self.failures, "undecodable": self.undecodable,
                "last_error": self.last_error,
                "healthy": not stalled and failing <= stall_seconds}

    def run(self, stop: threading.Event, idle_sleep: float = 0.01) -> None:
        while not stop.is_set():
            try:
                published = self.run_once()
                self.progressed_at = time.monotonic()
                self.failing_since = None
                if published == 0:
                    stop.wait(idle_sleep)
            except Exception as e:
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"[:500]
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                log.exception("relay batch failed; retrying from the recorded position")
                self._position = None
                stop.wait(1.0)
