"""Where each worker keeps its input positions: the loop (consumers/loop.py) seeks each
partition to its stored position + 1, and a worker drops redelivered records at or below it.

- In the event store, as tracking rows written in the same transaction as the worker's events:
  the usage and command ingesters (`topic:partition`) and the invoicer
  (`invoicer:topic:partition`): `EventStorePositions`.
- In the read-model database, beside the rows they produce: the projections
  (`projections.quota.store.position`): `ReadModelPositions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Tracking
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.ports import DeadLetterSink
from domain.app.billing_app import BillingApplication
from projections.quota import store as quota_store

if TYPE_CHECKING:
    from consumers.projector import Database


def tracking_prefix(topic: str, worker: str = "") -> str:
    """What the tracking rows of every partition of `topic` begin with."""
    return f"{worker}:{topic}:" if worker else f"{topic}:"


def tracking_name(topic: str, partition: int, worker: str = "") -> str:
    """The tracking row of a partition's position (the ingesters have no worker prefix)."""
    return f"{tracking_prefix(topic, worker)}{partition}"


class EventStorePositions:
    def __init__(self, app: BillingApplication, worker: str = "") -> None:
        self.app = app
        self.worker = worker

    def name(self, topic: str, partition: int) -> str:
        return tracking_name(topic, partition, self.worker)

    def position(self, topic: str, partition: int) -> int | None:
        recorder: Any = self.app.recorder
        found: int | None = recorder.max_tracking_id(self.name(topic, partition))
        return found

    def not_yet_applied(self, tp: TopicPartition, records: Sequence[ConsumerRecord],
                        in_flight: int | None = None,
                        committed: int | None = None) -> list[ConsumerRecord]:
        """Records at or below the stored position were applied already (e.g. by another
        process before a rebalance), and so were those at or below the position of the batch
        still committing (`in_flight`): drop them rather than fail on the tracking row.
        `committed`: the position this process last committed, when known, instead of
        reading the stored one (it can only be behind it; a record applied elsewhere meanwhile
        then fails its batch on the tracking row, and the retry reads the stored position)."""
        stored = committed if committed is not None else self.position(tp.topic, tp.partition)
        floor = max((p for p in (stored, in_flight) if p is not None), default=None)
        return [r for r in records if floor is None or r.offset > floor]


class ReadModelPositions:
    def __init__(self, db: Database, projection: str = quota_store.PROJECTION) -> None:
        self.db = db
        self.projection = projection

    def position(self, topic: str, partition: int) -> int | None:
        return quota_store.position(self.db.conn, topic, partition, self.projection)


def skip_record(app: BillingApplication, dead_letters: DeadLetterSink, position: str,
                record: ConsumerRecord, code: str, message: str) -> bool:
    """Dead-letter a record that cannot be applied and commit the input position `position`
    at its offset with no other effect; False if the position is already there."""
    stored = app.recorder.max_tracking_id(position)  # type: ignore[attr-defined]
    if stored is not None and stored >= record.offset:
        return False
    dead_letters.send(record, code, message)
    dead_letters.flush()
    app.save_batch([], Tracking(position, record.offset))
    return True
