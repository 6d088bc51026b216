"""Quota projector: `billing.events` -> the quota read model.

parse -> drop versions already applied -> apply (pure) -> write rows, versions and the partition
position in one transaction. Undecodable messages go to the DLQ.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from consumers.ports import DeadLetterSink
from consumers.wire import UNDECODABLE, decode
from domain.shared.text import printable
from projections import parked
from projections import tracking as projection_versions
from projections.invoices import store as invoices
from projections.quota import store as quota_store
from projections.quota.model import apply_all

log = logging.getLogger(__name__)


class Database:
    """One connection, reopened after a failure (the batch is then retried by the loop)."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema  # read models in another schema (a rebuild's shadow tables)
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            options = f"-c search_path={self.schema},public" if self.schema else ""
            self._conn = psycopg.connect(self.url, options=options)
        return self._conn

    def reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        self.reset()


def decode_events(records: Sequence[ConsumerRecord],
                  dead_letters: DeadLetterSink) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for record in records:
        try:
            message = decode(record.value)
            _ = message["subscription"], int(message["version"]), message["type"]
            messages.append(message)
        except Exception as e:  # any undecodable event message is dead-lettered
            dead_letters.send(record, "malformed_event", f"{type(e).__name__}: {e}")
    dead_letters.flush()
    return messages


def record_positions(cur: psycopg.Cursor[Any],
                     batches: Mapping[TopicPartition, Sequence[ConsumerRecord]],
                     projection: str) -> None:
    by_topic: dict[str, dict[int, int]] = {}
    for tp, records in batches.items():
        by_topic.setdefault(tp.topic, {})[tp.partition] = records[-1].offset
    for topic, positions in by_topic.items():
        quota_store.record_positions(cur, topic, positions, projection)


class Parking:
    """The subscriptions a projection holds back (projections.parked): an event of theirs could
    not be applied, so no later one is either, while every other subscription goes on. Looked
    up in each batch's own transaction, so a parking by another projector (after a rebalance)
    or an operator's release counts at once, and a batch rolled back parks nothing."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.held_back = 0  # events not applied because their subscription is parked

    def hold_back(self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
        """The messages to apply: those of parked subscriptions are dropped, and an event the
        relay could not decode parks its subscription here."""
        names = {sid: printable(sid, 256) for sid in {m["subscription"] for m in messages}}
        held = parked.among(cur, self.stage, list(names.values())) if names else set()
        if not held and not any(m["type"] == UNDECODABLE for m in messages):
            return messages
        kept = []
        for message in messages:
            name = names[message["subscription"]]
            if message["type"] == UNDECODABLE and name not in held:
                parked.park(cur, self.stage, name, int(message["version"]),
                            f"store:{message.get('position')}", "undecodable_event",
                            str(message.get("data", {}).get("error", "")))
                held.add(name)
            if name in held:
                self.held_back += 1
                continue
            kept.append(message)
        return kept

    def park_record(self, db: Database, tp: TopicPartition, record: ConsumerRecord, code: str,
                    error: str, projection: str) -> None:
        """Park the event of a record the loop found cannot be applied, and move the
        projection's position past it, in one transaction."""
        try:
            message = decode(record.value)
            sid, version = str(message["subscription"]), int(message["version"])
        except Exception:  # undecodable records are dead-lettered, never parked
            sid, version = "", -1
        conn = db.conn
        with conn.transaction(), conn.cursor() as cur:
            if sid:
                parked.park(cur, self.stage, sid, version,
                            f"{tp.topic}:{tp.partition}@{record.offset}", code, error)
            record_positions(cur, {tp: [record]}, projection)


def quarantine_event(db: Database, dead_letters: DeadLetterSink, parking: Parking,
                     projection: str, tp: TopicPartition, record: ConsumerRecord, code: str,
                     message: str) -> None:
    """A projection's record the loop found cannot be applied: dead-lettered and parked,
    unless the projection's position is already past it (another projector applied it)."""
    stored = quota_store.position(db.conn, tp.topic, tp.partition, projection)
    if stored is not None and stored >= record.offset:
        return
    dead_letters.send(record, code, message)
    dead_letters.flush()
    parking.park_record(db, tp, record, code, message, projection)


class InvoiceProjector:
    """billing.events -> the invoice read model (issued documents, status, drafts)."""

    def __init__(self, db: Database, dead_letters: DeadLetterSink) -> None:
        self.db = db
        self.dead_letters = dead_letters
        self.parking = Parking(invoices.PROJECTION)
        self.applied = 0

    def handle(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        self.handle_poll({tp: records})

    def handle_poll(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        messages = decode_events([r for records in batches.values() for r in records],
                                 self.dead_letters)
        conn = self.db.conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                applied = invoices.apply_messages(cur, self.parking.hold_back(cur, messages))
                record_positions(cur, batches, invoices.PROJECTION)
        except psycopg.OperationalError:
            self.db.reset()
            raise
        self.applied += applied

    def quarantine(self, tp: TopicPartition, record: ConsumerRecord, code: str,
                   message: str) -> None:
        quarantine_event(self.db, self.dead_letters, self.parking, invoices.PROJECTION, tp,
                         record, code, message)


class QuotaProjector:
    def __init__(self, db: Database, dead_letters: DeadLetterSink,
                 cache: quota_store.StateCache | None = None) -> None:
        self.db = db
        self.dead_letters = dead_letters
        self.parking = Parking(quota_store.PROJECTION)
        self.cache = cache if cache is not None else quota_store.StateCache()
        self.applied = 0
        self.skipped = 0
        self.rereads = 0  # batches redone because a cached state had been moved elsewhere

    def handle(self, tp: TopicPartition, records: Sequence[ConsumerRecord]) -> None:
        self.handle_poll({tp: records})

    def handle_poll(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """All partitions of a poll in one transaction (a subscription's events all come
        through one partition, so their order holds). A batch that met a subscription moved by
        another writer since it was cached is redone once, reading the table (the states of
        the failed attempt have left the cache)."""
        messages = decode_events([r for records in batches.values() for r in records],
                                 self.dead_letters)
        try:
            self._project(batches, messages)
        except projection_versions.VersionConflict as conflict:
            self.rereads += 1
            log.info("quota projector: %s; redoing the batch from the table", conflict)
            self._project(batches, messages)

    def _project(self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]],
                 messages: list[dict[str, Any]]) -> None:
        conn = self.db.conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                messages = self.parking.hold_back(cur, messages)
                states = quota_store.load(cur, sorted({m["subscription"] for m in messages}),
                                          self.cache)
                applied = apply_all(states, messages)
                quota_store.write(cur, states.values())
                record_positions(cur, batches, quota_store.PROJECTION)
        except psycopg.OperationalError:
            self.db.reset()
            raise
        self.cache.keep(states.values())
        self.applied += applied
        self.skipped += len(messages) - applied

    def quarantine(self, tp: TopicPartition, record: ConsumerRecord, code: str,
                   message: str) -> None:
        quarantine_event(self.db, self.dead_letters, self.parking, quota_store.PROJECTION, tp,
                         record, code, message)
