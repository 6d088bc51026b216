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
from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import TopicError
from kafka import KafkaProducer
from kafka.errors import KafkaError

from consumers.wire import encode, undecodable_message, wire_message
from domain.app.billing_app import BillingApplication
from infra.kafka.clients import KeyPartitions, RecordBatches
from infra.wiring.polling import Progress, run_polling

log = logging.getLogger(__name__)


def relay_position_name(topic: str) -> str:
    """The relay's position (a notification id of the event store) for `topic`."""
    return f"relay:{topic}"


class Relay:
    def __init__(self, app: BillingApplication, producer: KafkaProducer, topic: str,
                 batch_size: int = 5000) -> None:
        self.app = app
        self.producer = producer
        self.topic = topic
        self.batch_size = batch_size
        self.name = relay_position_name(topic)
        self.published = 0
        self.undecodable = 0  # events published as undecodable placeholders
        self.progress = Progress()
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
        except TopicError:
            # A type this version of the engine does not know (a newer writer during a
            # rolling deploy): wait for the upgrade rather than publish a placeholder for good.
            raise
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
        return {**self.progress.health(stall_seconds, f"store->{self.topic}", self._position,
                                       self.lag()), "undecodable": self.undecodable}

    def run(self, stop: threading.Event, idle_sleep: float = 0.01) -> None:
        run_polling(stop, self.run_once, self.progress, self._forget, "relay batch",
                    idle_sleep)

    def _forget(self) -> None:
        self._position = None


def relay_lag(conn: psycopg.Connection[Any], topic: str | None = None) -> int:
    """Events in the store not yet relayed (to `topic`; to the furthest relay if None)."""
    name = "relay:%" if topic is None else f"relay:{topic}"
    row = conn.execute(
        "SELECT coalesce((SELECT max(notification_id) FROM billing_events), 0) - coalesce("
        "(SELECT max(notification_id) FROM billing_tracking WHERE application_name LIKE %s), 0)",
        (name,)).fetchone()
    conn.commit()
    return max(int(row[0]), 0) if row else 0
